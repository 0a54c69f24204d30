"""photodupd as users run it: a real process, the built-in model, real photos on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from photodupd import protocol
from photodupd.client import AsyncClient, SyncClient
from photodupd.protocol import ErrorCode
from tests.daemon.daemon_proc import ROOT, DaemonProcess, daemon_env
from tests.photos import hamming, make_photo, write_image, write_jpeg


def short_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pdd-"))
    path.chmod(0o700)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    original = make_photo(11, (1600, 1200))
    other = make_photo(12, (1600, 1200))
    files = {
        "original": write_jpeg(folder / "original.jpg", original, quality=92),
        "resized": write_jpeg(folder / "resized.jpg", original.resize((800, 600)), quality=70),
        "png": write_image(folder / "as-png.png", original.resize((1000, 750)), "PNG"),
        "other": write_jpeg(folder / "other.jpg", other, quality=92),
        "garbage": folder / "garbage.jpg",
        "truncated": folder / "truncated.jpg",
    }
    files["garbage"].write_bytes(os.urandom(5000))
    files["truncated"].write_bytes(files["original"].read_bytes()[:20000])
    return files


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    state = tmp_path_factory.mktemp("daemon")
    proc = DaemonProcess(short_dir() / "rt" / "d.sock", state, "--model", "builtin")
    try:
        proc.wait_hello()
        proc.wait_state("ready")
        yield proc
    finally:
        proc.terminate()


def features(path: Path, items: list[dict]) -> dict:
    with SyncClient(path, timeout=60) as client:
        client.connect()
        return dict(client.request("features", items=items))


def embedding(item: dict) -> np.ndarray:
    return np.frombuffer(item["embedding"], dtype="<f4")


# ------------------------------------------------------------------ features


def test_resized_and_reencoded_copies_are_closer_than_another_photo(
    daemon: DaemonProcess, photos: dict[str, Path]
) -> None:
    names = ["original", "resized", "png", "other"]
    reply = features(daemon.socket_path, [{"path": str(photos[n])} for n in names])
    assert reply["model"]["id"] == "builtin:efficientnet_lite0/imagenet"
    assert reply["model"]["dim"] == 1280
    items = dict(zip(names, reply["items"], strict=True))
    assert all(item["ok"] for item in items.values())
    vectors = {n: embedding(items[n]) for n in names}
    for vector in vectors.values():
        assert vector.shape == (1280,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    cos = {n: float(vectors["original"] @ vectors[n]) for n in names[1:]}
    assert cos["resized"] > cos["other"] + 0.1
    assert cos["png"] > cos["other"] + 0.1
    assert hamming(items["original"]["phash"], items["resized"]["phash"]) <= 6
    assert hamming(items["original"]["phash"], items["other"]["phash"]) > 16
    assert (items["original"]["width"], items["original"]["height"]) == (1600, 1200)
    assert items["png"]["format"] == "PNG" and items["original"]["format"] == "JPEG"


def test_bytes_items_match_path_items(daemon: DaemonProcess, photos: dict[str, Path]) -> None:
    data = photos["original"].read_bytes()
    reply = features(daemon.socket_path, [{"path": str(photos["original"])}, {"data": data}])
    by_path, by_bytes = reply["items"]
    assert by_path["phash"] == by_bytes["phash"]
    assert float(embedding(by_path) @ embedding(by_bytes)) > 0.9999


def test_one_bad_file_is_a_per_item_error(daemon: DaemonProcess, photos: dict[str, Path]) -> None:
    items = [
        {"path": str(photos["original"])},
        {"path": str(photos["original"].parent / "missing.jpg")},
        {"path": str(photos["garbage"])},
        {"path": str(photos["truncated"])},
        {"path": str(photos["original"].parent)},
        {"data": b"not an image at all"},
        {"path": str(photos["other"])},
    ]
    reply = features(daemon.socket_path, items)
    codes = [item["error"]["code"] if not item["ok"] else "ok" for item in reply["items"]]
    assert codes == [
        "ok",
        ErrorCode.NOT_FOUND,
        ErrorCode.NOT_AN_IMAGE,
        ErrorCode.TRUNCATED,
        ErrorCode.UNREADABLE,
        ErrorCode.NOT_AN_IMAGE,
        "ok",
    ]


def test_odd_file_names_work(
    daemon: DaemonProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    odd = os.fsencode(tmp_path) + b'/-caf\xe9 "new\nline".jpg'
    with open(odd, "wb") as fh:
        fh.write(photos["original"].read_bytes())
    reply = features(daemon.socket_path, [{"path": protocol.path_for_wire(os.fsdecode(odd))}])
    assert reply["items"][0]["ok"], reply["items"][0]


def test_concurrent_clients_are_batched_together(
    daemon: DaemonProcess, photos: dict[str, Path]
) -> None:
    with SyncClient(daemon.socket_path) as client:
        client.connect()
        before = client.request("status")

    async def one_client(n: int) -> int:
        async with AsyncClient(daemon.socket_path) as c:
            reply = await c.features(
                [{"path": str(photos["original"])}, {"data": photos["other"].read_bytes()}]
            )
            return sum(1 for item in reply["items"] if item["ok"])

    async def many() -> list[int]:
        return await asyncio.gather(*(one_client(n) for n in range(24)))

    assert asyncio.run(many()) == [2] * 24
    with SyncClient(daemon.socket_path) as client:
        client.connect()
        after = client.request("status")
    batches = after["batches"] - before["batches"]
    images = after["images_served"] - before["images_served"]
    assert images == 48
    assert batches < images / 2, "requests from different clients should share micro-batches"
    assert after["connections_total"] - before["connections_total"] >= 24


def test_status_reports_what_ctl_shows(daemon: DaemonProcess) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "photodup_tui.ctl", "--socket", str(daemon.socket_path), "status"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "builtin:efficientnet_lite0/imagenet" in out.stdout
    assert "[ready]" in out.stdout and f"pid {daemon.proc.pid}" in out.stdout
    js = subprocess.run(
        [
            sys.executable,
            "-m",
            "photodup_tui.ctl",
            "--socket",
            str(daemon.socket_path),
            "status",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    import json

    status = json.loads(js.stdout)
    for key in (
        "pid",
        "uptime",
        "state",
        "model",
        "why",
        "device",
        "threads",
        "queue_depth",
        "in_flight_items",
        "connections",
        "requests",
        "images_served",
        "recent_images_per_s",
        "rss",
    ):
        assert key in status, key
    assert status["rss"] > 50_000_000


def test_ctl_against_a_stopped_daemon_exits_1(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "photodup_tui.ctl",
            "--socket",
            str(tmp_path / "none.sock"),
            "status",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert out.returncode == 1
    assert "not running" in out.stderr


def test_socket_is_private(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(os.lstat(daemon.socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(daemon.socket_path.parent).st_mode) == 0o700


# ------------------------------------------------------------------ lifecycle


def test_second_daemon_over_a_live_socket_refuses(daemon: DaemonProcess, tmp_path: Path) -> None:
    inode = os.lstat(daemon.socket_path).st_ino
    second = DaemonProcess(daemon.socket_path, tmp_path, "--model", "builtin")
    assert second.proc.wait(60) == 1
    assert "already running" in second.output()
    assert os.lstat(daemon.socket_path).st_ino == inode
    with SyncClient(daemon.socket_path) as client:
        assert client.connect()["model"]["id"]


def test_sigterm_drains_in_flight_requests_then_removes_the_socket(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    sock = short_dir() / "rt" / "d.sock"
    proc = DaemonProcess(sock, tmp_path, "--model", "builtin")
    proc.wait_hello()
    proc.wait_state("ready")
    items = [{"path": str(photos["original"])}, {"path": str(photos["other"])}] * 32

    async def request_then_terminate() -> dict:
        async with AsyncClient(sock, retry_for=0) as client:
            pending = asyncio.create_task(client.features(items))
            while True:  # the daemon has the request once it is counted in flight
                status = await client.status()
                if status["in_flight_items"] > 0 or status["images_served"] > 0:
                    break
            proc.proc.send_signal(signal.SIGTERM)
            return await pending

    reply = asyncio.run(request_then_terminate())
    assert [item["ok"] for item in reply["items"]] == [True] * 64
    assert proc.proc.wait(40) == 0
    assert not sock.exists()


def test_stale_socket_after_kill_9_is_replaced(tmp_path: Path) -> None:
    sock = short_dir() / "rt" / "d.sock"
    first = DaemonProcess(sock, tmp_path, "--model", "builtin")
    first.wait_hello()
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)  # left behind by the dead daemon
    second = DaemonProcess(sock, tmp_path, "--model", "builtin")
    try:
        welcome = second.wait_hello()
        assert welcome["protocol"] == protocol.PROTOCOL_VERSION
    finally:
        assert second.terminate() == 0


def test_client_reconnects_after_kill_9_and_finishes_its_work(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    sock = short_dir() / "rt" / "d.sock"
    first = DaemonProcess(sock, tmp_path, "--model", "builtin")
    first.wait_hello()
    first.wait_state("ready")

    async def scenario() -> tuple[dict, int]:
        client = AsyncClient(sock, retry_for=90)
        await client.connect()
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        restarted = DaemonProcess(sock, tmp_path, "--model", "builtin")
        try:
            reply = await client.features([{"path": str(photos["original"])}])
        finally:
            await client.close()
        restarted.terminate()
        return reply, client.reconnects

    reply, reconnects = asyncio.run(scenario())
    assert reply["items"][0]["ok"]
    assert reconnects >= 1


def test_inherited_socket_and_ready_notification(tmp_path: Path, photos: dict[str, Path]) -> None:
    """Socket activation as systemd does it: fd 3, LISTEN_PID, LISTEN_FDS, NOTIFY_SOCKET."""
    folder = short_dir()
    path = folder / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    notify_path = folder / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(90)
    env = daemon_env(tmp_path)
    env["NOTIFY_SOCKET"] = str(notify_path)
    # exec keeps the pid, so LISTEN_PID can name the daemon itself, as systemd does.
    launcher = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid()); os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'photodupd.daemon_cli', '--model', 'builtin',"
        " '--socket', sys.argv[2]])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, str(listener.fileno()), str(folder / "unused" / "x.sock")],
        pass_fds=[listener.fileno()],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    listener.close()  # the daemon holds its own copy now
    try:
        messages = notify.recv(4096).decode()
        assert "READY=1" in messages
        with SyncClient(path, timeout=30) as client:
            client.connect()
            reply = client.request("features", items=[{"path": str(photos["original"])}])
            assert reply["items"][0]["ok"]
            status = client.request("status")
        assert status["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
        assert path.exists(), "an inherited socket belongs to systemd and is never unlinked"
        assert not (folder / "unused").exists(), "the daemon must not bind its own socket"
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


def test_idle_unload_and_reload(tmp_path: Path, photos: dict[str, Path]) -> None:
    sock = short_dir() / "rt" / "d.sock"
    proc = DaemonProcess(sock, tmp_path, "--model", "builtin", "--idle-unload", "1")
    try:
        proc.wait_hello()
        proc.wait_state("ready")
        first = features(sock, [{"path": str(photos["original"])}])["items"][0]
        status = proc.wait_state("unloaded", timeout=30)
        assert status["unloads"] >= 1
        again = features(sock, [{"path": str(photos["original"])}])["items"][0]
        assert float(embedding(first) @ embedding(again)) > 0.9999
        with SyncClient(sock) as client:
            client.connect()
            status = client.request("status")
        assert status["loads"] >= 2 and status["state"] in ("ready", "unloaded")
    finally:
        proc.terminate()


def test_open_clip_model_through_the_daemon(tmp_path: Path, photos: dict[str, Path]) -> None:
    from tests.daemon.tiny_clip import write_tiny_clip

    tiny = write_tiny_clip(tmp_path / "tiny")
    sock = short_dir() / "rt" / "d.sock"
    proc = DaemonProcess(
        sock,
        tmp_path,
        "--model",
        f"clip:{tiny.name}",
        "--weights",
        str(tiny.weights),
        "--model-config",
        str(tiny.config),
    )
    try:
        proc.wait_hello()
        status = proc.wait_state("ready")
        assert status["model"].startswith(f"clip:{tiny.name}/file-")
        reply = features(sock, [{"path": str(photos["original"])}, {"path": str(photos["other"])}])
        assert reply["model"]["id"] == status["model"]
        vectors = [embedding(item) for item in reply["items"]]
        assert vectors[0].shape == (reply["model"]["dim"],)
        assert abs(float(np.linalg.norm(vectors[0])) - 1) < 1e-4
    finally:
        proc.terminate()

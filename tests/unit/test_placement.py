"""Where the model runs, without ssh or a model: the ssh command line and its errors, the
device choice, the new config keys, the pixels item and its codec, the bridge's relay, the
auto mode's steps down, and the status line's word on a model that is not the local one."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from photodup_tui import bridge, cli, scan_session
from photodup_tui.daemon_supervisor import DaemonSupervisor, elsewhere
from photodup_tui.engine.daemon_control import DaemonStatus
from photodup_tui.engine.placement import Placement, load_placement
from photodup_tui.scan_session import NO_MODEL, open_feature_source
from photodupd import config, devices, pixelcodec, protocol, remote
from photodupd.imagebase import ImageError
from photodupd.imaging import PreprocessSpec
from photodupd.protocol import ErrorCode, FeatureItem, ItemError, ProtocolError
from photodupd.transport import Ended
from tests.engine.sources import ThumbnailModel
from tests.unit.test_daemon_supervisor import Host

# ------------------------------------------------------------------------------ ssh


def test_the_ssh_command_line_puts_the_users_options_first_and_the_remote_command_last() -> None:
    argv = remote.ssh_argv(
        "nas",
        "ssh -F ~/.ssh/other_config -o 'ProxyJump=gate way'",
        "~/venv/bin/photodup-ctl bridge",
        ("--no-start",),
    )
    home = os.path.expanduser("~")
    assert argv[:5] == ["ssh", "-F", f"{home}/.ssh/other_config", "-o", "ProxyJump=gate way"]
    assert "BatchMode=yes" in argv  # never a password prompt in the TUI's terminal
    assert argv.index("BatchMode=yes") > 4  # after the user's own: ssh keeps the first value
    # One word for the remote shell, which expands its ~ there, not here.
    assert argv[-2:] == ["nas", "~/venv/bin/photodup-ctl bridge --no-start"]


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "", "two words"])
def test_a_host_that_ssh_would_read_as_an_option_is_refused(host: str) -> None:
    with pytest.raises(remote.BadHost):
        remote.ssh_argv(host)


# What OpenSSH 9 and a remote bash really print.
@pytest.mark.parametrize(
    ("code", "stderr", "expected", "permanent"),
    [
        (
            255,
            "ssh: Could not resolve hostname nas: Name or service not known\r\n",
            "cannot reach nas: ssh: Could not resolve hostname nas: Name or service not known",
            False,
        ),
        (
            255,
            "root@nas: Permission denied (publickey,password).\r\n",
            "nas refused the login (root@nas: Permission denied (publickey,password))",
            True,
        ),
        (255, "Host key verification failed.\r\n", "nas's host key is unknown", True),
        (
            127,
            "bash: line 1: photodup-ctl: command not found\n",
            "photodup is not installed on nas",
            True,
        ),
        (
            2,
            "photodup-ctl: error: argument command: invalid choice: 'bridge' (choose from ...)\n",
            "photodup on nas is too old for remote scans",
            True,
        ),
        (
            1,
            "photodup-ctl bridge: photodupd did not start there: photodupd exited with status 3.\n",
            "photodupd on nas: photodupd did not start there",
            True,
        ),
    ],
)
def test_what_ssh_says_becomes_one_line(
    code: int, stderr: str, expected: str, permanent: bool
) -> None:
    failure = remote.explain("nas", "ssh", "photodup-ctl bridge", Ended(code, stderr))
    assert expected in str(failure)
    assert "\n" not in str(failure)
    assert failure.permanent is permanent


def test_text_where_a_frame_was_due_is_blamed_on_a_login_script() -> None:
    ended = Ended(None, "", garbage=b"Welc")
    failure = remote.explain("nas", "ssh", "photodup-ctl bridge", ended)
    assert "answered with text, not photodup's protocol ('Welc'" in str(failure)


def test_no_ssh_at_all() -> None:
    endpoint = remote.ssh_endpoint("nas", "/nonexistent/ssh")
    with pytest.raises(OSError, match="/nonexistent/ssh: command not found") as failure:
        endpoint.open(5.0)
    assert failure.value.permanent  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ devices

NOTHING = devices.Available()
GPU = devices.Available(cuda=True, cuda_name="NVIDIA RTX 4090")
MAC = devices.Available(mps=True)


@pytest.mark.parametrize(
    ("requested", "available", "device", "why", "batch"),
    [
        ("auto", NOTHING, "cpu", "auto: no CUDA or MPS device: the CPU", 32),
        ("auto", GPU, "cuda", "auto: CUDA (NVIDIA RTX 4090) found", 64),
        ("auto", MAC, "mps", "auto: Apple GPU (Metal) found", 32),
        ("cpu", GPU, "cpu", "device = cpu", 32),
        ("cuda", NOTHING, "cpu", "device = cuda, but torch sees no CUDA device: the CPU", 32),
        ("mps", NOTHING, "cpu", "device = mps, but torch sees no MPS device: the CPU", 32),
        ("mps", MAC, "mps", "device = mps: Apple GPU (Metal)", 32),
    ],
)
def test_the_device_and_why(
    requested: str, available: devices.Available, device: str, why: str, batch: int
) -> None:
    plan = devices.choose(requested, available, batch_size=32)
    assert (plan.device, plan.why, plan.batch_size) == (device, why, batch)
    assert plan.half_compute is (device == "cuda")


def test_a_larger_batch_asked_for_stays_on_cuda() -> None:
    assert devices.choose("auto", GPU, batch_size=128).batch_size == 128


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('mode = "cloud"', "daemon.mode must be one of auto, remote, local, inline"),
        ('device = "tpu"', "daemon.device must be one of auto, cpu, cuda, mps"),
        ('upload = "all"', "daemon.upload must be one of reduced, original"),
        ('remote = "-oProxyCommand=x"', "daemon.remote must be a host name"),
        ('ray = "cluster"', "daemon.ray must be local, auto or ray://HOST:PORT"),
    ],
)
def test_the_new_daemon_keys_are_checked(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[daemon]\n{line}\n")
    with pytest.raises(config.ConfigError, match=message):
        config.load(path)


def test_remote_implies_remote_mode_and_mode_remote_needs_a_host(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\nssh_command = "ssh -p 2222"\nupload = "original"\n')
    chosen = load_placement(path, remote="nas")
    assert (chosen.mode, chosen.remote, chosen.ssh_command, chosen.upload) == (
        "remote",
        "nas",
        "ssh -p 2222",
        "original",
    )
    assert load_placement(path, mode="auto", remote="nas").order() == ("remote", "local", "inline")
    assert load_placement(path).order() == ("local", "inline")
    with pytest.raises(config.ConfigError, match="needs a host"):
        load_placement(path, mode="remote")


def test_ray_serves_alone_and_the_flag_overrides_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\nray = "ray://head:10001"\nremote = "nas"\n')
    assert config.load(path).ray == "ray://head:10001"
    configured = load_placement(path)
    assert configured.order() == ("ray",)  # no step down to ssh or this computer's model
    assert configured.describe("ray") == "the Ray cluster (ray://head:10001)"
    # The TUI neither starts nor watches this computer's photodupd for it.
    assert elsewhere(configured) == (
        "model on the Ray cluster (ray://head:10001): it loads when a scan starts"
    )
    assert load_placement(path, ray="local").ray == "local"
    assert load_placement(path, ray="").order() == ("remote", "local", "inline")
    with pytest.raises(config.ConfigError, match="ray must be local, auto"):
        load_placement(path, ray="head:10001")


def test_scan_with_ray_but_without_the_extra_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    (tmp_path / "lib").mkdir()
    assert cli.main(["scan", str(tmp_path / "lib"), "--ray", "local"]) == cli.EXIT_USAGE
    assert "pip install 'photodup[ray]'" in capsys.readouterr().err


def test_scan_mode_remote_without_a_host_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lib").mkdir()
    assert cli.main(["scan", str(tmp_path / "lib"), "--mode", "remote"]) == cli.EXIT_USAGE
    assert "needs a host" in capsys.readouterr().err


# ------------------------------------------------------------------------------ pixels


def test_pixels_travel_exactly() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert np.array_equal(pixelcodec.unpack(pixelcodec.pack(pixels), 224), pixels)


def test_pixels_of_the_wrong_size_or_a_bomb_are_refused() -> None:
    pixels = np.zeros((224, 224, 3), np.uint8)
    with pytest.raises(ImageError, match="not 256x256"):
        pixelcodec.unpack(pixelcodec.pack(pixels), 256)
    bomb = zlib.compress(bytes(200 * 1024 * 1024), 9)  # 200 MB of zeros in ~200 KB
    with pytest.raises(ImageError, match="not 224x224"):
        pixelcodec.unpack(bomb, 224)  # inflates one byte past 150 KB, then stops
    with pytest.raises(ImageError, match="do not inflate"):
        pixelcodec.unpack(b"not zlib", 224)
    with pytest.raises(ImageError, match="not 224x224"):
        pixelcodec.unpack(pixelcodec.pack(pixels) + b"more", 224)  # a smuggled tail
    item = FeatureItem(pixels=pixelcodec.pack(pixels), side=224)
    with pytest.raises(ImageError, match="do not fit the model input 256x256"):
        pixelcodec.decoded_from_item(item, PreprocessSpec(256, 292))


def test_a_pixels_item_is_parsed_like_the_others() -> None:
    good = {"pixels": b"x", "side": 224}
    [item] = protocol.parse_feature_items({"items": [good]})
    assert item == FeatureItem(pixels=b"x", side=224)
    [empty] = protocol.parse_feature_items({"items": [{"pixels": b"", "side": 224}]})
    assert isinstance(empty, ItemError) and empty.code is ErrorCode.NOT_AN_IMAGE
    for bad in (
        {"pixels": b"x", "side": True},
        {"pixels": b"x", "side": 5000},
        {"pixels": "text", "side": 224},
        {"pixels": b"x", "side": 224, "path": "/a.jpg"},
    ):
        with pytest.raises(ProtocolError):
            protocol.parse_feature_items({"items": [bad]})


# ------------------------------------------------------------------------------ bridge


def _run_bridge(to_bridge: bytes, expect_back: int) -> tuple[int, bytes, bytes]:
    """The bridge's relay between a client (pipes as its stdin and stdout) and a daemon that
    echoes each frame; the client closes its end once ``expect_back`` bytes came back.
    Returns (exit status, what the client got, what the daemon got)."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    ours, daemons = socket.socketpair()
    received, got = bytearray(), bytearray()
    back = threading.Event()

    def daemon() -> None:
        with daemons, contextlib.suppress(OSError):
            while len(header := daemons.recv(4, socket.MSG_WAITALL)) == 4:
                body = daemons.recv(protocol.HEADER.unpack(header)[0], socket.MSG_WAITALL)
                received.extend(header + body)
                daemons.sendall(header + body)

    def client_writes() -> None:
        view = memoryview(to_bridge)
        with contextlib.suppress(OSError):
            while view:
                view = view[os.write(stdin_w, view) :]
        back.wait(10)
        os.close(stdin_w)

    def client_reads() -> None:
        while chunk := os.read(stdout_r, 1 << 16):
            got.extend(chunk)
            if len(got) >= expect_back:
                back.set()
        back.set()

    threads = [
        threading.Thread(target=f, daemon=True) for f in (daemon, client_writes, client_reads)
    ]
    for thread in threads:
        thread.start()
    if expect_back == 0:
        back.set()
    status = bridge.relay(ours, stdin_r, stdout_w)
    os.close(stdout_w)
    for thread in threads:
        thread.join(10)
    for fd in (stdin_r, stdout_r):
        os.close(fd)
    ours.close()
    return status, bytes(got), bytes(received)


def test_the_bridge_relays_whole_frames_both_ways() -> None:
    small = protocol.pack(protocol.request(1, "ping"))
    big = protocol.pack({"id": 2, "op": "features", "items": [{"data": bytes(3 * 1024 * 1024)}]})
    status, got, received = _run_bridge(small + big, len(small + big))
    assert status == bridge.EXIT_OK
    assert received == small + big  # more than one CHUNK, copied in pieces, intact
    assert got == small + big


@pytest.mark.parametrize(
    "header", [protocol.HEADER.pack(0), protocol.HEADER.pack(protocol.MAX_FRAME + 1)]
)
def test_a_bad_length_from_the_client_ends_the_bridge_before_the_daemon_sees_it(
    header: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    good = protocol.pack(protocol.request(1, "ping"))
    status, _got, received = _run_bridge(good + header + b"junk", 0)
    assert status == bridge.EXIT_FAILED
    assert received == good  # the good frame went through; nothing of the bad one did
    assert "photodup-ctl bridge: bad frame from the client" in capsys.readouterr().err


# ------------------------------------------------------------------------------ auto


def test_auto_steps_down_once_each_with_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def remote_down(*args: object) -> object:
        raise OSError("cannot reach nas: ssh: connect to host nas port 22: No route to host")

    def local_down(*args: object, **kwargs: object) -> object:
        raise OSError("photodupd exited with status 3")

    def inline_up(*args: object) -> ThumbnailModel:
        return ThumbnailModel()

    monkeypatch.setattr(scan_session, "open_remote", remote_down)
    monkeypatch.setattr(scan_session, "DaemonFeatureSource", local_down)
    monkeypatch.setattr(scan_session, "open_inline", inline_up)
    said: list[str] = []
    opened = open_feature_source(
        True, None, said.append, threading.Event(), placement=Placement(remote="nas")
    )
    assert opened.mode == "inline" and isinstance(opened.source, ThumbnailModel)
    assert opened.steps == [
        "the photodupd on nas (remote) is unavailable (cannot reach nas: ssh: connect to host "
        "nas port 22: No route to host); trying the local photodupd",
        "the local photodupd is unavailable (photodupd exited with status 3); trying the model "
        "inside this scan (inline)",
    ]
    assert said == opened.steps  # said once each, as they happened
    assert opened.fallback_reason is None


def test_auto_with_nothing_left_scans_without_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: object, **kwargs: object) -> object:
        raise OSError("nope")

    monkeypatch.setattr(scan_session, "DaemonFeatureSource", down)
    monkeypatch.setattr(scan_session, "open_inline", down)
    monkeypatch.setattr(scan_session, "LocalFeatureSource", ThumbnailModel)
    opened = open_feature_source(True, None, lambda _line: None, threading.Event())
    assert opened.mode == NO_MODEL
    assert len(opened.steps) == 1  # local -> inline; the last step is the fallback's reason
    assert opened.daemon_error == "nope"


# ------------------------------------------------------------------------------ status line


def test_a_model_elsewhere_is_neither_started_nor_watched_here(tmp_path: Path) -> None:
    host = Host()
    note = elsewhere(Placement(mode="remote", remote="nas"))
    assert note is not None and "photodupd on nas (remote)" in note
    daemon = DaemonSupervisor(host, tmp_path / "nobody.sock", use_model=True, elsewhere=note)
    daemon.begin(start=True)
    assert host.queued() == []  # no start, no polling of the local socket
    assert host.daemon_status == DaemonStatus("elsewhere", detail=note)
    daemon.scan_chose("remote", "builtin:x", "photodupd on nas (remote, cuda)")
    assert host.daemon_status == DaemonStatus(
        "served", model="builtin:x", detail="photodupd on nas (remote, cuda)"
    )
    assert elsewhere(Placement()) is None  # auto without a remote: the local daemon, as before

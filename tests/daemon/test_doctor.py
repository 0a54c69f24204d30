"""``photodup-ctl doctor``: on a healthy setup every check passes; each part, broken on its
own, makes its row FAIL with the fix.

The daemons here are real photodupd processes on private sockets (tests/daemon/
daemon_proc.py); config, cache, state, runtime dir and trash are private (conftest.py).
What the trash check did is re-read from the disk, never taken from the doctor's word.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from photodup_tui.engine import cache, doctor
from photodup_tui.engine.doctor import Check, Verdict
from photodup_tui.engine.safedelete import interrupted_batches
from photodupd import probe, protocol
from photodupd.client import SyncClient
from tests.daemon.daemon_proc import ROOT, DaemonProcess, daemon_env
from tests.safety.helpers import assert_accounted_for, snapshot, trash_entries, write
from tests.safety.test_kill import make_tree, run_child

pytestmark = pytest.mark.timeout(300)

#: A systemctl no PATH has: the service row is a SKIP whatever this machine runs.
NO_SYSTEMCTL = "photodup-test-no-systemctl"

CRASHING_DAEMON = """
import sys
from photodupd import daemon_cli, decodepool

class CrashOnGif(decodepool.DecoderPool):
    def __init__(self, workers, timeout, memory_mb, decode_fn=None):
        super().__init__(workers, timeout, memory_mb, decode_fn="tests.daemon.faulty_decoders:crash_on_gif")

decodepool.DecoderPool = CrashOnGif
sys.exit(daemon_cli.main(sys.argv[1:]))
"""


class CrashingDaemon(DaemonProcess):
    """The production photodupd whose decoders crash (SIGSEGV) on GIFs."""

    def __init__(self, socket_path: Path, state: Path) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.socket_path = socket_path
        self.log = state / "photodupd.log"
        self.args = [
            sys.executable,
            "-c",
            CRASHING_DAEMON,
            "--socket",
            str(socket_path),
            "--model",
            "builtin",
            "--threads",
            "2",
            "--decode-workers",
            "2",
        ]
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                self.args, env=daemon_env(state), stdout=sink, stderr=sink, cwd=ROOT
            )


#: Folders short_dir() made (sockets need short paths, so not under tmp_path).
_MADE: list[Path] = []


def short_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pdx-"))
    path.chmod(0o700)
    _MADE.append(path)
    return path


@pytest.fixture(autouse=True, scope="module")
def _remove_short_dirs() -> Iterator[None]:
    yield
    while _MADE:
        shutil.rmtree(_MADE.pop(), ignore_errors=True)


def run_doctor(**options: object) -> list[Check]:
    options.setdefault("systemctl", NO_SYSTEMCTL)
    return doctor.run(doctor.Options(**options))  # type: ignore[arg-type]


def rows(checks: Sequence[Check], name: str) -> list[Check]:
    found = [check for check in checks if check.name == name]
    assert found, f"no {name!r} row in {[c.name for c in checks]}"
    return found


def row(checks: Sequence[Check], name: str) -> Check:
    [found] = rows(checks, name)
    return found


@pytest.fixture(scope="module")
def builtin_daemon() -> Iterator[DaemonProcess]:
    folder = short_dir()
    proc = DaemonProcess(folder / "rt" / "d.sock", folder / "state", "--model", "builtin")
    try:
        proc.wait_hello()
        proc.wait_state("ready")
        yield proc
    finally:
        proc.terminate()


# --------------------------------------------------------------------------- all good


def test_a_healthy_setup_passes_every_check_and_touches_nothing(
    builtin_daemon: DaemonProcess, tmp_path: Path
) -> None:
    """The command line, as a user runs it: exit 0, every row OK (or SKIP where nothing is
    configured), and the folder and the trash exactly as before."""
    photos = tmp_path / "photos"
    write(photos / "IMG_0001.JPG", b"a photo of the user's" * 100)
    before = snapshot(photos)
    env = {**os.environ, "PATH": str(tmp_path / "empty-path"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "photodup_tui.ctl",
            "--socket",
            str(builtin_daemon.socket_path),
            "doctor",
            "--json",
            str(photos),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["ok"] is True
    verdicts = {check["name"]: check["verdict"] for check in report["checks"]}
    for name in (
        "config",
        "runtime dir",
        "socket",
        "cache dir",
        "state dir",
        "daemon",
        "protocol",
        "model",
        "model probe",
        "model class",
        "decoders",
        "RAW",
        "bomb",
        "trash",
        "cache db",
        "journal",
    ):
        assert verdicts[name] == "ok", (name, report)
    assert verdicts["systemd units"] == "skip" and verdicts["remote"] == "skip"
    decoders = next(c for c in report["checks"] if c["name"] == "decoders")["detail"]
    for label in ("JPEG", "PNG", "WebP", "GIF", "TIFF", "BMP", "HEIC", "AVIF"):
        assert label in decoders
    # Nothing of the user's touched: the folder as it was, the trash empty, no scratch left.
    assert snapshot(photos) == before
    assert sorted(os.listdir(photos)) == ["IMG_0001.JPG"]
    assert trash_entries(Path(os.environ["XDG_DATA_HOME"]) / "Trash") == []


def test_the_table_names_every_check_and_exits_1_on_a_failure(tmp_path: Path) -> None:
    """The human form: a header, one row per check, a ``fix:`` line under each FAIL."""
    env = {**os.environ, "PATH": str(tmp_path / "empty-path"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "photodup_tui.ctl",
            "--socket",
            str(short_dir() / "nobody.sock"),
            "doctor",
            "--no-start",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CHECK")
    daemon_row = next(i for i, line in enumerate(lines) if line.startswith("daemon "))
    assert " FAIL " in lines[daemon_row]
    assert lines[daemon_row + 1].strip().startswith("fix: start it: photodupd")
    assert lines[-1].startswith("something is broken")


# --------------------------------------------------------------------------- one break each


def test_a_0755_runtime_dir_fails_naming_the_path_and_the_chmod(isolated_dirs: Path) -> None:
    isolated_dirs.mkdir(parents=True)
    isolated_dirs.chmod(0o755)
    socket_path = isolated_dirs / "photodupd.sock"
    check = row(run_doctor(socket=socket_path, start=False), "runtime dir")
    assert check.verdict is Verdict.FAIL
    assert str(isolated_dirs) in check.detail and "0755" in check.detail
    assert check.fix == f"chmod 700 {isolated_dirs}"

    isolated_dirs.chmod(0o700)  # the fix, applied
    assert row(run_doctor(socket=socket_path, start=False), "runtime dir").verdict is Verdict.OK


def test_a_socket_others_can_open_fails_with_its_chmod(isolated_dirs: Path) -> None:
    import socket

    isolated_dirs.mkdir(parents=True, mode=0o700)
    socket_path = isolated_dirs / "photodupd.sock"
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(socket_path))
        socket_path.chmod(0o666)
        check = row(run_doctor(socket=socket_path, start=False), "socket")
        assert check.verdict is Verdict.FAIL and "0666" in check.detail
        assert check.fix == f"chmod 600 {socket_path}"
    finally:
        listener.close()


def test_a_cache_dir_that_cannot_be_written_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file where the cache folder should be: nobody can write there, root included."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("in the way")
    monkeypatch.setenv("PHOTODUP_CACHE_DIR", str(blocker))
    checks = run_doctor(socket=short_dir() / "d.sock", start=False)
    check = row(checks, "cache dir")
    assert check.verdict is Verdict.FAIL and str(blocker) in check.detail
    assert check.fix is not None and f"move the file {blocker} away" in check.fix
    assert row(checks, "state dir").verdict is Verdict.OK  # the one break, the one row
    assert blocker.read_text() == "in the way"


@pytest.mark.needs_nonroot
def test_a_read_only_cache_dir_fails_with_its_chmod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("PHOTODUP_CACHE_DIR", str(folder))
    try:
        check = row(run_doctor(socket=short_dir() / "d.sock", start=False), "cache dir")
    finally:
        folder.chmod(0o700)
    assert check.verdict is Verdict.FAIL
    assert check.fix is not None and check.fix.startswith(f"chmod u+rwx {folder}")


def test_a_corrupt_cache_database_fails_integrity_check(tmp_path: Path) -> None:
    path = cache.default_path()
    cache.Cache(path).close()  # the real cache, with its schema
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("CREATE TABLE filler (a INTEGER PRIMARY KEY, b TEXT)")
    db.execute("CREATE INDEX filler_b ON filler(b)")
    db.executemany("INSERT INTO filler(b) VALUES (?)", [(f"row {i:06d}",) for i in range(3000)])
    db.commit()
    db.close()
    assert row(run_doctor(socket=short_dir() / "d.sock", start=False), "cache db").verdict is (
        Verdict.OK
    )

    page = 4096
    with path.open("r+b") as handle:  # one page in the middle overwritten: a torn write
        handle.seek(page * (path.stat().st_size // page // 2))
        handle.write(b"\xff" * page)
    check = row(run_doctor(socket=short_dir() / "d.sock", start=False), "cache db")
    assert check.verdict is Verdict.FAIL and str(path) in check.detail
    assert check.fix == (f"move it aside; the next scan builds a new one: mv {path} {path}.corrupt")


def test_an_interrupted_batch_fails_until_it_is_settled(tmp_path: Path) -> None:
    """A real batch killed by SIGKILL right after its first file went to the trash."""
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    paths = make_tree(tmp_path / "p")
    before = snapshot(tmp_path / "p")
    child = run_child({"do": "batch", "paths": paths}, "kill@after_rename")
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    [batch] = interrupted_batches()

    check = row(run_doctor(socket=short_dir() / "d.sock", start=False), "journal")
    assert check.verdict is Verdict.FAIL and batch.batch_id in check.detail
    assert check.fix is not None
    assert f"photodup undo {batch.batch_id}" in check.fix and "--settle" in check.fix

    settled = row(run_doctor(socket=short_dir() / "d.sock", start=False, settle=True), "journal")
    assert settled.verdict is Verdict.OK and "settled 1" in settled.detail
    assert interrupted_batches() == []
    _in_place, trashed = assert_accounted_for(before, [trash])  # strict: complete entries
    assert len(trashed) == 1  # settling kept the file in the trash


def test_a_missing_weights_file_fails_the_model_check(tmp_path: Path) -> None:
    folder = short_dir()
    missing = tmp_path / "vit-b-32.safetensors"
    proc = DaemonProcess(
        folder / "rt" / "d.sock",
        folder / "state",
        "--model",
        "clip:ViT-B-32",
        "--weights",
        str(missing),
    )
    try:
        proc.wait_hello()
        proc.wait_state("failed")
        checks = run_doctor(socket=proc.socket_path, start=False)
    finally:
        proc.terminate()
    assert row(checks, "daemon").verdict is Verdict.OK
    check = row(checks, "model")
    assert check.verdict is Verdict.FAIL
    assert str(missing) in check.detail and "does not exist" in check.detail
    assert check.fix is not None and "photodup-ctl models use builtin" in check.fix
    assert row(checks, "model probe").verdict is Verdict.SKIP
    assert row(checks, "decoders").verdict is Verdict.SKIP


def test_a_decoder_that_crashes_fails_the_decoder_check() -> None:
    folder = short_dir()
    proc = CrashingDaemon(folder / "rt" / "d.sock", folder / "state")
    try:
        proc.wait_hello()
        proc.wait_state("ready")
        checks = run_doctor(socket=proc.socket_path, start=False)
    finally:
        proc.terminate()
    check = row(checks, "decoders")
    assert check.verdict is Verdict.FAIL
    assert "GIF: decoder_crashed" in check.detail
    assert "decoded: JPEG, PNG, WebP, TIFF, BMP, HEIC" in check.detail
    assert check.fix is not None and check.fix.startswith("the decoder process crashed")
    assert row(checks, "model probe").verdict is Verdict.OK  # JPEG still decodes


def test_a_clip_model_is_checked_against_its_recorded_probe_values(tmp_path: Path) -> None:
    """CLIP weights cannot ship: once trusted, ``--record-probe`` stores the model's probe
    embedding, and later runs fail when the model's answer moves away from it."""
    from tests.daemon.tiny_clip import write_tiny_clip

    tiny = write_tiny_clip(tmp_path / "tiny")
    folder = short_dir()
    proc = DaemonProcess(
        folder / "rt" / "d.sock",
        folder / "state",
        "--model",
        f"clip:{tiny.name}",
        "--weights",
        str(tiny.weights),
        "--model-config",
        str(tiny.config),
    )
    try:
        proc.wait_hello()
        model_id = proc.wait_state("ready")["model"]
        unknown = run_doctor(socket=proc.socket_path, start=False)
        recorded = run_doctor(socket=proc.socket_path, start=False, record_probe=True)
        again = run_doctor(socket=proc.socket_path, start=False)
        stored = json.loads(probe.recorded_values_file().read_text())
        vector = probe.decode_f16(stored["models"][model_id]["embedding_f16"])
        stored["models"][model_id]["embedding_f16"] = probe.encode_f16(reversed(vector))
        probe.recorded_values_file().write_text(json.dumps(stored))
        moved = run_doctor(socket=proc.socket_path, start=False)
    finally:
        proc.terminate()
    first = row(unknown, "model probe")
    assert first.verdict is Verdict.WARN
    assert first.fix is not None and "photodup-ctl doctor --record-probe" in first.fix
    assert not [c for c in unknown if c.name == "model class"]  # no classifier head to ask
    assert row(recorded, "model probe").verdict is Verdict.OK
    assert model_id in stored["models"]
    assert row(again, "model probe").verdict is Verdict.OK
    check = row(moved, "model probe")
    assert check.verdict is Verdict.FAIL and "other weights" in check.detail
    assert check.fix is not None and "models pull" in check.fix


def test_the_doctor_starts_a_daemon_that_is_not_running(isolated_dirs: Path) -> None:
    """Nobody answers: the doctor starts photodupd as photodup would, and says how long."""
    socket_path = isolated_dirs / "photodupd.sock"
    checks = run_doctor(socket=socket_path)
    try:
        check = row(checks, "daemon")
        assert check.verdict is Verdict.OK and "started it in" in check.detail
        assert row(checks, "model").verdict is Verdict.OK
    finally:
        with SyncClient(socket_path, timeout=10) as client:
            client.connect()
            pid = client.call(protocol.STATUS)["pid"]
            client.call(protocol.SHUTDOWN)
        _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # our child (the doctor spawned it): reap it, or it lingers as a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not ours (started through systemd): just gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"photodupd {pid} did not stop")


def test_a_check_that_breaks_mid_way_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon that dies, a file that vanishes: that row FAILs, the next checks still run."""

    def _check_cache_db(context: object) -> None:  # the row is named after the step
        raise FileNotFoundError(2, "No such file or directory", "cache.sqlite")

    monkeypatch.setattr(doctor, "_check_cache_db", _check_cache_db)
    checks = run_doctor(socket=short_dir() / "d.sock", start=False)
    check = row(checks, "cache db")
    assert check.verdict is Verdict.FAIL and "FileNotFoundError" in check.detail
    assert row(checks, "journal").verdict is Verdict.OK


def test_the_remote_check_uses_the_configured_host_and_says_why_it_fails(
    isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[daemon] remote`` is checked through the same ssh bridge a remote scan uses; an
    unreachable host FAILs with ssh's reason and the command to try by hand."""
    config_dir = isolated_dirs / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PHOTODUP_CONFIG_DIR", str(config_dir))
    seen: list[Check] = []

    class Context:
        def table(self, check: Check) -> None:
            seen.append(check)

    doctor._check_remote(Context())  # type: ignore[arg-type]
    assert [(c.name, c.verdict) for c in seen] == [("remote", doctor.Verdict.SKIP)]
    (config_dir / "config.toml").write_text(
        '[daemon]\nremote = "nohost.invalid"\nssh_command = "ssh -o ConnectTimeout=3"\n'
    )
    seen.clear()
    doctor._check_remote(Context())  # type: ignore[arg-type]
    (check,) = seen
    assert check.verdict is doctor.Verdict.FAIL
    assert "nohost.invalid" in check.detail and check.fix
    assert "ssh -o ConnectTimeout=3" in check.fix and "photodup-ctl bridge" in check.fix

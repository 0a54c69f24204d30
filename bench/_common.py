"""Shared plumbing for the engine benchmarks: isolated dirs, a real photodupd, scans, tables.

Every benchmark runs the product's own code (``Scanner``, ``DaemonFeatureSource``,
``LocalFeatureSource``, ``group_photos``) so the numbers it prints are the product's numbers.
Nothing here touches the user's real cache, state or socket: :func:`isolated_environment`
points every photodup directory at a throw-away folder first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from photodup_tui.engine.cache import Cache  # noqa: E402
from photodup_tui.engine.daemon_features import DaemonFeatureSource  # noqa: E402
from photodup_tui.engine.features import FeatureSource  # noqa: E402
from photodup_tui.engine.scan import Scanner, ScanProgress, ScanResult  # noqa: E402
from photodup_tui.engine.settings import ScanSettings  # noqa: E402
from photodupd.client import ConnectionLost, SyncClient  # noqa: E402

#: Generated photos shared by every benchmark run (and with bench/daemon_bench.py).
SHARED_PHOTOS = Path(tempfile.gettempdir()) / "photodup-bench"

_DIR_VARIABLES = (
    "PHOTODUP_CACHE_DIR",
    "PHOTODUP_STATE_DIR",
    "PHOTODUP_CONFIG_DIR",
    "PHOTODUP_RUNTIME_DIR",
)


def say(message: str) -> None:
    """Progress for the person running the benchmark; the tables go to stdout."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def isolated_environment() -> Iterator[Path]:
    """Point photodup's cache/state/config/runtime dirs at a fresh 0700 temp dir."""
    base = Path(tempfile.mkdtemp(prefix="pdb-"))  # short: socket paths must stay < 108 bytes
    base.chmod(0o700)
    saved = {name: os.environ.get(name) for name in _DIR_VARIABLES}
    for name in _DIR_VARIABLES:
        folder = base / name.removeprefix("PHOTODUP_").removesuffix("_DIR").lower()
        folder.mkdir(mode=0o700)
        os.environ[name] = str(folder)
    try:
        yield base
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(base, ignore_errors=True)


class Daemon:
    """photodupd as a child process on a private socket; stopped (by pid) on exit."""

    def __init__(
        self,
        base: Path,
        model: str = "builtin",
        threads: int | None = None,
        *,
        default_socket: bool = False,
    ) -> None:
        """``default_socket``: serve on the isolated environment's default socket, where a
        ``photodup scan --mode local`` run in the same environment looks for it."""
        from photodupd.paths import default_socket_path

        self.socket_path = default_socket_path() if default_socket else base / "d.sock"
        args = ["--socket", str(self.socket_path), "--model", model, "--log-level", "WARNING"]
        if threads is not None:
            args += ["--threads", str(threads), "--decode-workers", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "photodupd.daemon_cli", *args], env=env)

    def wait_hello(self, timeout: float = 120.0) -> None:
        """Readiness is a real hello, retried: the daemon binds its socket before the model."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            try:
                with SyncClient(self.socket_path, timeout=5) as client:
                    client.connect()
                    return
            except (OSError, ConnectionLost):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"photodupd exited with {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("photodupd did not answer") from None
                time.sleep(delay)
                delay = min(2 * delay, 0.25)

    def source(self) -> DaemonFeatureSource:
        """The engine's feature source on this daemon, once its model is loaded."""
        self.wait_hello()
        return DaemonFeatureSource(self.socket_path, start=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def scan(
    roots: Sequence[Path],
    source: FeatureSource,
    cache_path: Path,
    settings: ScanSettings | None = None,
) -> ScanResult:
    """One real ``Scanner.run`` with a cache at ``cache_path`` (reused across calls)."""

    def ignore(_progress: ScanProgress) -> None:
        pass

    with Cache(cache_path) as cache:
        scanner = Scanner(settings or ScanSettings(), source, cache)
        return scanner.run([str(r) for r in roots], ignore, threading.Event())


def make_camera_photos(count: int, size: tuple[int, int] = (4000, 3000)) -> list[Path]:
    """``count`` generated camera-like JPEGs, cached between runs like bench/daemon_bench.py."""
    from tests.photos import make_photo, write_jpeg

    folder = SHARED_PHOTOS / f"{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        if not path.exists():
            partial = path.with_suffix(".part")
            write_jpeg(partial, make_photo(1000 + i, size, noise=6.0), quality=90)
            os.replace(partial, path)  # an interrupted run never leaves a truncated photo
        photos.append(path)
    return photos


def link_into(files: Sequence[Path], folder: Path) -> list[Path]:
    """Hard links (copies across filesystems) of ``files`` in ``folder``: a library of exactly
    these files, without duplicating gigabytes of photos."""
    folder.mkdir(parents=True, exist_ok=True)
    linked = []
    for file in files:
        target = folder / file.name
        try:
            os.link(file, target)
        except OSError:
            shutil.copyfile(file, target)
        linked.append(target)
    return linked


def warm_page_cache(files: Sequence[Path]) -> None:
    """Read every file once so no contender pays for the cold disk and the next one not."""
    for file in files:
        with open(file, "rb") as fh:
            while fh.read(1 << 20):
                pass


def quiet_imagededup() -> None:
    """imagededup gives each module a DEBUG logger with its own stderr handler: raise them."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("imagededup"):
            logging.getLogger(name).setLevel(logging.WARNING)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def emit(text: str, out: Path | None) -> None:
    """Print the report, and write it to ``out`` when asked."""
    print(text, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of ``pid``, its reaped children and its live descendants: a difference
    over a run is what the process tree did in it."""
    import psutil

    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def machine_line() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpus} cores, Python {sys.version.split()[0]}, {sys.platform}"

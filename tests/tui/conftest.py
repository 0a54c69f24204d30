"""Helpers for driving the real app with Pilot: generated photo folders and worker waits."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.worker import WorkerCancelled, WorkerError, WorkerFailed, WorkerState

from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.scan_session import OpenedSource
from tests.daemon.daemon_proc import DaemonProcess
from tests.photos import make_photo, write_jpeg

SIZE = (120, 36)


@dataclass(frozen=True)
class Library:
    root: Path
    original: Path  # seed 1, full size
    copy: Path  # byte-identical copy of original, in another folder
    resized: Path  # seed 1 smaller, re-encoded: a near duplicate
    others: tuple[Path, ...]  # distinct photos

    def snapshot(self) -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in self.root.rglob("*") if p.is_file()}


def make_library(root: Path) -> Library:
    (root / "2019").mkdir(parents=True)
    (root / "backup").mkdir()
    (root / "phone").mkdir()
    original = write_jpeg(root / "2019" / "IMG_0001.jpg", make_photo(1, (640, 480)))
    copy = root / "backup" / "IMG_0001.jpg"
    shutil.copyfile(original, copy)
    resized = write_jpeg(root / "phone" / "small_0001.jpg", make_photo(1, (480, 360)), 85)
    others = tuple(
        write_jpeg(root / "2019" / f"IMG_{seed:04d}.jpg", make_photo(seed, (640, 480)))
        for seed in (2, 3)
    )
    return Library(root, original, copy, resized, others)


@pytest.fixture
def library(tmp_path: Path) -> Library:
    return make_library(tmp_path / "photos")


def local_source(report: Report, cancel: threading.Event) -> OpenedSource:
    """The no-model feature source, one decoder process (this machine is shared)."""
    return OpenedSource(LocalFeatureSource(workers=1), "test: no model")


async def idle(pilot: Pilot[Any], rounds: int = 50) -> None:
    """Wait until no worker runs and the messages they posted are handled.

    Work that starts more work (a check that starts a scan) takes several rounds.  The
    daemon status poll never ends by design, so it does not count.
    """
    for _ in range(rounds):
        await pilot.pause()
        busy = [w for w in pilot.app.workers if w.state in _BUSY and w.name != "daemon-poll"]
        if not busy:
            await pilot.pause()
            return
        for worker in busy:
            with contextlib.suppress(WorkerFailed, WorkerCancelled, WorkerError):
                await worker.wait()
    raise AssertionError(f"still busy: {[w.name for w in pilot.app.workers]}")


_BUSY = (WorkerState.PENDING, WorkerState.RUNNING)


def trash_files(xdg_data_home: Path) -> dict[str, bytes]:
    folder = xdg_data_home / "Trash" / "files"
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def daemon_socket(
    isolated_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A real photodupd with the built-in model on a short socket path, stopped by SIGTERM.
    Its Hugging Face cache is empty: CLIP weights are never there, as on a fresh offline
    computer."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    socket_path = isolated_dirs.parent / "d.sock"
    daemon = DaemonProcess(socket_path, tmp_path / "daemon", "--model", "builtin")
    try:
        daemon.wait_hello(timeout=120)
        daemon.wait_state("ready", timeout=300)
        yield socket_path
    finally:
        assert daemon.terminate() == 0, daemon.output()

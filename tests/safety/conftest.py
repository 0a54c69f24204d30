"""Fixtures for the safe-deletion tests: private HOME, trash and journal; real mounts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from photodup_tui.engine.safedelete.trash import mount_top
from tests.safety.helpers import mount


@pytest.fixture(autouse=True)
def private_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """HOME and XDG_DATA_HOME in tmp (the real trash is never touched); no fault armed.

    Also guards the machine: no test may create a ``.Trash-$uid`` at the top of the
    filesystem that holds tmp (the real one).
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("PHOTODUP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PHOTODUP_FAULT", raising=False)
    real_top_trash = os.path.join(
        mount_top(str(home), os.lstat(home).st_dev), f".Trash-{os.getuid()}"
    )
    existed = os.path.lexists(real_top_trash)
    yield home
    assert existed or not os.path.lexists(real_top_trash), f"a test created {real_top_trash}"


@pytest.fixture
def home_trash(tmp_path: Path) -> Path:
    return tmp_path / "xdg-data" / "Trash"


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small real tmpfs (another device than HOME); skipped only where mounting is denied."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not mount(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)]):
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        mount(["umount", "-l", str(mnt)])

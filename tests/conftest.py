"""Shared fixtures: every test runs with private photodup dirs, never the user's own."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Point config, cache, state, runtime dir and the freedesktop trash at temp dirs.

    The runtime dir lives directly under /tmp because socket paths must stay
    under 104 bytes, which pytest's deep tmp_path can exceed.
    """
    runtime = Path(tempfile.mkdtemp(prefix="pd-"))
    runtime.chmod(0o700)
    monkeypatch.setenv("PHOTODUP_RUNTIME_DIR", str(runtime / "rt"))
    monkeypatch.setenv("PHOTODUP_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("PHOTODUP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PHOTODUP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    yield runtime / "rt"
    shutil.rmtree(runtime, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long fuzz and soak tests")


def permissions_bind_us() -> bool:
    """Whether file modes stop this process: a file of mode 0 does not open for a normal
    user, but does for root (CAP_DAC_OVERRIDE), whatever its mode says."""
    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "probe")
        with open(probe, "w"):
            pass
        os.chmod(probe, 0)
        try:
            with open(probe):
                return False
        except PermissionError:
            return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("needs_nonroot" in item.keywords for item in items) and not permissions_bind_us():
        nonroot = pytest.mark.skip(
            reason="file modes do not bind root: .ci/run runs this again as an unprivileged user"
        )
        for item in items:
            if "needs_nonroot" in item.keywords:
                item.add_marker(nonroot)
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long run; use --run-slow (a short version runs by default)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

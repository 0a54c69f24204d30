"""``photodup scan`` and photodupd's idle exit, with no service manager holding the socket:
the next scan starts photodupd again, and so does a scan whose daemon exited between its
start and its first request.  The user notices nothing but the cold start."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import skimage.data
from PIL import Image

from photodup_tui import cli
from photodup_tui.engine.daemon_features import DaemonFeatureSource
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.report import load_report
from photodupd import paths, sockets

pytestmark = pytest.mark.timeout(300)


def daemon_pid() -> int:
    """The pid the running (or last) photodupd wrote into its lock file."""
    return int((paths.runtime_dir() / sockets.LOCK_NAME).read_text().split()[0])


def wait_exited(pid: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout=120)  # the daemon is our child: this reaps it


@pytest.fixture
def idle_exit_config(isolated_dirs: Path) -> Iterator[list[int]]:
    """photodupd exits one second after its last request; yields the pids to clean up."""
    paths.config_file().parent.mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text("[daemon]\nidle_exit = 1\nthreads = 2\ndecode_workers = 2\n")
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            process.terminate()
            process.wait(timeout=60)


def photo_pair(root: Path, name: str, image: Image.Image) -> list[Path]:
    """A photo and a smaller re-encode of it: near duplicates only the model's embeddings
    (and hashes) tie together."""
    root.mkdir(parents=True, exist_ok=True)
    original, small = root / f"{name}.jpg", root / f"{name}_small.jpg"
    image.save(original, quality=92)
    image.reduce(2).save(small, quality=80)
    return [original, small]


def test_scan_after_an_idle_exit_starts_photodupd_again(
    idle_exit_config: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pictures = tmp_path / "Pictures"
    photo_pair(pictures / "2019", "astronaut", Image.fromarray(skimage.data.astronaut()))
    argv = ["scan", str(pictures), "--model", "builtin", "-q"]
    assert cli.main([*argv, "--json", str(tmp_path / "first.json")]) == cli.EXIT_DUPLICATES
    first = daemon_pid()
    idle_exit_config.append(first)
    wait_exited(first)  # its idle exit, on its own
    assert not paths.default_socket_path().exists()

    # New photos: the next scan needs the model, and starts photodupd again to get it.
    added = photo_pair(pictures / "2020", "coffee", Image.fromarray(skimage.data.coffee()))
    capsys.readouterr()
    assert cli.main([*argv, "--json", str(tmp_path / "second.json")]) == cli.EXIT_DUPLICATES
    second = daemon_pid()
    idle_exit_config.append(second)
    assert second != first
    err = capsys.readouterr().err
    assert "unavailable" not in err and "falling back" not in err, err
    report = load_report(tmp_path / "second.json")
    assert report.model == "builtin:efficientnet_lite0/imagenet"
    grouped = {frozenset(m.photo.path for m in group.members) for group in report.groups}
    assert frozenset(str(p) for p in added) in grouped


def test_a_scan_whose_daemon_exited_after_it_started_restarts_it(
    idle_exit_config: list[int], tmp_path: Path
) -> None:
    photos = photo_pair(tmp_path, "astronaut", Image.fromarray(skimage.data.astronaut()))
    source = DaemonFeatureSource(daemon_args=["--model", "builtin"])
    first = daemon_pid()
    idle_exit_config.append(first)
    wait_exited(first)  # between the scan's start and its first features request
    results: dict[str, FeatureResult] = {}
    source.compute([str(p) for p in photos], results.__setitem__, threading.Event())
    idle_exit_config.append(daemon_pid())
    assert daemon_pid() != first
    assert set(results) == {str(p) for p in photos}
    for result in results.values():
        assert result.ok and result.embedding is not None, result

"""The modes side by side: inline on its own, and the same answers from local, inline and
remote for the same files."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from photodup_tui import cli
from photodup_tui.engine.cache import Cache
from photodup_tui.engine.daemon_features import DaemonFeatureSource
from photodup_tui.engine.features import FeatureResult, FeatureSource
from photodup_tui.engine.remote_features import LinkedFeatureSource
from photodup_tui.engine.report import load_report
from photodup_tui.engine.scan import Scanner
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Kind
from photodupd import paths, remote
from photodupd.transport import inline_endpoint
from tests.daemon.daemon_proc import DaemonProcess
from tests.engine.test_e2e_daemon import library
from tests.remote.sshd import RemoteSide, Sshd

BUILTIN = "builtin:efficientnet_lite0/imagenet"


def model_children() -> list[psutil.Process]:
    children = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that ended meanwhile
            if "photodupd.inline" in " ".join(child.cmdline()):
                children.append(child)
    return children


def test_an_inline_scan_runs_the_model_in_a_private_child(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--mode inline``: the built-in model in a child of the scan that leaves nothing
    behind (no socket, no runtime dir, no process) and finds what a daemon finds."""
    library(tmp_path / "Pictures")
    report_path = tmp_path / "report.json"
    argv = ["scan", str(tmp_path / "Pictures"), "--mode", "inline", "--model", "builtin"]
    assert cli.main([*argv, "--json", str(report_path)]) == cli.EXIT_DUPLICATES

    out = capsys.readouterr().out
    assert f"model: {BUILTIN} on photodupd inline (a private child) (inline, cpu)" in out
    report = load_report(report_path)
    (group,) = report.groups
    verdicts = {Path(m.photo.path).name: m.verdict for m in group.members}
    assert verdicts["astronaut_mirror.jpg"] is Kind.SIMILAR
    assert not paths.runtime_dir().exists()  # no socket, not even its directory
    assert model_children() == []  # the child ended with the scan


@pytest.fixture
def local_daemon(isolated_dirs: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    paths.ensure_private_dir(paths.runtime_dir())
    process = DaemonProcess(paths.default_socket_path(), tmp_path / "daemon", "--model", "builtin")
    try:
        process.wait_hello(timeout=120)
        process.wait_state("ready", timeout=300)
        yield process
    finally:
        assert process.terminate() == 0, process.output()


def features(source: FeatureSource, files: list[str]) -> dict[str, FeatureResult]:
    results: dict[str, FeatureResult] = {}
    source.compute(files, results.__setitem__, threading.Event())
    return results


def groups(source: FeatureSource, root: Path, cache: Path) -> list[tuple[str, list[tuple]]]:
    """The groups a scan finds with ``source``, on a cache of its own (a shared one would
    answer the second mode from the first one's results)."""
    result = Scanner(ScanSettings(), source, Cache(cache)).run(
        [str(root)], lambda _p: None, threading.Event()
    )
    return sorted(
        (
            g.kind.value,
            sorted((m.photo.path, str(m.verdict), m.action.value, m.why) for m in g.members),
        )
        for g in result.groups
    )


def test_local_inline_and_remote_give_the_same_answers(
    local_daemon: DaemonProcess, sshd: Sshd, remote_side: RemoteSide, tmp_path: Path
) -> None:
    files = sorted(str(p) for p in library(tmp_path / "Pictures").values())
    root = tmp_path / "Pictures"
    local = DaemonFeatureSource(start=False)
    inline = LinkedFeatureSource(inline_endpoint("builtin"), upload="path", mode="inline")
    ssh = remote.ssh_endpoint(sshd.host, sshd.ssh_command(), remote_side.command())
    reduced = LinkedFeatureSource(ssh, upload="reduced", mode="remote")
    try:
        sources: dict[str, FeatureSource] = {"local": local, "inline": inline, "remote": reduced}
        answers = {name: features(source, files) for name, source in sources.items()}
        found = {
            name: groups(source, root, tmp_path / name / "cache.sqlite")
            for name, source in sources.items()
        }
    finally:
        inline.close()
        reduced.close()

    assert {s.model_id for s in (local, inline, reduced)} == {BUILTIN}
    for path in files:
        base = answers["local"][path]
        assert base.ok
        for name in ("inline", "remote"):
            other = answers[name][path]
            assert (other.phash, other.width, other.height, other.format) == (
                base.phash,
                base.width,
                base.height,
                base.format,
            ), (name, path)
            assert (other.taken, other.camera, other.exif_fields) == (
                base.taken,
                base.camera,
                base.exif_fields,
            )
            cosine = float(np.dot(other.embedding, base.embedding))
            assert cosine >= 0.9999, (name, path, cosine)
    assert found["local"], "the library has duplicates: an empty grouping proves nothing"
    assert found["inline"] == found["local"]
    assert found["remote"] == found["local"]

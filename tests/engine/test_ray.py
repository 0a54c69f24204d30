"""``photodup scan --ray``: a real local Ray cluster (2 CPUs) decoding and embedding.

One Ray instance serves the module (starting one costs seconds); the tests are few and small.
Skipped only when the ``photodup[ray]`` extra is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from photodup_tui import cli
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.report import load_report
from photodupd import paths
from photodupd.models import catalog
from tests.daemon.daemon_proc import DaemonProcess
from tests.engine.test_e2e_daemon import library
from tests.fuzz import hostile_inputs as hostile
from tests.photos import make_photo

ray = pytest.importorskip("ray")  # the photodup[ray] extra; .ci/run installs it

from photodup_tui.engine import ray_features  # noqa: E402  (after the skip)

#: The features columns a scan stores, but the embedding (compared apart, to float16's step).
FACTS = "phash, width, height, format, taken, camera, exif_fields, error_code"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs, as CI has; sources opened with ``local`` reuse it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def open_source(**settings: object) -> ray_features.RayFeatureSource:
    return ray_features.RayFeatureSource(
        ray_features.RaySettings("local", model="builtin", **settings)  # type: ignore[arg-type]
    )


def photos(root: Path, count: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(count):
        path = root / f"p{seed:03d}.jpg"
        make_photo(seed, (320, 240)).save(path, quality=90)
        out.append(str(path))
    return out


def cache_rows(cache_dir: Path) -> dict[str, tuple[tuple[object, ...], np.ndarray | None]]:
    """path -> (model id and facts, embedding as stored), read from the cache file itself."""
    (db,) = cache_dir.rglob("*.sqlite")
    with sqlite3.connect(db) as con:
        rows = con.execute(
            f"SELECT f.path, x.model_id, {FACTS}, x.embedding FROM features x "
            "JOIN files f ON f.id = x.file_id"
        ).fetchall()
    out: dict[str, tuple[tuple[object, ...], np.ndarray | None]] = {}
    for path, *facts, blob in rows:
        key = os.fsdecode(path)
        assert key not in out, f"two feature rows for {key}"
        vector = np.frombuffer(blob, dtype="<f2").astype(np.float32) if blob else None
        out[key] = (tuple(facts), vector)
    return out


def cache_thumbs(cache_dir: Path) -> dict[str, bytes]:
    """path -> the pixel checks' packed thumbnail, as the cache file holds it."""
    (db,) = cache_dir.rglob("*.sqlite")
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT f.path, t.thumb FROM thumbs t JOIN files f ON f.id = t.file_id"
        ).fetchall()
    return {os.fsdecode(path): bytes(thumb) for path, thumb in rows}


def embedder_pids() -> set[int]:
    """The Ray actor processes that hold the model (Ray names its workers by their class)."""
    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        if "Embedder" in " ".join(proc.info["cmdline"] or ()):
            pids.add(proc.pid)
    return pids


def gone(pid: int, within: float = 60.0) -> bool:
    """Whether ``pid`` is (soon) dead: a killed process with a big address space takes a
    moment to tear down, and is a zombie until Ray's raylet reaps it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_ray_scan_gives_what_photodupd_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same model id, same groups, same cache rows as a scan through photodupd; and a later
    scan through photodupd takes every feature from what the Ray scan cached.

    First in the module and without the shared cluster: ``--ray local`` starts a Ray
    instance of its own for the run, and stops it after."""
    ray_before = ray.is_initialized()
    files = library(tmp_path / "Pictures")
    bad = tmp_path / "Pictures/cut.jpg"
    bad.write_bytes(files["coffee"].read_bytes()[:5000])
    paths.ensure_private_dir(paths.runtime_dir())
    daemon = DaemonProcess(paths.default_socket_path(), tmp_path / "daemon", "--model", "builtin")
    try:
        daemon.wait_hello(timeout=120)
        daemon.wait_state("ready", timeout=300)
        argv = ["scan", str(tmp_path / "Pictures"), "--model", "builtin", "-q"]
        monkeypatch.setenv("PHOTODUP_CACHE_DIR", str(tmp_path / "cache-daemon"))
        assert cli.main([*argv, "--json", str(tmp_path / "daemon.json")]) == cli.EXIT_DUPLICATES
        monkeypatch.setenv("PHOTODUP_CACHE_DIR", str(tmp_path / "cache-ray"))
        ray_argv = [*argv[:-1], "--ray", "local", "--json", str(tmp_path / "ray.json")]
        capsys.readouterr()
        assert cli.main(ray_argv) == cli.EXIT_DUPLICATES
        # The summary says where the model ran and how the files reached it.
        summary = capsys.readouterr().out
        assert "model: builtin:efficientnet_lite0/imagenet on a local Ray instance" in summary
        assert "files: shared mount (the workers read each path)" in summary
        assert ray.is_initialized() == ray_before  # a Ray it started is stopped
        by_daemon = load_report(tmp_path / "daemon.json")
        by_ray = load_report(tmp_path / "ray.json")
        assert by_ray.model == by_daemon.model == catalog.BUILTIN_ID

        def grouped(report: object) -> set[tuple[str, frozenset[str]]]:
            return {
                (g.kind.value, frozenset(m.photo.path for m in g.members))
                for g in report.groups  # type: ignore[attr-defined]
            }

        assert grouped(by_ray) == grouped(by_daemon)
        assert len(by_ray.groups) == 1
        daemon_rows = cache_rows(tmp_path / "cache-daemon")
        ray_rows = cache_rows(tmp_path / "cache-ray")
        assert set(ray_rows) == set(daemon_rows)
        assert ray_rows[str(bad)][0][-1] == "truncated"
        for path, (facts, vector) in daemon_rows.items():
            assert ray_rows[path][0] == facts, path
            if vector is None:
                assert ray_rows[path][1] is None
            else:  # one float16 step: batches of another size round the last bits apart
                np.testing.assert_allclose(ray_rows[path][1], vector, atol=2e-3)

        # The pixel checks' thumbnails came back from the workers' decode, as from
        # photodupd's: one for every photo read, byte for byte the same.
        assert cache_thumbs(tmp_path / "cache-ray") == cache_thumbs(tmp_path / "cache-daemon")
        assert len(cache_thumbs(tmp_path / "cache-ray")) >= len(daemon_rows) - 1
        # A scan through photodupd on the Ray scan's cache asks photodupd for nothing.
        served_before = daemon.wait_state("ready")["images_served"]
        assert cli.main([*argv, "--json", str(tmp_path / "again.json")]) == cli.EXIT_DUPLICATES
        assert daemon.wait_state("ready")["images_served"] == served_before
        assert grouped(load_report(tmp_path / "again.json")) == grouped(by_daemon)
    finally:
        assert daemon.terminate() == 0, daemon.output()


def test_bombs_and_truncated_files_are_item_errors(cluster: None, tmp_path: Path) -> None:
    good = photos(tmp_path / "good", 2)
    (name, (bomb_bytes, allowed)) = next(
        (n, b) for n, b in hostile.decompression_bombs().items() if n.startswith("PNG header")
    )
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_bytes)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(hostile.truncated_images()["JPEG"])
    got: dict[str, FeatureResult] = {}
    with open_source() as source:
        source.compute([*good, str(bomb), str(cut)], got.__setitem__, threading.Event())
    assert got[str(bomb)].error_code in {code.value for code in allowed}, name
    assert got[str(cut)].error_code == "truncated"
    assert all(got[p].ok and got[p].embedding is not None for p in good)
    assert got[good[0]].embedding.shape == (catalog.BUILTIN_DIM,)  # type: ignore[union-attr]


def test_a_model_worker_killed_mid_job_is_retried_without_duplicates(
    cluster: None, tmp_path: Path
) -> None:
    files = photos(tmp_path / "many", 48)
    answers: Counter[str] = Counter()
    killed: list[int] = []
    answered_at_kill: list[int] = []

    def on_result(path: str, result: FeatureResult) -> None:
        assert result.ok, result
        answers[path] += 1
        if not killed:  # the first answer: the rest of the job is still to come
            answered_at_kill.append(sum(answers.values()))
            for pid in embedder_pids():
                psutil.Process(pid).kill()
                killed.append(pid)

    with open_source() as source:
        source.compute(files, on_result, threading.Event())
    assert killed, "no model actor process found to kill"
    assert answered_at_kill[0] < len(files)
    assert answers == Counter(files)  # every photo answered, none twice
    for pid in killed:
        assert gone(pid), f"the model actor {pid} outlived SIGKILL"


def test_the_scan_report_says_the_files_were_shipped(cluster: None, tmp_path: Path) -> None:
    """When the workers cannot read the files, this computer decodes and ships the model's
    input: the same embeddings and facts as when the workers read them."""
    files = photos(tmp_path / "shipped", 6)
    bad = tmp_path / "shipped/cut.jpg"
    bad.write_bytes(hostile.truncated_images()["JPEG"])
    files.append(str(bad))
    read: dict[str, FeatureResult] = {}
    shipped: dict[str, FeatureResult] = {}
    with open_source(files="shared") as source:
        source.compute(files, read.__setitem__, threading.Event())
        assert "shared mount" in source.served_by()
    with open_source(files="ship") as source:
        source.compute(files, shipped.__setitem__, threading.Event())
        assert "shipped by this computer" in source.served_by()
        assert "KB per photo" in source.served_by()
    assert set(shipped) == set(read) == set(files)
    assert shipped[str(bad)].error_code == read[str(bad)].error_code == "truncated"
    for path in files[:-1]:
        assert (shipped[path].phash, shipped[path].width) == (read[path].phash, read[path].width)
        np.testing.assert_allclose(shipped[path].embedding, read[path].embedding, atol=1e-5)


def test_cancel_stops_the_job(cluster: None, tmp_path: Path) -> None:
    files = photos(tmp_path / "cancelled", 64)
    cancel = threading.Event()
    answered: list[str] = []
    after_cancel: list[str] = []

    def on_result(path: str, _result: FeatureResult) -> None:
        (after_cancel if cancel.is_set() else answered).append(path)
        cancel.set()

    with open_source() as source:
        source.compute(files, on_result, cancel)
        assert 0 < len(answered) < len(files)
        assert after_cancel == []
        # The pipeline is stopped, not left running: its model actors go.
        assert all(gone(pid) for pid in embedder_pids())

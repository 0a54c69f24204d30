"""``photodup scan --ray`` against a cluster started apart from the scan, as a user runs one:
``ray start --head`` (2 CPUs, this machine only), then the real CLI in a process of its own,
connecting through Ray Client (``ray://``) and through ``auto`` (RAY_ADDRESS).

test_ray.py covers ``--ray local`` and the source's behaviour (errors, a killed worker,
cancel, shipping) on a Ray instance in the test process; here the test process never runs
Ray itself: the cluster is :class:`tests.engine.ray_head.RayHead` (its own temp dir, ports,
token and session, killed exactly at the module's end), and each scan is a subprocess.  So
the two modules never have a Ray of theirs alive at once (pytest ends test_ray.py's
module-scoped Ray before this module's first test) and never share /tmp/ray.

Skipped only when the ``photodup[ray]`` extra is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from photodup_tui.engine.report import load_report
from photodupd import paths
from photodupd.models import catalog
from tests.daemon.daemon_proc import ROOT, DaemonProcess
from tests.engine.ray_head import RayHead, free_port
from tests.engine.test_e2e_daemon import library
from tests.engine.test_ray import cache_rows, cache_thumbs

pytest.importorskip("ray")  # the photodup[ray] extra; .ci/run installs it

#: A scan of a handful of photos; far more than it takes, far less than a hang.
SCAN_WITHIN = 300.0
#: A scan whose cluster does not answer must say so well within this (Ray alone would
#: retry a dead Ray Client address for ~30 s and a dead GCS for minutes).
FAIL_WITHIN = 60.0
#: What tells Ray which cluster to join and how to prove it may.
RAY_VARIABLES = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@dataclass(frozen=True)
class Scan:
    """One CLI scan's report, cache and output."""

    report: Path
    cache: Path
    out: str
    err: str


def scan_env(
    where: Path, extra: dict[str, str] | None = None, runtime: Path | None = None
) -> dict[str, str]:
    """The CLI's environment: its own photodup dirs under ``where`` and ``runtime`` (default:
    the test's own, from conftest's isolated_dirs), never the user's; no Ray address or
    token but those given."""
    env = dict(os.environ)
    for name in (*RAY_VARIABLES, "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(name, None)
    env.update(
        PHOTODUP_RUNTIME_DIR=str(runtime or os.environ["PHOTODUP_RUNTIME_DIR"]),
        PHOTODUP_CONFIG_DIR=str(where / "config"),
        PHOTODUP_CACHE_DIR=str(where / "cache"),
        PHOTODUP_STATE_DIR=str(where / "state"),
        XDG_DATA_HOME=str(where / "xdg-data"),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def run_scan(
    library_root: Path,
    where: Path,
    env: dict[str, str],
    *args: str,
    timeout: float = SCAN_WITHIN,
) -> Scan:
    """``photodup scan LIBRARY --model builtin --json ...`` (the console script's main)."""
    where.mkdir(parents=True, exist_ok=True)
    report = where / "report.json"
    command = [sys.executable, "-m", "photodup_tui.cli", "scan", str(library_root)]
    done = subprocess.run(
        [*command, "--model", "builtin", "--json", str(report), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # 1: duplicates found (the library has a family); anything else is a failed scan.
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return Scan(report, where / "cache", done.stdout, done.stderr)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photographs and a library's copies of one (one family), and a truncated file."""
    root = tmp_path_factory.mktemp("library") / "Pictures"
    files = library(root)
    (root / "2020/cut.jpg").write_bytes(files["coffee"].read_bytes()[:5000])
    return root


@pytest.fixture(scope="module")
def starting_head() -> Iterator[RayHead]:
    """``ray start --head`` (2 CPUs), launched; all of it killed at the module's end."""
    started = RayHead.start(cpus=2)
    try:
        yield started
    finally:
        started.stop()
        left = started.processes()
        shutil.rmtree(started.temp_dir.parent, ignore_errors=True)
        assert left == [], "a process of the test's Ray head outlived it"


@pytest.fixture(scope="module")
def by_photodupd(
    pictures: Path, starting_head: RayHead, tmp_path_factory: pytest.TempPathFactory
) -> Scan:
    """The same library scanned through photodupd, while the Ray head starts (a head that
    has started runs nothing until a scan connects)."""
    where = tmp_path_factory.mktemp("photodupd")
    short = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))  # socket paths are short
    runtime = short / "rt"
    paths.ensure_private_dir(runtime)
    env = scan_env(where, runtime=runtime)
    daemon = DaemonProcess(runtime / paths.SOCKET_NAME, where / "daemon", "--model", "builtin")
    try:
        daemon.wait_hello(timeout=120)
        daemon.wait_state("ready", timeout=300)
        return run_scan(pictures, where, env)
    finally:
        assert daemon.terminate() == 0, daemon.output()
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="module")
def head(starting_head: RayHead, by_photodupd: Scan) -> RayHead:
    """The cluster, answering."""
    starting_head.wait_ready()
    return starting_head


def grouped(report_path: Path) -> set[tuple[str, frozenset[str]]]:
    report = load_report(report_path)
    return {(g.kind.value, frozenset(m.photo.path for m in g.members)) for g in report.groups}


def assert_same_as_photodupd(scan: Scan, baseline: Scan, head: RayHead) -> None:
    """Same model id, groups, cache rows (facts, errors, embeddings) and thumbnails."""
    served = load_report(scan.report).model
    assert served == catalog.BUILTIN_ID, f"{scan.err}\n{head.client_server_log()}"
    assert load_report(baseline.report).model == catalog.BUILTIN_ID, baseline.err
    assert grouped(scan.report) == grouped(baseline.report)
    assert len(grouped(scan.report)) == 1
    expected, got = cache_rows(baseline.cache), cache_rows(scan.cache)
    assert set(got) == set(expected)
    cut = next(path for path in got if path.endswith("cut.jpg"))
    assert got[cut][0][-1] == "truncated"
    for path, (facts, vector) in expected.items():
        assert got[path][0] == facts, path
        if vector is None:
            assert got[path][1] is None, path
        else:  # one float16 step: batches of another size round the last bits apart
            stored = got[path][1]
            assert stored is not None, path
            np.testing.assert_allclose(stored, vector, atol=2e-3)
    assert cache_thumbs(scan.cache) == cache_thumbs(baseline.cache)


def test_a_scan_through_ray_client_gives_what_photodupd_gives(
    pictures: Path, by_photodupd: Scan, head: RayHead, tmp_path: Path
) -> None:
    """``--ray ray://HOST:PORT``: Ray Data cannot run its executor in a Ray Client, so the
    pipeline runs on the cluster; the results are photodupd's, byte for byte where stored."""
    env = scan_env(tmp_path, head.auth_env)
    scan = run_scan(pictures, tmp_path, env, "--ray", head.client_address)
    assert_same_as_photodupd(scan, by_photodupd, head)
    # The summary says which cluster served, its size, and how the files reached it: on one
    # machine the workers see the driver's paths.
    assert f"model: {catalog.BUILTIN_ID} on Ray at {head.client_address} (2 CPUs; " in scan.out, (
        scan.out
    )
    assert "files: shared mount (the workers read each path)" in scan.out, scan.out


def test_auto_scans_on_the_cluster_ray_address_names(
    pictures: Path, by_photodupd: Scan, head: RayHead, tmp_path: Path
) -> None:
    """``--ray auto`` with RAY_ADDRESS = the head's GCS address: the driver joins the
    cluster (no Ray of its own) and gets photodupd's results."""
    env = scan_env(tmp_path, {"RAY_ADDRESS": head.gcs_address, **head.auth_env})
    scan = run_scan(pictures, tmp_path, env, "--ray", "auto")
    assert_same_as_photodupd(scan, by_photodupd, head)
    served = f"on Ray at {head.gcs_address} (RAY_ADDRESS) (2 CPUs; "
    assert served in scan.out, scan.out
    assert "files: shared mount (the workers read each path)" in scan.out, scan.out


@pytest.mark.parametrize("form", ["ray://", "auto"])
def test_an_address_nothing_answers_at_is_said_at_once(
    form: str, pictures: Path, tmp_path: Path
) -> None:
    """A cluster that is not there: the scan says so (not Ray's half-minute retries, nor a
    hang) and goes on without a model, as when photodupd is unavailable."""
    port = free_port()  # nothing listens there
    if form == "auto":
        env = scan_env(tmp_path, {"RAY_ADDRESS": f"127.0.0.1:{port}"})
        args, address = ("--ray", "auto"), f"127.0.0.1:{port}"
    else:
        env = scan_env(tmp_path)
        address = f"ray://127.0.0.1:{port}"
        args = ("--ray", address)
    # Exit 1 (run_scan checks it): pHash still finds the exact copies.
    scan = run_scan(pictures, tmp_path / "scan", env, *args, timeout=FAIL_WITHIN)
    said = (
        f"the Ray cluster ({args[1]}) is unavailable (cannot reach Ray at {address}: "
        f"nothing answers at 127.0.0.1:{port} (Connection refused); "
        "is the cluster's head running (ray start --head)?)"
    )
    assert said in scan.err, scan.err
    assert load_report(scan.report).model != catalog.BUILTIN_ID  # no model served the scan


#: A driver that opens the source itself with ``files = ship`` (no flag asks for it: on one
#: machine the workers always see the files) and writes what it computed as JSON.
SHIP_DRIVER = """
import json, sys, threading
from photodup_tui.engine.ray_features import RayFeatureSource, RaySettings

got = {}
with RayFeatureSource(RaySettings(sys.argv[1], model="builtin", files="ship")) as source:
    source.compute(sys.argv[3:], got.__setitem__, threading.Event())
    summary = source.served_by()
rows = {
    path: [r.error_code, r.phash, r.width, r.height, None if r.embedding is None
           else r.embedding.tolist()]
    for path, r in got.items()
}
with open(sys.argv[2], "w") as out:
    json.dump({"summary": summary, "rows": rows}, out)
"""


def test_files_shipped_through_ray_client_give_what_photodupd_gives(
    pictures: Path, by_photodupd: Scan, head: RayHead, tmp_path: Path
) -> None:
    """The files the cluster cannot see (a laptop's photos, a remote cluster): the driver
    decodes them and ships the model's input to actors it starts through Ray Client."""
    expected = cache_rows(by_photodupd.cache)
    out = tmp_path / "shipped.json"
    done = subprocess.run(
        [sys.executable, "-c", SHIP_DRIVER, head.client_address, str(out), *sorted(expected)],
        env=scan_env(tmp_path, head.auth_env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SCAN_WITHIN,
    )
    assert done.returncode == 0, done.stderr
    shipped = json.loads(out.read_text())
    assert f"Ray at {head.client_address} (2 CPUs; " in shipped["summary"]
    assert "files: shipped by this computer (reduced upload)" in shipped["summary"]
    assert "KB per photo" in shipped["summary"]
    assert set(shipped["rows"]) == set(expected)
    for path, ((_model, phash, width, height, *_facts, error), vector) in expected.items():
        got_error, got_phash, got_width, got_height, embedding = shipped["rows"][path]
        assert got_error == error, path
        if error is None:
            assert isinstance(phash, int), path
            assert got_phash % 2**64 == phash % 2**64, path  # stored signed, 64 bits either way
            assert (got_width, got_height) == (width, height), path
            assert vector is not None, path
            np.testing.assert_allclose(np.asarray(embedding), vector, atol=2e-3)

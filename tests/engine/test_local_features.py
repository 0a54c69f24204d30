"""The --no-model source: decoding in worker processes that may die without losing the scan."""

from __future__ import annotations

import threading
from pathlib import Path

from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.local_features import LocalFeatureSource
from tests.photos import make_photo, write_jpeg

MISBEHAVING = "tests.engine.sources:misbehaving_decoder"


def collect(
    source: LocalFeatureSource, paths: list[str], cancel: threading.Event | None = None
) -> dict[str, FeatureResult]:
    results: dict[str, FeatureResult] = {}
    lock = threading.Lock()

    def on_result(path: str, result: FeatureResult) -> None:
        with lock:
            assert path not in results  # exactly one result per path
            results[path] = result

    source.compute(paths, on_result, cancel or threading.Event())
    return results


def test_real_decoder_results_and_per_file_errors(tmp_path: Path) -> None:
    good = write_jpeg(tmp_path / "a.jpg", make_photo(1, (320, 240)))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image")
    missing = tmp_path / "gone.jpg"
    results = collect(LocalFeatureSource(workers=2), [str(good), str(bad), str(missing)])
    ok = results[str(good)]
    assert ok.ok and ok.embedding is None
    assert (ok.width, ok.height, ok.format) == (320, 240, "JPEG")
    assert isinstance(ok.phash, int)
    assert results[str(bad)].error_code == "not_an_image"
    assert results[str(missing)].error_code == "not_found"


def test_a_crashing_decoder_costs_only_its_own_file() -> None:
    paths = [f"/x/{name}" for name in ("a", "b", "crash-1", "c", "d", "e", "crash-2", "f", "g")]
    results = collect(LocalFeatureSource(workers=2, decode_fn=MISBEHAVING), paths)
    assert set(results) == set(paths)
    crashed = {p for p, r in results.items() if r.error_code == "decoder_crashed"}
    assert crashed == {"/x/crash-1", "/x/crash-2"}
    assert all(results[p].phash == len(p) for p in paths if p not in crashed)


def test_a_hanging_decoder_times_out_and_the_scan_goes_on() -> None:
    paths = ["/x/a", "/x/hang-1", "/x/b", "/x/c"]
    source = LocalFeatureSource(workers=1, timeout=1.0, decode_fn=MISBEHAVING)
    results = collect(source, paths)
    assert results["/x/hang-1"].error_code == "timeout"
    assert all(results[p].phash == len(p) for p in ("/x/a", "/x/b", "/x/c"))


def test_cancel_before_start_asks_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    source = LocalFeatureSource(workers=1, decode_fn=MISBEHAVING)
    assert collect(source, ["/x/a"], cancel) == {}

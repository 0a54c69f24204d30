"""The daemon's request log line and its per-minute history (photodupd.history), on a fake
clock."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from photodupd import daemon_cli, history
from photodupd.history import Finished, History, log_line

T0 = 1_700_000_040.0  # a minute boundary (28,333,334 minutes)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def features(ms: float, items: int = 4, failed: int = 0) -> Finished:
    return Finished("features", 1, "test", ms, items=items, failed_items=failed)


def test_the_log_line_has_every_field() -> None:
    line = log_line(
        Finished(
            "features",
            7,
            "photodup/0.1.0",
            450.25,
            items=32,
            failed_items=1,
            wait_ms=12.04,
            model_ms=380.5,
        )
    )
    assert line == (
        "request op=features items=32 errors=1 wait_ms=12.0 model_ms=380.5 total_ms=450.2 "
        "client=photodup/0.1.0 conn=7"
    )
    refused = log_line(Finished("load", 3, None, 2.0, error="model_unavailable"))
    assert (
        refused == "request op=load errors=1 error=model_unavailable total_ms=2.0 client=- conn=3"
    )


def test_a_hostile_client_name_cannot_forge_log_lines() -> None:
    evil = "x\nrequest op=shutdown client=admin \x1b[2J" + "A" * 500
    line = log_line(Finished("ping", 1, evil, 1.0))
    assert "\n" not in line and "\x1b" not in line
    fields = dict(field.split("=", 1) for field in line.split()[1:])
    assert fields["op"] == "ping" and fields["conn"] == "1"
    assert len(fields["client"]) == history.CLIENT_CHARS


def test_minutes_count_images_requests_errors_and_latency() -> None:
    clock = Clock(T0 + 5)
    log = History(clock)
    for ms in range(1, 101):  # 100 features requests of 4 images, 1..100 ms
        log.record(features(float(ms)))
    log.record(features(5.0, items=4, failed=1))
    log.record(Finished("load", 2, None, 1.0, error="model_unavailable"))
    log.record(Finished("status", 2, None, 0.5))  # monitoring: not a request
    clock.now = T0 + 30
    [minute] = log.status()["history"]
    assert minute["start"] == int(T0)
    assert minute["seconds"] == pytest.approx(25.0)  # up since T0 + 5
    assert minute["images"] == 100 * 4 + 3
    assert minute["images_per_s"] == pytest.approx(403 / 25.0, rel=1e-3)
    assert minute["requests"] == 102
    assert minute["errors"] == 2  # the failed item and the refused load
    # 101 latencies: 1..100 ms and one more of 5 ms; nearest rank: the 51st and the 100th.
    assert (minute["p50_ms"], minute["p99_ms"]) == (50.0, 99.0)


def test_quiet_minutes_are_zeros_and_the_history_keeps_one_hour() -> None:
    clock = Clock(T0)
    log = History(clock)
    log.record(features(10.0))
    clock.now = T0 + 3 * 60 + 1
    rows = log.status()["history"]
    assert [row["start"] for row in rows] == [int(T0) + 60 * i for i in range(4)]
    assert [row["images"] for row in rows] == [4, 0, 0, 0]
    assert rows[1]["p50_ms"] is None and rows[1]["rss"] is None
    assert rows[0]["seconds"] == 60.0 and rows[-1]["seconds"] == pytest.approx(1.0)
    clock.now = T0 + 5 * 3600
    rows = log.status()["history"]
    assert len(rows) == history.MINUTES
    assert rows[-1]["start"] == int(T0 + 5 * 3600) // 60 * 60
    assert sum(row["images"] for row in rows) == 0


def test_each_minute_keeps_the_largest_rss_seen() -> None:
    clock = Clock(T0)
    log = History(clock)
    for rss in (300, 900, 500):
        log.sample_rss(rss)
    log.sample_rss(None)
    clock.now = T0 + 61
    log.sample_rss(200)
    first, second = log.status()["history"]
    assert (first["rss"], second["rss"]) == (900, 200)


def test_latency_percentiles_cover_the_window_and_totals_everything() -> None:
    clock = Clock(T0)
    log = History(clock)
    for _ in range(10):
        log.record(features(1000.0))
    clock.now = T0 + history.LATENCY_WINDOW + 1
    for ms in (10.0, 20.0, 30.0, 40.0):
        log.record(features(ms))
    latency = log.status()["features_latency"]
    assert latency["count"] == 4
    assert (latency["p50_ms"], latency["p90_ms"], latency["p99_ms"]) == (20.0, 40.0, 40.0)
    assert latency["total_count"] == 14
    assert latency["total_ms"] == pytest.approx(10_100.0)


def test_a_burst_of_requests_keeps_a_bounded_sample() -> None:
    log = History(Clock(T0))
    for ms in range(3 * history.MAX_SAMPLES):
        log.record(features(float(ms % 100)))
    minute = log._minutes[-1]
    assert len(minute.latencies) == history.MAX_SAMPLES
    [row] = log.status()["history"]
    assert row["requests"] == 3 * history.MAX_SAMPLES
    assert 40.0 <= (row["p50_ms"] or 0) <= 60.0  # a uniform sample of 0..99


def test_percentile_is_nearest_rank() -> None:
    assert history.percentile([], 50) is None
    assert history.percentile([3.0], 99) == 3.0
    assert history.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert history.percentile([4.0, 1.0, 3.0, 2.0], 75) == 3.0


def test_the_file_log_is_rotated_at_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "photodupd.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        daemon_cli.setup_logging("INFO", path, max_bytes=2000, backups=2)
        log = logging.getLogger("photodupd.server")
        for n in range(200):
            log.info(log_line(Finished("features", n, "test", 1.0, items=1)))
        log.debug("not at INFO")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["photodupd.log", "photodupd.log.1", "photodupd.log.2"]
    assert all(p.stat().st_size <= 2000 for p in path.parent.iterdir())
    last = path.read_text().splitlines()[-1]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} photodupd\[\d+\]: INFO request op=features "
        r"items=1 errors=0 total_ms=1\.0 client=test conn=199",
        last,
    )
    assert "not at INFO" not in path.read_text()

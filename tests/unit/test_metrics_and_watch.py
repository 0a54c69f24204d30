"""``photodup-ctl metrics`` (Prometheus text) and the ``status --watch`` view, from a fixed
status: the metrics parse as the exposition format, the watch frame is compared with a
stored one (a snapshot), and the watch loop redraws and quits on its keys."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from typing import Any, cast

import pytest

from photodupd import metrics, protocol, watch

STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "pid": 4242,
    "uptime": 7380.0,
    "state": "ready",
    "model": "builtin:efficientnet_lite0/imagenet",
    "device": "cpu",
    "decode_workers": 2,
    "queue_depth": 3,
    "in_flight_items": 40,
    "in_flight_requests": 2,
    "connections": 3,
    "connections_total": 17,
    "images_served": 12345,
    "requests": 678,
    "request_errors": 1,
    "errors": 9,
    "batches": 400,
    "loads": 1,
    "unloads": 0,
    "load_seconds": 0.93,
    "recent_images_per_s": 21.5,
    "rss": 812 * 2**20,
    "max_queue": 1024,
    "decoder": {
        "busy": 1,
        "restarts": 2,
        "timeouts": 0,
        "crashes": 2,
        "decoded": 12350,
        "failed": 9,
    },
    "features_latency": {
        "window_s": 300.0,
        "count": 142,
        "p50_ms": 120.4,
        "p90_ms": 300.0,
        "p99_ms": 812.9,
        "total_count": 600,
        "total_ms": 90_000.0,
    },
    "history": [
        {
            "start": 1_700_000_040 + 60 * i,
            "seconds": 60.0,
            "images": 60 * i,
            "images_per_s": float(i),
            "requests": 2,
            "errors": 0,
            "p50_ms": 100.0,
            "p99_ms": 200.0,
            "rss": 800 * 2**20,
        }
        for i in range(6)
    ],
}

#: One frame of the watch view, 80 columns: what `photodup-ctl status --watch` draws.
FRAME = """\
photodupd 0.1.0  ready  builtin:efficientnet_lite0/imagenet
pid 4242, up 2h 03m, cpu, 2 decoders

queue     3 queued, 40 images in flight, 2 requests in flight
clients   3 connected, 17 since start
served    12,345 images, 678 requests, 9 image errors
latency   features p50 120 ms, p90 300 ms, p99 813 ms (142 in the last 5 min)

images/s  now 8.0, peak 24.0 (last 5 s)
   ▃▅█▃
RSS       838.9 MB, peak 943.7 MB
  ▇▇▇█▇▇

last 6 min, per minute: images/s peak 5.0, 12 requests, 0 errors
   ▂▃▅▆█

q or Ctrl-C: quit"""


def status() -> protocol.Status:
    return cast(protocol.Status, dict(STATUS))


def seen() -> watch.Samples:
    """Six polls a second apart: 0, 8, 16, 24, 8 images/s between them (after the first)."""
    samples = watch.Samples()
    served = 0
    for second, rate in enumerate([0, 0, 8, 16, 24, 8]):
        served += rate
        poll = {
            **STATUS,
            "images_served": served,
            "rss": (800 + (100 if second == 3 else 0)) * 2**20,
        }
        samples.add(cast(protocol.Status, poll), float(second))
    return samples


# --------------------------------------------------------------------------- metrics

LABEL = r'[a-z]+="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^(photodupd_[a-z_]+)(\{{{LABEL}(?:,{LABEL})*\}})? (\S+)$")


def parse(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """Families' types and samples' values; fails on any line the format does not allow."""
    types: dict[str, str] = {}
    values: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "summary") and name not in types
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        family = re.sub(r"_(sum|count)$", "", match.group(1))
        assert family in types or match.group(1) in types, f"sample before its TYPE: {line}"
        values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return types, values


def test_metrics_are_prometheus_text() -> None:
    types, values = parse(metrics.prometheus_text(status()))
    assert values["photodupd_up"] == 1
    assert types["photodupd_images_served_total"] == "counter"
    assert values["photodupd_images_served_total"] == 12345
    assert types["photodupd_resident_memory_bytes"] == "gauge"
    assert values["photodupd_resident_memory_bytes"] == 812 * 2**20
    assert values["photodupd_decoder_crashes_total"] == 2
    assert types["photodupd_features_duration_seconds"] == "summary"
    assert values['photodupd_features_duration_seconds{quantile="0.99"}'] == pytest.approx(0.8129)
    assert values["photodupd_features_duration_seconds_count"] == 600
    assert values["photodupd_features_duration_seconds_sum"] == pytest.approx(90.0)
    info = next(key for key in values if key.startswith("photodupd_info{"))
    assert 'model="builtin:efficientnet_lite0/imagenet"' in info and 'state="ready"' in info


def test_metrics_of_a_daemon_that_is_down_say_only_so() -> None:
    types, values = parse(metrics.prometheus_text(None))
    assert values == {"photodupd_up": 0.0} and types == {"photodupd_up": "gauge"}


def test_label_values_are_escaped() -> None:
    odd = cast(protocol.Status, {**STATUS, "model": 'clip:x"y\\z\nw'})
    _types, values = parse(metrics.prometheus_text(odd))
    assert any('model="clip:x\\"y\\\\z\\nw"' in key for key in values)


def test_no_latency_yet_is_nan_not_zero() -> None:
    quiet = {**STATUS, "features_latency": {**STATUS["features_latency"], "p50_ms": None}}
    text = metrics.prometheus_text(cast(protocol.Status, quiet))
    assert 'photodupd_features_duration_seconds{quantile="0.5"} NaN' in text


# --------------------------------------------------------------------------- watch


def test_the_watch_frame_matches_the_snapshot() -> None:
    assert "\n".join(watch.render(status(), seen(), width=80)) == FRAME


def test_the_watch_frame_fits_any_width() -> None:
    for width in (40, 80, 200):
        frame = watch.render(status(), seen(), width=width)
        assert all(len(line) <= width for line in frame)
        assert frame[-1] == "q or Ctrl-C: quit"


def test_a_daemon_that_is_not_answering_is_a_frame_too() -> None:
    frame = watch.render(None, watch.Samples(), 80, "connection refused")
    assert frame[0] == "photodupd is not answering: connection refused"


def test_rates_restart_with_a_new_daemon() -> None:
    """A restarted daemon counts from zero: no negative rate, no spike."""
    samples = watch.Samples()
    samples.add(cast(protocol.Status, {**STATUS, "images_served": 1000}), 0.0)
    samples.add(cast(protocol.Status, {**STATUS, "images_served": 1010}), 1.0)
    samples.add(cast(protocol.Status, {**STATUS, "pid": 1, "images_served": 5}), 2.0)
    samples.add(cast(protocol.Status, {**STATUS, "pid": 1, "images_served": 9}), 3.0)
    assert list(samples.rates) == [10.0, 4.0]


def test_sparkline_scales_to_the_peak() -> None:
    assert watch.sparkline([0, 1, 2, 4, 8], 10) == " ▁▂▄█"
    assert watch.sparkline([5, 5], 10) == "██"
    assert watch.sparkline([0, 0], 10) == "  "
    assert watch.sparkline([0, 1, 90, 99, 99], 3) == "▇██"


@pytest.fixture
def keys() -> Iterator[tuple[io.TextIOWrapper, int]]:
    read, write = os.pipe()
    reader = os.fdopen(read, "r")
    yield reader, write
    reader.close()
    os.close(write)


def test_the_loop_redraws_until_q(keys: tuple[io.TextIOWrapper, int]) -> None:
    reader, write = keys
    out = io.StringIO()
    polls = []

    def fetch() -> protocol.Status:
        polls.append(1)
        if len(polls) == 2:
            raise ConnectionRefusedError("daemon restarting")
        if len(polls) == 3:
            os.write(write, b"q")  # pressed while the third frame is up
        return status()

    assert watch.watch(fetch, keys=reader, out=out, interval=0.01, width=lambda: 80) == 0
    frames = out.getvalue().split("\x1b[H\x1b[2J")[1:]
    assert len(frames) == 3 == len(polls)
    assert frames[0].startswith("photodupd 0.1.0  ready")
    assert frames[1].startswith("photodupd is not answering: daemon restarting")
    assert frames[2].startswith("photodupd 0.1.0  ready")


def test_the_loop_ends_when_its_input_does() -> None:
    read, write = os.pipe()
    os.close(write)  # nothing will ever be typed: the reader sees the end of its input
    out = io.StringIO()
    with os.fdopen(read, "r") as reader:
        assert watch.watch(status, keys=reader, out=out, interval=5.0, width=lambda: 80) == 0
    assert out.getvalue().count("\x1b[H\x1b[2J") == 1


def test_plain_status_shows_the_recent_latency() -> None:
    from photodup_tui import ctl

    text = ctl.format_status(status())
    assert "  latency     features p50 120 ms, p99 813 ms (142 in the last 5 min)" in text
    quiet = {**STATUS, "features_latency": {**STATUS["features_latency"], "count": 0}}
    assert "latency" not in ctl.format_status(cast(protocol.Status, quiet))

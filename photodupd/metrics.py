"""``photodup-ctl metrics``: the daemon's counters in the Prometheus text format (torch-free).

No server: the text goes to stdout, for node_exporter's textfile collector, e.g. from a
timer: ``photodup-ctl metrics > /var/lib/node_exporter/photodupd.prom.tmp && mv ...``.
When the daemon does not answer, only ``photodupd_up 0`` is written, so a scraper sees
it down rather than stale numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from photodupd import protocol

PREFIX: Final = "photodupd_"

#: (metric, type, help, status key): the plain numbers of ``status``.
_NUMBERS: Final = (
    ("uptime_seconds", "gauge", "Seconds since photodupd started.", "uptime"),
    ("requests_total", "counter", "Requests read (every op).", "requests"),
    ("request_errors_total", "counter", "Requests answered with an error.", "request_errors"),
    ("images_served_total", "counter", "Images embedded.", "images_served"),
    ("image_errors_total", "counter", "Images answered with an error.", "errors"),
    ("batches_total", "counter", "Forward passes.", "batches"),
    ("connections", "gauge", "Clients connected now.", "connections"),
    ("connections_total", "counter", "Clients connected since the start.", "connections_total"),
    ("rejected_busy_total", "counter", "Connections refused: all slots taken.", "rejected_busy"),
    ("bad_frames_total", "counter", "Frames that broke the protocol.", "bad_frames"),
    ("queue_depth", "gauge", "Decoded images waiting for the model.", "queue_depth"),
    ("in_flight_items", "gauge", "Images admitted and not answered yet.", "in_flight_items"),
    ("in_flight_requests", "gauge", "Requests being served.", "in_flight_requests"),
    ("max_queue", "gauge", "Images admitted at most before busy.", "max_queue"),
    ("images_per_second", "gauge", "Images embedded per second, recently.", "recent_images_per_s"),
    ("resident_memory_bytes", "gauge", "Resident memory (RSS) of photodupd.", "rss"),
    ("model_loads_total", "counter", "Model loads.", "loads"),
    ("model_unloads_total", "counter", "Idle unloads of the model.", "unloads"),
    ("model_load_seconds", "gauge", "How long the last model load took.", "load_seconds"),
)
#: The decoder pool's counters (``status``' ``decoder``).
_DECODER: Final = (
    ("decoder_busy", "gauge", "Decoder processes decoding now.", "busy"),
    ("decoder_decoded_total", "counter", "Images the decoders decoded.", "decoded"),
    ("decoder_failed_total", "counter", "Images the decoders refused.", "failed"),
    ("decoder_timeouts_total", "counter", "Decoders killed for taking too long.", "timeouts"),
    ("decoder_crashes_total", "counter", "Decoder processes that died.", "crashes"),
    ("decoder_restarts_total", "counter", "Decoder processes started again.", "restarts"),
)


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return repr(float(value)) if isinstance(value, float) else str(value)


def _family(lines: list[str], name: str, kind: str, text: str, samples: list[str]) -> None:
    if samples:
        lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}", *samples]


def prometheus_text(status: protocol.Status | None) -> str:
    """The exposition text for one ``status`` (None: the daemon does not answer)."""
    lines: list[str] = []
    _family(lines, "up", "gauge", "1 when photodupd answered.", [f"{PREFIX}up {int(bool(status))}"])
    if status is None:
        return "\n".join(lines) + "\n"
    info = (
        f'{PREFIX}info{{version="{_escape(status.get("version", ""))}",'
        f'model="{_escape(status.get("model") or "")}",'
        f'state="{_escape(status.get("state", ""))}",device="{_escape(status.get("device") or "")}"}} 1'
    )
    _family(lines, "info", "gauge", "The version, model and state of photodupd.", [info])
    fields: Mapping[str, Any] = status
    for name, kind, text, key in _NUMBERS:
        value = _number(fields.get(key))
        if value is not None:
            _family(lines, name, kind, text, [f"{PREFIX}{name} {value}"])
    decoder = fields.get("decoder")
    if isinstance(decoder, dict):
        for name, kind, text, key in _DECODER:
            value = _number(decoder.get(key))
            if value is not None:
                _family(lines, name, kind, text, [f"{PREFIX}{name} {value}"])
    latency = fields.get("features_latency")
    if isinstance(latency, dict):
        _family(
            lines, "features_duration_seconds", "summary", _summary_help(latency), _summary(latency)
        )
    return "\n".join(lines) + "\n"


def _summary_help(latency: Mapping[str, Any]) -> str:
    window = float(latency.get("window_s") or 0)
    return f"Time to answer features requests (quantiles over the last {window:.0f} s)."


def _summary(latency: Mapping[str, Any]) -> list[str]:
    name = f"{PREFIX}features_duration_seconds"
    samples = []
    for quantile, key in (("0.5", "p50_ms"), ("0.9", "p90_ms"), ("0.99", "p99_ms")):
        value = latency.get(key)
        shown = "NaN" if not isinstance(value, int | float) else repr(value / 1000.0)
        samples.append(f'{name}{{quantile="{quantile}"}} {shown}')
    total_ms = latency.get("total_ms")
    count = latency.get("total_count")
    if isinstance(total_ms, int | float) and isinstance(count, int):
        samples += [f"{name}_sum {total_ms / 1000.0!r}", f"{name}_count {count}"]
    return samples

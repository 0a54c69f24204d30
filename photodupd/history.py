"""What photodupd did, request by request and minute by minute (torch-free).

The server hands every finished request to :class:`History` (its ``_finished`` hook):

* one log line per request (:func:`log_line`), at INFO, so ``--log-level WARNING``
  quiets it; ``status`` and ``ping`` (what ``photodup-ctl status --watch`` sends every
  second) are logged at DEBUG, or a watch would write 3,600 lines an hour;
* a per-minute history of the last hour: images, requests, errors, the p50/p99 latency of
  ``features`` requests and the largest RSS seen, in ``status`` as ``history``;
* the latency percentiles of recent ``features`` requests and running totals, in
  ``status`` as ``features_latency`` (``photodup-ctl metrics`` turns them into a summary).

No timer runs for any of this: an idle daemon does not wake up to keep its history.
Minutes are filled in when a request finishes or ``status`` is asked, and quiet minutes
are reported as zeros.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from photodupd import protocol

#: Minutes of history ``status`` carries.
MINUTES: Final = 60
#: Seconds of ``features`` latencies the percentiles of ``features_latency`` cover.
LATENCY_WINDOW: Final = 300.0
#: Latencies kept per minute (and in the window): beyond this a uniform sample, so a
#: burst of tiny requests cannot grow the daemon's memory.
MAX_SAMPLES: Final = 4096
#: Ops that monitoring sends (the watch view polls ``status`` every second): not counted
#: as requests in the history, logged at DEBUG.
MONITORING_OPS: Final = frozenset({protocol.STATUS.name, protocol.PING.name})
#: Longest client name a log line quotes.
CLIENT_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class Finished:
    """One finished request, as the log line and the history see it."""

    op: str
    connection: int
    client: str | None  # what the client's hello called it
    total_ms: float  # from the start of its handling to its reply being sent
    items: int = 0  # images asked for (features)
    failed_items: int = 0  # of those, answered with an error
    error: str | None = None  # the code of an error reply; "cancelled" if it never ended
    wait_ms: float | None = None  # features only: see protocol.Timing
    model_ms: float | None = None

    @property
    def errors(self) -> int:
        return self.failed_items + (1 if self.error is not None else 0)

    @property
    def images(self) -> int:
        """Images embedded: the items answered with an embedding."""
        return 0 if self.error is not None else self.items - self.failed_items


def log_line(done: Finished) -> str:
    """``request op=features items=32 errors=1 wait_ms=12.0 model_ms=380.5 total_ms=450.2
    client=photodup/0.1.0 conn=3``: ``key=value`` fields, one line, for grep and awk."""
    fields = [f"op={_token(done.op)}"]
    if done.items:
        fields.append(f"items={done.items}")
    fields.append(f"errors={done.errors}")
    if done.error is not None:
        fields.append(f"error={_token(done.error)}")
    if done.wait_ms is not None:
        fields.append(f"wait_ms={done.wait_ms:.1f}")
    if done.model_ms is not None:
        fields.append(f"model_ms={done.model_ms:.1f}")
    fields.append(f"total_ms={done.total_ms:.1f}")
    fields.append(f"client={_token(done.client) if done.client else '-'}")
    fields.append(f"conn={done.connection}")
    return "request " + " ".join(fields)


def _token(text: str) -> str:
    """A client-chosen string made safe for one ``key=value`` field: no spaces, no control
    characters (a hostile client must not forge log lines), at most CLIENT_CHARS."""
    clean = "".join(c if c.isprintable() and not c.isspace() and c != "=" else "?" for c in text)
    return clean[:CLIENT_CHARS] or "?"


def percentile(values: Sequence[float], percent: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class _Minute:
    start: int
    images: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    latency_seen: int = 0  # latencies offered, for the uniform sample beyond MAX_SAMPLES
    rss: int | None = None


class History:
    """The last hour, minute by minute, and the recent latencies of ``features``.

    Event-loop only (the server's), so no lock.  ``clock`` is wall-clock time: minutes
    are calendar minutes, so two daemons' histories line up.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._started = clock()
        self._minutes: deque[_Minute] = deque(maxlen=MINUTES)
        self._latencies: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)
        self._total_count = 0
        self._total_ms = 0.0
        self._random = random.Random(0)  # the sample need not be secret, only uniform

    def record(self, done: Finished) -> None:
        """Count one finished request in its minute."""
        now = self._clock()
        minute = self._minute(now)
        minute.errors += done.errors
        if done.op in MONITORING_OPS:
            return
        minute.requests += 1
        minute.images += done.images
        if done.op == protocol.FEATURES.name and done.error is None:
            minute.latency_seen += 1
            self._sample(minute, done.total_ms)
            self._latencies.append((now, done.total_ms))
            self._total_count += 1
            self._total_ms += done.total_ms

    def sample_rss(self, rss: int | None) -> None:
        """Note the resident memory now; each minute keeps the largest it saw."""
        if rss is None:
            return
        minute = self._minute(self._clock())
        minute.rss = rss if minute.rss is None else max(minute.rss, rss)

    def status(self) -> protocol.MonitorStatus:
        now = self._clock()
        return {"history": self._history(now), "features_latency": self._latency(now)}

    # ------------------------------------------------------------------ internals

    def _minute(self, now: float) -> _Minute:
        start = int(now // 60) * 60
        if not self._minutes or self._minutes[-1].start < start:
            self._minutes.append(_Minute(start))
        return self._minutes[-1]

    def _sample(self, minute: _Minute, value: float) -> None:
        if len(minute.latencies) < MAX_SAMPLES:
            minute.latencies.append(value)
            return
        slot = self._random.randrange(minute.latency_seen)  # reservoir sampling
        if slot < MAX_SAMPLES:
            minute.latencies[slot] = value

    def _history(self, now: float) -> list[protocol.MinuteStats]:
        current = int(now // 60) * 60
        first = max(int(self._started // 60) * 60, current - (MINUTES - 1) * 60)
        kept = {m.start: m for m in self._minutes}
        rows = []
        for start in range(first, current + 1, 60):
            minute = kept.get(start, _Minute(start))
            seconds = max(min(now, start + 60.0) - max(self._started, float(start)), 1e-3)
            rows.append(
                protocol.MinuteStats(
                    start=start,
                    seconds=round(seconds, 3),
                    images=minute.images,
                    images_per_s=round(minute.images / seconds, 3),
                    requests=minute.requests,
                    errors=minute.errors,
                    p50_ms=_rounded(percentile(minute.latencies, 50)),
                    p99_ms=_rounded(percentile(minute.latencies, 99)),
                    rss=minute.rss,
                )
            )
        return rows

    def _latency(self, now: float) -> protocol.Latency:
        while self._latencies and self._latencies[0][0] < now - LATENCY_WINDOW:
            self._latencies.popleft()
        recent = [ms for _, ms in self._latencies]
        return {
            "window_s": LATENCY_WINDOW,
            "count": len(recent),
            "p50_ms": _rounded(percentile(recent, 50)),
            "p90_ms": _rounded(percentile(recent, 90)),
            "p99_ms": _rounded(percentile(recent, 99)),
            "total_count": self._total_count,
            "total_ms": round(self._total_ms, 3),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

"""The --no-model feature source: perceptual hashes computed here, no daemon, no embeddings.

This is what runs when the user wants speed over recall, and what the CLI falls back to
when the daemon cannot start.  Files are decoded by the daemon's own isolated decoder pool
(``photodupd.decodepool``): each in a worker process with an address-space cap and a time
limit, so a decoder that crashes, hangs or balloons costs that one file
(``decoder_crashed``, ``timeout``, ``too_large``), never the scan; a fresh worker takes its
place.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait

from photodup_tui.engine.features import FeatureResult, PathFeed
from photodup_tui.engine.settings import LOCAL_MODEL_ID
from photodupd import rawimage
from photodupd.config import DaemonConfig
from photodupd.decodepool import DEFAULT_DECODE_FN, DecoderPool
from photodupd.imaging import Decoded, DecodeSpec, ImageError
from photodupd.protocol import FeatureItem

#: Files queued per worker: enough to keep every worker busy, few enough to cancel fast.
IN_FLIGHT_PER_WORKER = 4
#: How long to wait for a decode before looking for new paths from a scan still deciding.
FEED_POLL = 0.05
#: The same limits the daemon's decoders have by default.
DEFAULT_TIMEOUT = DaemonConfig().decode_timeout
DEFAULT_MEMORY_MB = DaemonConfig().decode_memory_mb


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


class LocalFeatureSource:
    model_id = LOCAL_MODEL_ID

    def __init__(
        self,
        workers: int | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        memory_mb: int = DEFAULT_MEMORY_MB,
        decode_fn: str = DEFAULT_DECODE_FN,
    ) -> None:
        """``decode_fn`` ("module:function", called as ``fn(FeatureItem, DecodeSpec)`` in the
        workers) is for tests that need a decoder which misbehaves."""
        self.workers = workers or _default_workers()
        self.decodes_raw = rawimage.available()  # the decoders are processes of this Python
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.decode_fn = decode_fn

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        self.compute_feed(PathFeed(paths, closed=True), on_result, cancel)

    def compute_feed(
        self,
        feed: PathFeed,
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        """Decode what ``feed`` gives as it gives it; no decoder starts before a path comes."""
        capacity = IN_FLIGHT_PER_WORKER * self.workers
        first = feed.first(capacity, cancel)
        if first is None:
            return
        queued, feeding = deque(first), True
        in_flight: dict[Future[Decoded], str] = {}
        with DecoderPool(self.workers, self.timeout, self.memory_mb, self.decode_fn) as pool:
            while not cancel.is_set():
                room = capacity - len(queued) - len(in_flight)
                if feeding and room > 0:
                    # Wait on the feed only when no decode runs that could be waited on.
                    more = feed.take(room, timeout=0 if in_flight else FEED_POLL)
                    feeding = more is not None
                    queued.extend(more or ())
                while queued and len(in_flight) < capacity:
                    path = queued.popleft()
                    # The pixel checks' thumbnail from the same decode.
                    job = pool.submit(FeatureItem(path=path), DecodeSpec(thumb=True))
                    in_flight[job] = path
                if not in_flight:
                    if not feeding:
                        return
                    continue
                timeout = FEED_POLL if feeding else 0.25
                done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    on_result(in_flight.pop(future), _result(future))


def _result(future: Future[Decoded]) -> FeatureResult:
    try:
        decoded = future.result()
    except ImageError as exc:
        return FeatureResult.failure(str(exc.code), exc.message)
    return FeatureResult.from_decoded(decoded)

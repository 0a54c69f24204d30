"""The --no-model feature source: perceptual hashes computed here, no daemon, no embeddings.

This is what runs when the user wants speed over recall, and what the CLI falls back to
when the daemon cannot start.  Decoding happens in ``photodupd.imaging.decode`` (the same
hardened decoder the daemon uses) inside worker processes, so a crashing decoder takes down
a worker, not the scan: the pool is rebuilt, the innocent files of the broken batch are
retried one by one, and the file that broke it alone is reported as ``decoder_crashed``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.settings import LOCAL_MODEL_ID

CHUNK = 8  # files per task: amortises the IPC, stays responsive to cancel


def decode_file(path: str) -> FeatureResult:
    """Worker side: the features of one file, or why it has none."""
    from photodupd import imaging

    try:
        decoded = imaging.decode(path, spec=None)
    except imaging.ImageError as exc:
        return FeatureResult.failure(str(exc.code), exc.message)
    except Exception as exc:  # a decoder bug must not lose the other files
        return FeatureResult.failure("internal", f"{type(exc).__name__}: {exc}")
    return FeatureResult.from_decoded(decoded)


def decode_chunk(
    paths: Sequence[str], decoder: Callable[[str], FeatureResult] = decode_file
) -> list[tuple[str, FeatureResult]]:
    """Worker side: one result per path, never an exception for the batch."""
    return [(path, decoder(path)) for path in paths]


def _default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


class LocalFeatureSource:
    model_id = LOCAL_MODEL_ID

    def __init__(
        self,
        workers: int | None = None,
        chunk: int = CHUNK,
        decoder: Callable[[str], FeatureResult] = decode_file,
    ) -> None:
        """``decoder`` runs in the worker processes, so it must be a module-level function."""
        self.workers = workers or _default_workers()
        self.chunk = max(1, chunk)
        self.decoder = decoder

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        # (paths, alone): "alone" chunks are retries of a batch that broke the pool; they run
        # one at a time so the file that breaks the pool again is the one to blame.
        pending: deque[_Chunk] = deque(
            (list(paths[i : i + self.chunk]), False) for i in range(0, len(paths), self.chunk)
        )
        while pending and not cancel.is_set():
            for chunk, alone in self._run_pool(pending, on_result, cancel):
                if alone:
                    crashed = FeatureResult.failure("decoder_crashed", "the decoder process died")
                    on_result(chunk[0], crashed)
                else:
                    pending.extend(([path], True) for path in chunk)

    def _run_pool(
        self,
        pending: deque[_Chunk],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> list[_Chunk]:
        """Work through ``pending`` until it drains, the user cancels or the pool breaks;
        returns the chunks whose results a broken pool lost."""
        context = multiprocessing.get_context("spawn")
        in_flight: dict[Future[list[tuple[str, FeatureResult]]], _Chunk] = {}
        lost: list[_Chunk] = []
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            while (pending or in_flight) and not cancel.is_set() and not lost:
                while pending and len(in_flight) < 2 * self.workers:
                    if pending[0][1] and in_flight:
                        break
                    item = pending.popleft()
                    in_flight[pool.submit(decode_chunk, item[0], self.decoder)] = item
                    if item[1]:
                        break
                done, _ = wait(in_flight, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    lost.extend(_deliver(future, in_flight.pop(future), on_result))
            if lost:  # the pool is broken: collect what finished, the rest is lost
                for future, item in in_flight.items():
                    lost.extend(_deliver(future, item, on_result))
            else:
                for future in in_flight:
                    future.cancel()
        return lost


_Chunk = tuple[list[str], bool]


def _deliver(
    future: Future[list[tuple[str, FeatureResult]]],
    item: _Chunk,
    on_result: Callable[[str, FeatureResult], None],
) -> list[_Chunk]:
    try:
        results = future.result()
    except BrokenProcessPool:
        return [item]
    for path, result in results:
        on_result(path, result)
    return []

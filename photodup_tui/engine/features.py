"""The seam between the engine and whatever computes image features.

A :class:`FeatureSource` turns paths into :class:`FeatureResult` values: the daemon
(``daemon_features.DaemonFeatureSource``: embeddings from a model) or the local
perceptual-hash mode (``local_features.LocalFeatureSource``).  The scanner accepts any of
them, caches results per ``model_id`` and never asks twice for an unchanged file.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from photodupd.imaging import Decoded

#: Item errors that describe the file itself, so they are cached like a result: asking again
#: about the same bytes gives the same answer.  Others (timeouts, crashes, busy, permission)
#: may succeed next time and are asked again on the next scan.
PERMANENT_ERRORS = frozenset({"not_an_image", "unsupported_format", "truncated", "too_large"})


@dataclass(frozen=True)
class FeatureResult:
    """What we learn about one file by decoding it."""

    embedding: np.ndarray | None  # float32, L2-normalised; None in no-model mode
    phash: int | None  # 64-bit unsigned perceptual hash
    width: int | None
    height: int | None
    format: str | None  # Pillow format name
    taken: str | None  # EXIF DateTimeOriginal, ISO 8601
    camera: str | None
    exif_fields: int
    error_code: str | None = None  # protocol ErrorCode value when the file could not be used
    error_message: str | None = None
    #: The pixel checks' thumbnail, packed (photodupd.pixelthumb), made by the same decode;
    #: None when the source gave none (an older daemon): the checks then decode the file.
    thumb: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @classmethod
    def from_decoded(cls, decoded: Decoded, embedding: np.ndarray | None = None) -> FeatureResult:
        return cls(
            embedding=embedding,
            phash=decoded.phash,
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
            taken=decoded.taken,
            camera=decoded.camera,
            exif_fields=decoded.exif_fields,
            thumb=decoded.thumb,
        )

    @classmethod
    def failure(cls, code: str, message: str) -> FeatureResult:
        return cls(None, None, None, None, None, None, None, 0, code, message)


class FeatureSource(Protocol):
    model_id: str  # cache key, e.g. "builtin:efficientnet_lite0/imagenet" or "local:phash-v1"
    #: Whether the decoders this source uses read RAW camera files (rawpy installed where
    #: they run: on the daemon's computer, which need not be this one).
    decodes_raw: bool

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        """Call ``on_result`` once per path (any order, any thread) until done or cancelled.

        One bad file is a failed result for that path, never an exception for the batch.
        """
        ...


class PathFeed:
    """Paths handed to a source while the scan is still deciding about others.

    The scan puts each path once, when it knows the path must be asked about (its content
    is unique, or it stands for its byte-identical replicas), and closes the feed when no
    more will come.  A streaming source takes them as they come (``take``), so the daemon
    decodes while the scan still walks and hashes.
    """

    def __init__(self, paths: Iterable[str] = (), *, closed: bool = False) -> None:
        self._ready: deque[str] = deque(paths)
        self.total = len(self._ready)  # paths ever put
        self._closed = closed
        self._changed = threading.Condition()

    def put(self, path: str) -> None:
        with self._changed:
            if self._closed:
                raise RuntimeError("put on a closed feed")
            self._ready.append(path)
            self.total += 1
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, most: int, timeout: float | None = None) -> list[str] | None:
        """Up to ``most`` paths, waiting at most ``timeout`` seconds for the first one:
        [] when none came in time, None once the feed is closed and empty."""
        with self._changed:
            if not self._ready and not self._closed:
                self._changed.wait(timeout)
            if not self._ready:
                return None if self._closed else []
            count = min(most, len(self._ready))
            return [self._ready.popleft() for _ in range(count)]

    def first(self, most: int, cancel: threading.Event) -> list[str] | None:
        """The first paths, however long they take; None when none will come (closed, or
        cancelled): a source connects to nothing before it has something to ask."""
        while not cancel.is_set():
            got = self.take(most, timeout=0.1)
            if got is None or got:
                return got
        return None


class StreamingFeatureSource(FeatureSource, Protocol):
    """A source that can start on the first paths while the scan decides the rest."""

    def compute_feed(
        self,
        feed: PathFeed,
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        """``compute`` over the paths ``feed`` gives, as it gives them, until it is closed
        and empty or ``cancel`` is set."""
        ...

"""Test-only feature sources: a counting wrapper and a tiny in-process "model"."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from photodup_tui.engine.features import FeatureResult, FeatureSource, PathFeed
from photodupd import imaging, rawimage
from photodupd.imaging import Decoded, PreprocessSpec
from photodupd.protocol import FeatureItem


class Counting:
    """Wraps a source and records every path it was asked about."""

    def __init__(self, inner: FeatureSource, *, decodes_raw: bool | None = None) -> None:
        """``decodes_raw`` overrides the inner source's: a daemon elsewhere, with or without
        rawpy, whatever this process has."""
        self.inner = inner
        self.model_id = inner.model_id
        self.decodes_raw = inner.decodes_raw if decodes_raw is None else decodes_raw
        self.requested: list[str] = []
        self.calls = 0

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        self.calls += 1
        self.requested.extend(paths)
        self.inner.compute(paths, on_result, cancel)


class Streaming:
    """A streaming source (``compute_feed``) over ``inner``: it takes each path as soon as
    the scan feeds it, records it (``asked``, ``first_asked``), and hears ``inner``'s result
    through ``answered`` (called after the scan's own callback)."""

    def __init__(
        self,
        inner: FeatureSource,
        answered: Callable[[str], None] | None = None,
    ) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.decodes_raw = inner.decodes_raw
        self.asked: list[str] = []
        self.first_asked = threading.Event()
        self._answered = answered or (lambda _path: None)

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
        def answer(path: str, result: FeatureResult) -> None:
            on_result(path, result)
            self._answered(path)

        while not cancel.is_set():
            paths = feed.take(1, timeout=0.05)
            if paths is None:
                return
            for path in paths:
                self.asked.append(path)
                self.first_asked.set()
                self.inner.compute([path], answer, cancel)


class ThumbnailModel:
    """Embeddings without torch: the centred 16x16 grey thumbnail, L2-normalised.

    Crude, but resized and re-encoded copies of a picture land at cosine ~0.99 and different
    synthetic photos far lower, which is all the scan tests need from a model.
    """

    model_id = "test:thumbnail16"

    @property
    def decodes_raw(self) -> bool:
        return rawimage.available()  # it decodes with photodupd.imaging, in this process

    def __init__(self, results: dict[str, FeatureResult] | None = None) -> None:
        self.overrides = results or {}

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        for path in paths:
            if cancel.is_set():
                return
            on_result(path, self.overrides.get(path) or embed(path))


def embed(path: str) -> FeatureResult:
    try:
        decoded = imaging.decode(path, spec=None)
    except imaging.ImageError as exc:
        return FeatureResult.failure(str(exc.code), exc.message)
    with Image.open(path) as image:
        grey = np.asarray(
            image.convert("L").resize((16, 16), Image.Resampling.BILINEAR), np.float32
        )
    vector = (grey - grey.mean()).ravel()
    vector /= max(float(np.linalg.norm(vector)), 1e-6)
    return FeatureResult.from_decoded(decoded, vector.astype(np.float32))


def misbehaving_decoder(item: FeatureItem, spec: PreprocessSpec | None) -> Decoded:
    """Runs in a decoder worker: dies on files named "crash*", hangs on "hang*", else a fake
    result whose pHash is the path's length."""
    import os
    import threading

    path = os.fsdecode(item.path or b"")
    name = os.path.basename(path)
    if name.startswith("crash"):
        os._exit(3)  # what a segfaulting native decoder looks like from outside
    if name.startswith("hang"):
        threading.Event().wait()
    return Decoded(None, len(path), 1, 1, "JPEG")

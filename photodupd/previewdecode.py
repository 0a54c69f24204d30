"""Previews for the UI, decoded in an isolated process (docs/safety.md rule 21).

A preview decodes the same untrusted file the daemon's decoders do, and at a larger size:
a hostile or broken file that crashes, hangs or balloons the decoder must cost that one
preview ("cannot show this photo"), never the app holding the user's review.  So the UI
decodes through :class:`~photodupd.decodepool.IsolatedPool`: one worker process with the
daemon's address-space cap and time limit, started on the first preview and kept for the
app's life (a fresh interpreter costs ~0.3 s; a review asks for dozens of previews).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from photodupd.config import DaemonConfig
from photodupd.decodepool import IsolatedPool
from photodupd.imaging import load_preview

#: The worker side, as the pool resolves it in its child process.
PREVIEW_FN = "photodupd.previewdecode:decode_preview"


@dataclass(frozen=True, slots=True)
class PreviewJob:
    path: str
    max_side: int


def decode_preview(job: PreviewJob, _spec: object = None) -> Image.Image:
    """Worker side: the upright picture of ``job.path`` fitting ``job.max_side``; raises
    :class:`~photodupd.imagebase.ImageError` as :func:`~photodupd.imaging.load_preview` does."""
    picture = load_preview(job.path, job.max_side)
    picture.load()
    return picture


class IsolatedPreviewLoader:
    """A ``PreviewLoader`` (``(path, max_side) -> Image``) that decodes in a worker process.

    Blocking: call it from a worker thread, never from the UI's event loop.  Item errors
    (unreadable, not an image, ``timeout``, ``too_large``, ``decoder_crashed``) are raised as
    :class:`~photodupd.imagebase.ImageError`; a fresh worker serves the next preview."""

    def __init__(
        self,
        *,
        workers: int = 1,
        timeout: float | None = None,
        memory_mb: int | None = None,
        function: str = PREVIEW_FN,
    ) -> None:
        """``function`` is for tests that need a decoder which misbehaves."""
        limits = DaemonConfig()
        self._pool = IsolatedPool(
            workers,
            timeout if timeout is not None else limits.decode_timeout,
            memory_mb if memory_mb is not None else limits.decode_memory_mb,
            function,
            Image.Image,
        )

    def __call__(self, path: str, max_side: int) -> Image.Image:
        return self._pool.submit(PreviewJob(path, max_side)).result()

    def close(self) -> None:
        """Stop the worker process (queued previews fail with ``shutting_down``)."""
        self._pool.close()

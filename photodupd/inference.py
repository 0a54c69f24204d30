"""The inference service: admission, model control and status, on the event loop.

Shape of the pipeline::

    features(items)            (event loop: admission only, never decodes or runs the model)
      -> DecoderPool.submit    (isolated worker processes: decode + preprocess)
      -> ModelWorker.submit    (decoded items, bounded by admission: config.max_queue)
      -> the model thread      (photodupd.batcher: micro-batches across requests and clients)
      -> loop.call_soon_threadsafe -> the request's future

This module decides what gets in (the queue bound, model switches that drain
first, shutdown), keeps each request's results, and answers ``load``,
``pull``, ``status`` and ``models``.  The model thread in
:mod:`photodupd.batcher` owns the model and does the embedding; each item's
outcome comes back typed and is written here in the reply's shape.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from photodupd import pixelcodec, protocol
from photodupd.batcher import Embedded, Job, ModelWorker, Outcome
from photodupd.config import DaemonConfig
from photodupd.imaging import Decoded, DecodeSpec, ImageError, PreprocessSpec
from photodupd.models import catalog
from photodupd.protocol import ErrorCode, FeatureItem, ItemError, ModelState, ServiceError

if TYPE_CHECKING:
    from photodupd.decodepool import DecoderPool

__all__ = ["InferenceService"]

log = logging.getLogger("photodupd.inference")


@dataclass(eq=False)
class _Request:
    """One features request: its per-item results and the future its caller awaits."""

    results: list[protocol.ItemResult | None]
    remaining: int
    done: asyncio.Future[None]
    model: tuple[str, int] | None = None  # (id, dim) of the model that embedded its items
    failure: ServiceError | None = None
    waited: float = 0.0  # seconds: the longest an item waited for its forward pass
    model_seconds: float = 0.0  # its share of forward-pass time


class InferenceService:
    """Serves ``features`` requests with one model; see the module docstring for the shape."""

    on_ready: Callable[[], None] | None

    def __init__(self, config: DaemonConfig, *, decoder_pool: DecoderPool | None = None) -> None:
        self.config = config
        self.on_ready = None
        self._pool = decoder_pool  # the service starts and closes it, injected or not
        # Pixels items (a remote client made the model's input): inflated off the loop.
        self._unpacker = concurrent.futures.ThreadPoolExecutor(1, "photodupd-pixels")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker = ModelWorker(
            config,
            reply=self._reply_job,
            on_state_change=self._notify_state_threadsafe,
            pending_items=lambda: self._pending_items,
        )
        # Event-loop only.
        self._pending_items = 0  # admitted, not yet answered (read by the model thread too)
        self._errors = 0  # items answered with an error
        self._requests: set[_Request] = set()
        self._closing = False
        self._announced_ready = False
        self._state_event: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._gate: asyncio.Event | None = None  # cleared while a model switch drains
        self._switch_lock: asyncio.Lock | None = None
        self._releasing: asyncio.Task[None] | None = None  # decoders stopping after an unload

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the model thread (the model loads in the background); the decoder pool's
        processes start with the first request and stop with the model on idle unload."""
        self._loop = asyncio.get_running_loop()
        self._state_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._switch_lock = asyncio.Lock()
        if self._pool is None:
            from photodupd.decodepool import DecoderPool

            self._pool = DecoderPool(
                self.config.decode_workers, self.config.decode_timeout, self.config.decode_memory_mb
            )
        self._worker.start()

    async def wait_ready(self) -> protocol.ModelInfo:
        """Wait for the first model load; raises MODEL_UNAVAILABLE if it failed."""
        while True:
            state, spec, error = self._worker.readiness()
            if state is ModelState.FAILED:
                raise ServiceError(ErrorCode.MODEL_UNAVAILABLE, error or "the model failed to load")
            # After an idle unload the model is still "ready" for callers: it reloads on demand.
            if state is ModelState.READY or (state is ModelState.UNLOADED and spec is not None):
                return self._worker.public_info()
            await self._state_changed().wait()

    async def close(self, drain_timeout: float) -> None:
        """Stop taking work, let in-flight items finish for up to ``drain_timeout`` seconds,
        fail what is left with SHUTTING_DOWN, then stop the model thread and the pool."""
        if self._closing:
            return
        self._closing = True
        if self._drained is not None and self._pending_items:
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
            except TimeoutError:
                log.warning("drain timed out with %d items in flight", self._pending_items)
        gone = ServiceError(ErrorCode.SHUTTING_DOWN, "photodupd is stopping")
        for request in list(self._requests):
            request.failure = request.failure or gone
            if not request.done.done():
                request.done.set_result(None)
        self._requests.clear()
        self._worker.stop()
        await asyncio.to_thread(self._worker.join, 30.0)
        self._unpacker.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
        if self._releasing is not None:
            await asyncio.gather(self._releasing, return_exceptions=True)

    # ------------------------------------------------------------------ requests

    async def features(self, items: list[FeatureItem], thumbs: bool = False) -> protocol.Features:
        """Embed ``items``; one bad image is a per-item error, never a failed request.
        ``thumbs``: each file's decode makes its pixel-check thumbnail too, and its reply
        item carries it."""
        await self._wait_until_admissible()
        assert self._pool is not None and self._drained is not None
        if not items:
            return {"model": self._worker.identity(), "items": [], "timing": _timing(None)}
        # Admission is the bound on the queue: every admitted item holds a slot until answered.
        # A lone request bigger than the queue is still let in so it cannot starve.
        if self._pending_items and self._pending_items + len(items) > self.config.max_queue:
            raise ServiceError(
                ErrorCode.BUSY,
                f"queue full ({self._pending_items} of {self.config.max_queue} items); retry later",
            )
        _state, spec, _error = self._worker.readiness()
        if self._worker.reload_if_unloaded():
            self._notify_state()  # reloading while the items decode, rather than after
        loop = asyncio.get_running_loop()
        request = _Request([None] * len(items), len(items), loop.create_future())
        self._requests.add(request)
        self._pending_items += len(items)
        self._drained.clear()
        for index, item in enumerate(items):
            try:
                decoding = self._decode(item, spec, thumbs)
            except Exception as exc:  # pool closed or broken: this item fails, the rest go on
                self._finish_item(request, index, ItemError(ErrorCode.INTERNAL, f"decoder: {exc}"))
                continue
            decoding.add_done_callback(functools.partial(self._on_decoded, request, index))
        # The items hold their queue slots until answered, even if this caller goes away.
        await asyncio.shield(request.done)
        if request.failure is not None:
            raise request.failure
        used = request.model
        return {
            "model": {"id": used[0], "dim": used[1]} if used else self._worker.identity(),
            "items": [
                r if r is not None else ItemError(ErrorCode.INTERNAL, "lost").reply()
                for r in request.results
            ],
            "timing": _timing(request),
        }

    def _decode(
        self, item: FeatureItem, spec: PreprocessSpec | None, thumbs: bool = False
    ) -> concurrent.futures.Future[Decoded]:
        """A file (path or bytes) goes to the isolated decoders (which make its thumbnail in
        the same decode when asked); a pixels item is already the model's input, made by the
        client: no image parser runs on it, only a bounded inflate and a size check
        (pixelcodec), on a thread of its own, and it has no thumbnail."""
        assert self._pool is not None
        if item.pixels is None:
            return self._pool.submit(item, DecodeSpec(spec, thumb=True) if thumbs else spec)
        return self._unpacker.submit(pixelcodec.decoded_from_item, item, spec)

    def _check_open(self) -> None:
        if self._closing:
            raise ServiceError(ErrorCode.SHUTTING_DOWN, "photodupd is stopping")
        if self._loop is None:
            raise ServiceError(ErrorCode.INTERNAL, "the inference service was not started")

    async def _wait_until_admissible(self) -> None:
        """Wait while a model switch drains, and until the model's input spec is known
        (the first load is done): from then on items can be decoded, even while an idle
        model reloads."""
        assert self._gate is not None
        while True:
            self._check_open()
            if not self._gate.is_set():
                await self._gate.wait()
                continue
            state, spec, error = self._worker.readiness()
            if state is ModelState.FAILED:
                raise ServiceError(ErrorCode.MODEL_UNAVAILABLE, error or "the model failed to load")
            if spec is not None:
                return
            await self._state_changed().wait()

    def _on_decoded(
        self, request: _Request, index: int, future: concurrent.futures.Future[Decoded]
    ) -> None:
        """Runs in whichever thread finished the decode: queue the item or report its error.
        Every path answers the item, or its request would wait forever."""
        try:
            decoded = future.result()
        except ImageError as exc:
            self._post(request, index, ItemError.of(exc.code, exc.message))
        except concurrent.futures.CancelledError:
            self._post(request, index, ItemError(ErrorCode.SHUTTING_DOWN, "decoding was cancelled"))
        except Exception as exc:  # a bug in the pool; the item fails, the daemon carries on
            log.exception("decoder pool failed on an item")
            self._post(
                request, index, ItemError(ErrorCode.INTERNAL, f"decoder: {type(exc).__name__}")
            )
        else:
            self._worker.submit(Job(request, index, decoded))

    def _reply_job(self, job: Job, outcome: Outcome) -> None:
        """The model thread's answer for one item."""
        self._post(cast(_Request, job.owner), job.index, outcome)

    def _post(self, request: _Request, index: int, outcome: Outcome) -> None:
        """From any thread: hand one item's outcome to the loop."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(self._finish_item, request, index, outcome)

    def _finish_item(self, request: _Request, index: int, outcome: Outcome) -> None:
        """On the loop: record one item's outcome and release its queue slot."""
        if request.results[index] is not None:
            return
        if isinstance(outcome, Embedded):
            request.results[index] = _embedded_item(outcome)
            request.waited = max(request.waited, outcome.waited)
            request.model_seconds += outcome.model_seconds
            self._check_model(request, outcome.model)
        else:
            request.results[index] = ItemError(outcome.code, outcome.message).reply()
            self._errors += 1
            if isinstance(outcome, ServiceError) and request.failure is None:
                request.failure = outcome
        request.remaining -= 1
        self._pending_items -= 1
        if request.remaining == 0:
            self._requests.discard(request)
            if not request.done.done():
                request.done.set_result(None)
        if self._pending_items == 0 and self._drained is not None:
            self._drained.set()

    @staticmethod
    def _check_model(request: _Request, model: tuple[str, int]) -> None:
        if request.model is not None and request.model != model and request.failure is None:
            # Only a weights file rewritten between an idle unload and the reload can do
            # this; embeddings of two models must never share a reply.
            request.failure = ServiceError(
                ErrorCode.MODEL_UNAVAILABLE,
                "the model changed while serving this request; retry",
            )
        request.model = model

    async def probe(self, item: FeatureItem) -> protocol.Probed:
        """What the model makes of one image, decoded as ``features`` decodes it: its top
        classes (``photodup-ctl doctor`` proves the weights with a photo of a cat)."""
        await self._wait_until_admissible()
        assert self._pool is not None
        _state, spec, _error = self._worker.readiness()
        try:
            decoded = await asyncio.wrap_future(self._pool.submit(item, spec))
        except ImageError as exc:
            raise ServiceError(ErrorCode(exc.code), exc.message) from None
        if decoded.pixels is None:
            raise ServiceError(ErrorCode.INTERNAL, "the decoder gave no model input")
        identity, top = await asyncio.wrap_future(self._worker.classify(decoded.pixels))
        classes: list[protocol.ClassScore] | None = None
        if top is not None:
            classes = [{"index": index, "score": score} for index, score in top]
        return {"model": identity, "classes": classes}

    # ------------------------------------------------------------------ model control

    async def load(self, name: str, weights: str | None = None) -> protocol.ModelInfo:
        """Switch models: new requests wait, in-flight items finish on the old model, then swap."""
        self._check_open()
        assert (
            self._gate is not None and self._drained is not None and self._switch_lock is not None
        )
        async with self._switch_lock:
            self._gate.clear()
            try:
                await self._drained.wait()
                path = Path(weights).expanduser() if weights else None
                config = self.config.model_config if path is not None else None
                try:
                    choice = await asyncio.to_thread(
                        catalog.resolve, name, weights=path, model_config=config
                    )
                except catalog.ModelUnavailable as exc:
                    raise ServiceError(ErrorCode.MODEL_UNAVAILABLE, str(exc)) from None
                return await asyncio.wrap_future(self._worker.load(choice))
            finally:
                self._gate.set()

    async def pull(self, name: str, progress: Callable[[int, int], None]) -> protocol.Pulled:
        """Download a CLIP model's weights into the Hugging Face cache (the only network use)."""
        self._check_open()
        try:
            clip = catalog.tag_to_pull(name)
            path = await asyncio.to_thread(catalog.pull, name, progress)
        except (catalog.PullError, catalog.ModelUnavailable) as exc:
            raise ServiceError(ErrorCode.DOWNLOAD_FAILED, str(exc)) from None
        # The running model is not switched: ids change only when the user asks (load).
        return {"model": clip.label, "path": str(path), "bytes": path.stat().st_size}

    # ------------------------------------------------------------------ reporting

    def model_info(self) -> protocol.ActiveModel:
        """The current model without waiting; id and dim are None until the first load."""
        return self._worker.model_info()

    def status(self) -> protocol.ServiceStatus:
        return {
            **self._worker.status(),
            "threads": self.config.threads,
            "model_streams": self._worker.streams,
            "decode_workers": self.config.decode_workers,
            "batch_size": self.config.batch_size,
            "idle_unload": self.config.idle_unload,
            "errors": self._errors,
            "in_flight_items": self._pending_items,
            "max_queue": self.config.max_queue,
            "decoder": self._pool.stats() if self._pool is not None else None,
        }

    def models(self) -> list[protocol.ModelRow]:
        active = self.model_info()
        served_id = active["id"]  # None until the first load
        served = catalog.base_id(served_id) if served_id is not None else None
        half = self.config.clip_weights == "float16"
        rows = catalog.known_models()
        for row in rows:
            row["active"] = row["id"] == served
            # The id replies carry (or would carry): with its weight-storage suffix.
            if row["active"] and served_id is not None:
                row["id"] = served_id
            elif row["name"] != catalog.BUILTIN:
                row["id"] = catalog.served_id(row["id"], half_weights=half)
        if served_id is not None and not any(row["active"] for row in rows):
            rows.append(
                {
                    "name": active["name"] or served_id,  # set with the id by every load
                    "id": served_id,
                    "dim": active["dim"],
                    "available": True,
                    "description": "open_clip weights file given with --weights",
                    "weights": self._worker.active_weights(),
                    "active": True,
                }
            )
        return rows

    def _state_changed(self) -> asyncio.Event:
        assert self._state_event is not None
        return self._state_event

    def _notify_state(self) -> None:
        """On the loop: wake everyone waiting for a state change; announce the first ready."""
        event, self._state_event = self._state_event, asyncio.Event()
        if event is not None:
            event.set()
        state = self._worker.readiness()[0]
        if state is ModelState.UNLOADED and self._announced_ready:
            self._release_decoders()
        ready = state is ModelState.READY
        if ready and not self._announced_ready:
            self._announced_ready = True
            if self.on_ready is not None:
                self.on_ready()

    def _release_decoders(self) -> None:
        """On the loop, after an idle unload: stop the decoder processes too (the next
        request starts them again, while the model reloads).  The pool itself refuses when
        items are queued or decoding, and a request racing this starts new workers."""
        pool = self._pool
        if pool is None or self._closing or self._pending_items:
            return
        if self._releasing is not None and not self._releasing.done():
            return

        async def release() -> None:
            if await asyncio.to_thread(pool.release):
                log.info("idle: decoder processes stopped")

        self._releasing = asyncio.ensure_future(release())

    def _notify_state_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._notify_state)


def _timing(request: _Request | None) -> protocol.Timing:
    if request is None:
        return {"wait_ms": 0.0, "model_ms": 0.0}
    return {
        "wait_ms": round(request.waited * 1000.0, 3),
        "model_ms": round(request.model_seconds * 1000.0, 3),
    }


def _embedded_item(done: Embedded) -> protocol.ItemOk:
    """One item's success reply: the embedding (little-endian float32 bytes) and what the
    decoder learned about the photo."""
    decoded = done.decoded
    item: protocol.ItemOk = {
        "ok": True,
        "embedding": np.ascontiguousarray(done.vector, dtype="<f4").tobytes(),
        "phash": decoded.phash,
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format,
        "taken": decoded.taken,
        "camera": decoded.camera,
        "exif_fields": decoded.exif_fields,
    }
    if decoded.thumb is not None:
        item["thumb"] = decoded.thumb
    return item

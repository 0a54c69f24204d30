"""The inference service: decoder pool -> bounded queue -> one model thread -> replies.

Shape of the pipeline::

    features(items)            (event loop: admission only, never decodes or runs the model)
      -> DecoderPool.submit    (isolated worker processes: decode + preprocess)
      -> job queue             (decoded items, bounded by admission: config.max_queue)
      -> model thread          (micro-batches across all requests and clients)
      -> loop.call_soon_threadsafe -> the request's future

The model thread is the only thread that touches the model: it loads it,
embeds batches, unloads it after ``idle_unload`` seconds without work and
reloads it when work comes back.  Control commands (load, warm-up, stop) go
through the same queue as the work, so their order with batches is clear.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photodupd.config import DaemonConfig
from photodupd.imaging import Decoded, ImageError, PreprocessSpec
from photodupd.models import LoadedModel, ModelChoice, backend, catalog
from photodupd.protocol import ErrorCode, FeatureItem, error_body

# The server owns the exception type it turns into error replies; the service raises it.
from photodupd.server import ServiceError

if TYPE_CHECKING:
    from photodupd.decodepool import DecoderPool

__all__ = ["InferenceService", "ModelState", "ServiceError"]

log = logging.getLogger("photodupd.inference")

#: Window of ``recent_images_per_s`` in status.
RATE_WINDOW = 10.0


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    UNLOADED = "unloaded"
    FAILED = "failed"


@dataclass(eq=False)
class _Request:
    """One features request: its per-item results and the future its caller awaits."""

    results: list[dict[str, Any] | None]
    remaining: int
    done: asyncio.Future[None]
    model: tuple[str, int] | None = None  # (id, dim) of the model that embedded its items
    failure: ServiceError | None = None


@dataclass(slots=True, eq=False)
class _Job:
    """A decoded item waiting for the model."""

    request: _Request
    index: int
    decoded: Decoded


@dataclass(slots=True, eq=False)
class _Command:
    kind: str  # "load" | "warm" | "stop"
    choice: ModelChoice | None = None
    reply: concurrent.futures.Future[dict[str, Any]] = field(
        default_factory=concurrent.futures.Future
    )


@dataclass
class _Stats:
    images_served: int = 0
    errors: int = 0
    batches: int = 0
    batched_items: int = 0
    largest_batch: int = 0
    loads: int = 0
    unloads: int = 0
    recent: deque[tuple[float, int]] = field(default_factory=deque)


class InferenceService:
    """Serves ``features`` requests with one model; see the module docstring for the shape."""

    on_ready: Callable[[], None] | None

    def __init__(self, config: DaemonConfig, *, decoder_pool: DecoderPool | None = None) -> None:
        self.config = config
        self.on_ready = None
        self._pool = decoder_pool  # the service starts and closes it, injected or not
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.Queue[_Job | _Command] = queue.Queue()
        self._thread: threading.Thread | None = None
        # Written by the model thread, read anywhere: guarded by _lock.
        self._lock = threading.Lock()
        self._state = ModelState.UNLOADED
        self._choice: ModelChoice | None = None
        self._info: dict[str, Any] = {"id": None, "dim": None, "name": None, "device": None}
        self._why = ""
        self._spec: PreprocessSpec | None = None  # the model's input; kept across idle unloads
        self._load_seconds: float | None = None
        self._last_error: str | None = None
        self._stats = _Stats()
        self._started = time.monotonic()
        # Model-thread only.
        self._model: LoadedModel | None = None
        self._last_work = time.monotonic()
        self._stopping = False
        # Event-loop only.
        self._pending_items = 0  # admitted, not yet answered (read by the model thread too)
        self._requests: set[_Request] = set()
        self._closing = False
        self._announced_ready = False
        self._state_event: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._gate: asyncio.Event | None = None  # cleared while a model switch drains
        self._switch_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the decoder pool and the model thread; the model loads in the background."""
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
        await asyncio.to_thread(self._pool.start)
        with self._lock:
            self._state = ModelState.LOADING
        self._thread = threading.Thread(
            target=self._model_thread, name="photodupd-model", daemon=True
        )
        self._thread.start()
        self._jobs.put(_Command("load"))  # choice None: resolve the configured model

    async def wait_ready(self) -> dict[str, Any]:
        """Wait for the first model load; raises MODEL_UNAVAILABLE if it failed."""
        while True:
            with self._lock:
                state, spec, error = self._state, self._spec, self._last_error
            if state is ModelState.FAILED:
                raise ServiceError(ErrorCode.MODEL_UNAVAILABLE, error or "the model failed to load")
            # After an idle unload the model is still "ready" for callers: it reloads on demand.
            if state is ModelState.READY or (state is ModelState.UNLOADED and spec is not None):
                return self._public_info()
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
        self._stopping = True  # the model thread drops queued jobs instead of embedding them
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._jobs.put(_Command("stop"))
            await asyncio.to_thread(thread.join, 30.0)
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)

    # ------------------------------------------------------------------ requests

    async def features(self, items: list[FeatureItem]) -> dict[str, Any]:
        """Embed ``items``; one bad image is a per-item error, never a failed request."""
        await self._wait_until_admissible()
        assert self._pool is not None and self._drained is not None
        if not items:
            return {"model": self._reply_model(None), "items": []}
        # Admission is the bound on the queue: every admitted item holds a slot until answered.
        # A lone request bigger than the queue is still let in so it cannot starve.
        if self._pending_items and self._pending_items + len(items) > self.config.max_queue:
            raise ServiceError(
                ErrorCode.BUSY,
                f"queue full ({self._pending_items} of {self.config.max_queue} items); retry later",
            )
        with self._lock:
            state, spec = self._state, self._spec
            if state is ModelState.UNLOADED:
                self._state = ModelState.LOADING
        if state is ModelState.UNLOADED:
            # Reload while the items decode, rather than after.
            self._jobs.put(_Command("warm"))
            self._notify_state()
        loop = asyncio.get_running_loop()
        request = _Request([None] * len(items), len(items), loop.create_future())
        self._requests.add(request)
        self._pending_items += len(items)
        self._drained.clear()
        for index, item in enumerate(items):
            try:
                decoding = self._pool.submit(item, spec)
            except Exception as exc:  # pool closed or broken: this item fails, the rest go on
                self._finish_item(request, index, _error(ErrorCode.INTERNAL, f"decoder: {exc}"))
                continue
            decoding.add_done_callback(functools.partial(self._on_decoded, request, index))
        # The items hold their queue slots until answered, even if this caller goes away.
        await asyncio.shield(request.done)
        if request.failure is not None:
            raise request.failure
        return {
            "model": self._reply_model(request.model),
            "items": [
                r if r is not None else _error(ErrorCode.INTERNAL, "lost") for r in request.results
            ],
        }

    def _reply_model(self, used: tuple[str, int] | None) -> dict[str, Any]:
        """The model that embedded a reply's items; the current one if no item got that far."""
        if used is None:
            with self._lock:
                return {"id": self._info["id"], "dim": self._info["dim"]}
        return {"id": used[0], "dim": used[1]}

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
            with self._lock:
                state, spec, error = self._state, self._spec, self._last_error
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
            self._post(request, index, _error(exc.code, exc.message))
        except concurrent.futures.CancelledError:
            self._post(request, index, _error(ErrorCode.SHUTTING_DOWN, "decoding was cancelled"))
        except Exception as exc:  # a bug in the pool; the item fails, the daemon carries on
            log.exception("decoder pool failed on an item")
            self._post(request, index, _error(ErrorCode.INTERNAL, f"decoder: {type(exc).__name__}"))
        else:
            self._jobs.put(_Job(request, index, decoded))

    def _post(
        self,
        request: _Request,
        index: int,
        result: dict[str, Any],
        *,
        failure: ServiceError | None = None,
        model: tuple[str, int] | None = None,
    ) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(self._finish_item, request, index, result, failure, model)

    def _finish_item(
        self,
        request: _Request,
        index: int,
        result: dict[str, Any],
        failure: ServiceError | None = None,
        model: tuple[str, int] | None = None,
    ) -> None:
        """On the loop: record one item's outcome and release its queue slot."""
        if request.results[index] is not None:
            return
        request.results[index] = result
        if not result.get("ok"):
            with self._lock:
                self._stats.errors += 1
        if failure is not None and request.failure is None:
            request.failure = failure
        if model is not None:
            if request.model is not None and request.model != model and request.failure is None:
                # Only a weights file rewritten between an idle unload and the reload can do
                # this; embeddings of two models must never share a reply.
                request.failure = ServiceError(
                    ErrorCode.MODEL_UNAVAILABLE,
                    "the model changed while serving this request; retry",
                )
            request.model = model
        request.remaining -= 1
        self._pending_items -= 1
        if request.remaining == 0:
            self._requests.discard(request)
            if not request.done.done():
                request.done.set_result(None)
        if self._pending_items == 0 and self._drained is not None:
            self._drained.set()

    # ------------------------------------------------------------------ model control

    async def load(self, name: str, weights: str | None = None) -> dict[str, Any]:
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
                command = _Command("load", choice)
                self._jobs.put(command)
                return await asyncio.wrap_future(command.reply)
            finally:
                self._gate.set()

    async def pull(self, name: str, progress: Callable[[int, int], None]) -> dict[str, Any]:
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

    def model_info(self) -> dict[str, Any]:
        """The current model without waiting; id and dim are None until the first load."""
        with self._lock:
            return {**self._info, "state": self._state.value, "why": self._why}

    def _public_info(self) -> dict[str, Any]:
        with self._lock:
            return {**self._info, "why": self._why}

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            while stats.recent and stats.recent[0][0] < now - RATE_WINDOW:
                stats.recent.popleft()
            window = min(RATE_WINDOW, max(now - self._started, 1e-3))
            recent = sum(n for _, n in stats.recent) / window
            report: dict[str, Any] = {
                "state": self._state.value,
                "model": self._info["id"],
                "dim": self._info["dim"],
                "model_name": self._info["name"],
                "why": self._why,
                "device": self._info["device"],
                "threads": self.config.threads,
                "decode_workers": self.config.decode_workers,
                "batch_size": self.config.batch_size,
                "idle_unload": self.config.idle_unload,
                "images_served": stats.images_served,
                "errors": stats.errors,
                "batches": stats.batches,
                "mean_batch": stats.batched_items / stats.batches if stats.batches else 0.0,
                "largest_batch": stats.largest_batch,
                "loads": stats.loads,
                "unloads": stats.unloads,
                "recent_images_per_s": round(recent, 2),
                "load_seconds": self._load_seconds,
                "last_error": self._last_error,
            }
        report["queue_depth"] = self._jobs.qsize()
        report["in_flight_items"] = self._pending_items
        report["max_queue"] = self.config.max_queue
        report["decoder"] = self._pool.stats() if self._pool is not None else None
        return report

    def models(self) -> list[dict[str, Any]]:
        active = self.model_info()
        rows = catalog.known_models()
        for row in rows:
            row["active"] = row["id"] == active["id"]
        if active["id"] is not None and not any(row["active"] for row in rows):
            rows.append(
                {
                    "name": active["name"],
                    "id": active["id"],
                    "dim": active["dim"],
                    "available": True,
                    "description": "open_clip weights file given with --weights",
                    "weights": self._choice.weights if self._choice else None,
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
        with self._lock:
            ready = self._state is ModelState.READY
        if ready and not self._announced_ready:
            self._announced_ready = True
            if self.on_ready is not None:
                self.on_ready()

    def _notify_state_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._notify_state)

    # ------------------------------------------------------------------ the model thread

    def _model_thread(self) -> None:
        backend.configure_threads(self.config.threads)
        while True:
            try:
                first = self._jobs.get(timeout=self._idle_wait())
            except queue.Empty:
                self._maybe_unload()
                continue
            if isinstance(first, _Command):
                if self._run_command(first):
                    return
                continue
            batch, command = self._gather(first)
            try:
                self._run_batch(batch)
            except Exception as exc:  # a bug here must fail the batch, not kill the thread
                log.exception("model thread failed on a batch")
                for job in batch:  # items already answered ignore a second answer
                    self._post(
                        job.request,
                        job.index,
                        _error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"),
                    )
            if command is not None and self._run_command(command):
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], _Command | None]:
        """Form a micro-batch: take what is queued, and wait up to ``batch_wait_ms`` for
        company only while more admitted items are still on their way."""
        batch = [first]
        deadline = time.monotonic() + self.config.batch_wait_ms / 1000.0
        while len(batch) < self.config.batch_size:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._pending_items <= len(batch):
                    break
                try:
                    job = self._jobs.get(timeout=remaining)
                except queue.Empty:
                    break
            if isinstance(job, _Command):
                return batch, job
            batch.append(job)
        return batch, None

    def _run_batch(self, batch: list[_Job]) -> None:
        self._last_work = time.monotonic()
        if self._stopping:
            return  # close() already answered these requests
        model = self._model
        if model is None:
            model = self._ensure_loaded()
            if model is None:
                failure = ServiceError(
                    ErrorCode.MODEL_UNAVAILABLE, self._last_error or "the model failed to load"
                )
                for job in batch:
                    self._post(
                        job.request,
                        job.index,
                        _error(failure.code, failure.message),
                        failure=failure,
                    )
                return
        size = model.spec.size
        ready: list[_Job] = []
        arrays: list[np.ndarray] = []
        for job in batch:
            pixels = job.decoded.pixels
            if pixels is None or pixels.shape != (size, size, 3):
                shape = None if pixels is None else pixels.shape
                message = f"decoded pixels {shape} do not fit the model input {size}x{size}"
                self._post(job.request, job.index, _error(ErrorCode.INTERNAL, message))
            else:
                ready.append(job)
                arrays.append(pixels)
        if not ready:
            return
        try:
            vectors = model.embed(np.stack(arrays))
        except Exception as exc:  # a model bug must not take the daemon down
            log.exception("model forward pass failed")
            for job in ready:
                self._post(
                    job.request,
                    job.index,
                    _error(ErrorCode.INTERNAL, f"model: {type(exc).__name__}: {exc}"),
                )
            return
        identity = (model.id, model.dim)
        now = time.monotonic()
        with self._lock:
            self._stats.images_served += len(ready)
            self._stats.batches += 1
            self._stats.batched_items += len(ready)
            self._stats.largest_batch = max(self._stats.largest_batch, len(ready))
            self._stats.recent.append((now, len(ready)))
        for job, vector in zip(ready, vectors, strict=True):
            self._post(job.request, job.index, _item_result(job.decoded, vector), model=identity)
        self._last_work = time.monotonic()

    def _run_command(self, command: _Command) -> bool:
        """Returns True when the thread must exit."""
        if command.kind == "stop":
            self._drop_model()
            command.reply.set_result({})
            return True
        if command.kind == "warm":
            self._ensure_loaded()
            command.reply.set_result({})
            return False
        # "load": the first load (choice None: resolve the configuration) or a switch.
        try:
            info = self._switch(command.choice)
        except ServiceError as exc:
            command.reply.set_exception(exc)
        except Exception as exc:  # a bug: report it, leave a state that does not hang waiters
            log.exception("model switch failed")
            message = f"{type(exc).__name__}: {exc}"
            self._fail_switch(message)
            command.reply.set_exception(ServiceError(ErrorCode.INTERNAL, message))
        else:
            command.reply.set_result(info)
        return False

    def _resolve_configured(self) -> ModelChoice:
        cfg = self.config
        return catalog.resolve(cfg.model, weights=cfg.weights, model_config=cfg.model_config)

    def _switch(self, choice: ModelChoice | None) -> dict[str, Any]:
        old = self._model
        try:
            chosen = choice if choice is not None else self._resolve_configured()
        except catalog.ModelUnavailable as exc:
            self._fail_switch(str(exc))
            raise ServiceError(ErrorCode.MODEL_UNAVAILABLE, str(exc)) from None
        if old is not None and self._same_model(chosen, old):
            self._install(chosen, old)  # nothing to load; only the reason may have changed
            return self._public_info()
        with self._lock:
            self._state = ModelState.LOADING
        self._notify_state_threadsafe()
        model = self._load(chosen)
        if (
            model is None
            and chosen.requested == catalog.AUTO
            and chosen.resolved != catalog.BUILTIN
        ):
            # auto promises a working model: broken CLIP weights in the cache fall back too.
            chosen = ModelChoice(
                chosen.requested,
                catalog.BUILTIN,
                f"auto: {chosen.resolved} failed to load ({self._last_error}); "
                "using the built-in model",
            )
            model = self._load(chosen)
        if model is None:
            message = self._last_error or "the model failed to load"
            self._fail_switch(message)
            raise ServiceError(ErrorCode.MODEL_UNAVAILABLE, message)
        self._model = None
        del old
        backend.release_memory()
        self._install(chosen, model)
        return self._public_info()

    @staticmethod
    def _same_model(choice: ModelChoice, model: LoadedModel) -> bool:
        try:
            return catalog.model_id(choice) == model.id
        except (OSError, catalog.ModelUnavailable):
            return False

    def _ensure_loaded(self) -> LoadedModel | None:
        """Reload the current choice after an idle unload (never re-resolves ``auto``,
        so the model id cannot change behind a client's back)."""
        if self._model is not None:
            return self._model
        choice = self._choice
        if choice is None:
            return None
        with self._lock:
            self._state = ModelState.LOADING
        self._notify_state_threadsafe()
        model = self._load(choice)
        if model is not None:
            self._install(choice, model)
        else:
            with self._lock:
                self._state = ModelState.FAILED
            self._notify_state_threadsafe()
        return model

    def _load(self, choice: ModelChoice) -> LoadedModel | None:
        started = time.monotonic()
        try:
            model = backend.load_model(choice)
        except Exception as exc:  # ModelUnavailable, or anything torch raises on bad weights
            message = (
                str(exc)
                if isinstance(exc, catalog.ModelUnavailable)
                else f"{type(exc).__name__}: {exc}"
            )
            log.error("cannot load %s: %s", choice.resolved, message)
            with self._lock:
                self._last_error = message  # the caller decides what state this leaves
            return None
        with self._lock:
            self._load_seconds = round(time.monotonic() - started, 3)
            self._stats.loads += 1
        log.info("loaded %s in %.2fs (%s)", model.id, self._load_seconds, choice.why)
        return model

    def _install(self, choice: ModelChoice, model: LoadedModel) -> None:
        self._model = model
        self._choice = choice
        self._last_work = time.monotonic()
        with self._lock:
            self._state = ModelState.READY
            self._spec = model.spec
            self._why = choice.why
            self._info = {
                "id": model.id,
                "dim": model.dim,
                "name": choice.resolved,
                "device": model.device,
            }
        self._notify_state_threadsafe()

    def _fail_switch(self, message: str) -> None:
        """A load that did not happen leaves the previous model serving (or still loadable
        after an idle unload); only with no model at all is the state "failed"."""
        with self._lock:
            self._last_error = message
            if self._model is not None:
                self._state = ModelState.READY
            elif self._choice is not None:
                self._state = ModelState.UNLOADED
            else:
                self._state = ModelState.FAILED
        self._notify_state_threadsafe()

    def _idle_wait(self) -> float | None:
        if self._model is None or self.config.idle_unload <= 0:
            return None
        return max(0.0, self._last_work + self.config.idle_unload - time.monotonic())

    def _maybe_unload(self) -> None:
        if self._pending_items > 0:
            self._last_work = time.monotonic()  # items still decoding: that is work too
            return
        if time.monotonic() - self._last_work < self.config.idle_unload:
            return
        log.info("idle for %.0fs: unloading %s", self.config.idle_unload, self._info["id"])
        self._drop_model()
        with self._lock:
            self._state = ModelState.UNLOADED
            self._stats.unloads += 1
        self._notify_state_threadsafe()

    def _drop_model(self) -> None:
        if self._model is not None:
            self._model = None
            backend.release_memory()


def _error(code: ErrorCode | str, message: str) -> dict[str, Any]:
    try:
        body = error_body(code, message)
    except ValueError:  # a code the protocol does not know: still answer the item
        body = error_body(ErrorCode.INTERNAL, f"{code}: {message}")
    return {"ok": False, "error": {"code": body["code"], "message": body["message"]}}


def _item_result(decoded: Decoded, vector: np.ndarray) -> dict[str, Any]:
    return {
        "ok": True,
        "embedding": np.ascontiguousarray(vector, dtype="<f4").tobytes(),
        "phash": decoded.phash,
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format,
        "taken": decoded.taken,
        "camera": decoded.camera,
        "exif_fields": decoded.exif_fields,
    }

"""The model thread: the one thread that owns the model and hands micro-batches to streams.

Shape::

    submit(job) / load(choice) / ...   (any thread)
      -> one queue: decoded items and control commands, in arrival order
      -> the model thread: once a stream is free, take what is queued (up to the
         stream's share of the backlog, at most ``batch_size``), wait for company
         while admitted items are still on their way (see ``_gather``), hand the
         batch to the stream
      -> a stream thread (``model_streams`` of them, torch threads split among them):
         one forward pass, each item's outcome to ``reply``: its embedding, or why not
      -> when idle: give freed memory back to the OS after ``TRIM_AFTER`` seconds,
         unload the model after ``idle_unload`` seconds, reload it when work returns

Why streams: a forward pass on one thread has no barriers, so when something
else takes a core away (the decoders, the scanning app, a browser) no other
core waits for it.  On a quiet 2-core machine one pass on both threads was as
fast end to end; with one other busy process, ViT-B-32 went 8.4 -> 10.2
images/s with two streams.  The price is a second pass's activations (ViT-B-32:
~40 MB more at peak).  A batch with nothing beside it and nothing behind it (one
photo asked for alone) runs on every thread: then its latency is all that matters.

Control commands (load, warm-up, stop) go through the same queue as the work,
so their order with batches is clear, and run only once every stream is idle.
Everything other threads read (state, model info, statistics) is behind one
lock; the model is swapped or dropped by this thread alone.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

import numpy as np

from photodupd import devices, protocol
from photodupd.config import DaemonConfig
from photodupd.imaging import Decoded, PreprocessSpec
from photodupd.models import LoadedModel, ModelChoice, backend, catalog
from photodupd.protocol import ErrorCode, ItemError, ModelState, ServiceError

__all__ = ["Embedded", "Job", "ModelWorker", "Outcome", "stream_layout"]

log = logging.getLogger("photodupd.batcher")

#: Window of ``recent_images_per_s`` in status.
RATE_WINDOW = 10.0

#: Longest a batch waits for company while the decoders are all busy (see _gather):
#: bounds the latency a bigger batch may add.
BUSY_DECODERS_WAIT = 0.25

#: Smallest share of the backlog a stream takes (when there is that much): passes of
#: 1-3 images cost up to 1.5x per image what passes of 4 or more do.
MIN_SHARE = 4

#: How often a waiting batch re-checks whether its wait is still worth it.
_WAIT_SLICE = 0.01

#: Seconds without work before freed activation memory goes back to the OS.  Long
#: enough that a client sending chunk after chunk never pays for it, short enough
#: that memory is back soon after a scan ends.
TRIM_AFTER = 1.0


@dataclass(slots=True, eq=False)
class Job:
    """A decoded item waiting for the model; ``owner`` is the caller's request, opaque here."""

    owner: object
    index: int
    decoded: Decoded
    queued: float = field(default_factory=time.monotonic)  # when it reached the model's queue


@dataclass(frozen=True, slots=True, eq=False)
class Embedded:
    """An item the model embedded: the decoder's facts, the vector, and which model."""

    decoded: Decoded
    vector: np.ndarray
    model: tuple[str, int]  # (id, dim)
    waited: float = 0.0  # seconds from the model's queue to the start of its forward pass
    model_seconds: float = 0.0  # its share of the forward pass (the pass's time / its items)


#: What became of one item: embedded; failed alone (the rest of its request is served); or
#: failed with its whole request (a ServiceError: no model to run it).
Outcome: TypeAlias = Embedded | ItemError | ServiceError


class Reply(Protocol):
    """Delivers one item's outcome; called from the model thread and the stream threads."""

    def __call__(self, job: Job, outcome: Outcome) -> None: ...


@dataclass(slots=True, eq=False)
class _Command:
    kind: str  # "load" | "warm" | "stop"
    choice: ModelChoice | None = None
    reply: concurrent.futures.Future[protocol.ModelInfo] = field(
        default_factory=concurrent.futures.Future
    )


@dataclass(slots=True, eq=False)
class _Classify:
    """The ``probe`` op's question: the model's top classes for one decoded image."""

    pixels: np.ndarray
    reply: concurrent.futures.Future[Classified] = field(default_factory=concurrent.futures.Future)


#: What ``classify`` answers: the model's identity, and its top classes as (index, score),
#: or None for a model without a classifier head.
Classified: TypeAlias = tuple[protocol.ModelIdentity, list[tuple[int, float]] | None]

#: Classes ``classify`` reports.
TOP_CLASSES = 5


@dataclass
class _Stats:
    images_served: int = 0
    batches: int = 0
    batched_items: int = 0
    largest_batch: int = 0
    loads: int = 0
    unloads: int = 0
    trims: int = 0
    recent: deque[tuple[float, int]] = field(default_factory=deque)


class _Streams:
    """The threads that run forward passes, up to ``count`` batches at once.

    Only the model thread hands out work: it waits for a free stream before it
    forms a batch (so batches grow while every stream is busy), gives the batch
    to the stream and goes back to forming the next one.  Commands and idle
    duties first wait until every stream is idle, so a model is never swapped or
    dropped under a forward pass.  Each batch says how many torch intra-op
    threads it runs on; OpenMP's thread count is per calling thread, so each
    stream sets its own.
    """

    def __init__(self, count: int, threads_each: int) -> None:
        self.count = count
        self.threads_each = threads_each
        self._cond = threading.Condition()
        self._busy = 0
        self._items = 0
        self._threads_set = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=count, thread_name_prefix="photodupd-stream"
        )

    @property
    def threads_all(self) -> int:
        return self.count * self.threads_each

    def wait_free(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._busy < self.count)

    def wait_idle(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._busy == 0)

    def busy(self) -> int:
        """Batches in a forward pass now."""
        with self._cond:
            return self._busy

    def items(self) -> int:
        """Items in those batches."""
        with self._cond:
            return self._items

    def run(self, work: Callable[[], None], items: int, threads: int) -> None:
        """Run ``work`` (which answers its own items) on a free stream with ``threads`` torch
        threads; model thread only."""
        with self._cond:
            self._busy += 1
            self._items += items
        self._pool.submit(self._finish_after, work, items, threads)

    def _finish_after(self, work: Callable[[], None], items: int, threads: int) -> None:
        try:
            if getattr(self._threads_set, "count", None) != threads:
                backend.configure_threads(threads)
                self._threads_set.count = threads
            work()
        finally:
            with self._cond:
                self._busy -= 1
                self._items -= items
                self._cond.notify_all()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _copy_model_input(info: protocol.ModelInfo, status: protocol.ModelStatus) -> None:
    """The optional facts of the model's info that status repeats (after the first load)."""
    if "device_why" in info:
        status["device_why"] = info["device_why"]
    if "input_size" in info and "input_resize" in info:
        status["input_size"] = info["input_size"]
        status["input_resize"] = info["input_resize"]


def stream_layout(threads: int, streams: int) -> tuple[int, int]:
    """(streams, torch threads per stream) for ``threads`` torch threads in all.

    ``streams`` 0 means automatic: one stream per thread (see the module docstring).
    """
    threads = max(1, threads)
    count = threads if streams <= 0 else streams
    return count, max(1, threads // count)


class ModelWorker:
    """Owns the model thread; see the module docstring for the shape.

    ``reply`` receives every item's outcome, ``on_state_change`` is called (from
    the model thread) whenever the state or the model changes, and
    ``pending_items`` says how many admitted items are not answered yet (some may
    still be decoding): a partial batch waits for them, and they count as work
    for the idle timers.
    """

    def __init__(
        self,
        config: DaemonConfig,
        *,
        reply: Reply,
        on_state_change: Callable[[], None],
        pending_items: Callable[[], int],
    ) -> None:
        self.config = config
        self._reply = reply
        self._on_state_change = on_state_change
        self._pending_items = pending_items
        self._jobs: queue.Queue[Job | _Command | _Classify] = queue.Queue()
        self._thread: threading.Thread | None = None
        # Written by the model thread (and start/reload_if_unloaded), read anywhere: _lock.
        self._lock = threading.Lock()
        self._state = ModelState.UNLOADED
        self._choice: ModelChoice | None = None
        self._info: protocol.ModelInfo = {
            "id": None,
            "dim": None,
            "name": None,
            "device": None,
            "why": "",
        }
        self._spec: PreprocessSpec | None = None  # the model's input; kept across idle unloads
        self._load_seconds: float | None = None
        self._last_error: str | None = None
        self._stats = _Stats()
        self._started = time.monotonic()
        # Model-thread only (except _stopping, a flag set once by stop()).
        self._model: LoadedModel | None = None
        self._last_work = time.monotonic()
        self._trim_due = False
        self._stopping = False
        self._streams = _Streams(*stream_layout(config.threads, config.model_streams))
        self._plan: devices.DevicePlan | None = None  # chosen by the model thread, first load

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        """Start the thread; it loads the configured model first."""
        with self._lock:
            self._state = ModelState.LOADING
        self._thread = threading.Thread(target=self._run, name="photodupd-model", daemon=True)
        self._thread.start()
        self._jobs.put(_Command("load"))  # choice None: resolve the configured model

    @property
    def streams(self) -> int:
        """How many forward passes may run at once."""
        return self._streams.count

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def load(self, choice: ModelChoice) -> concurrent.futures.Future[protocol.ModelInfo]:
        """Switch to ``choice`` after the work queued before it; the future gets the model info
        or a ServiceError (the previous model keeps serving then)."""
        command = _Command("load", choice)
        self._jobs.put(command)
        return command.reply

    def classify(self, pixels: np.ndarray) -> concurrent.futures.Future[Classified]:
        """The top classes of one decoded image (``pixels``: the model's input), after the
        work queued before it; a ServiceError when no model can be loaded."""
        command = _Classify(pixels)
        self._jobs.put(command)
        return command.reply

    def reload_if_unloaded(self) -> bool:
        """After an idle unload, start reloading now (while new items decode) rather than
        when the first of them reaches the model.  True if a reload was started."""
        with self._lock:
            if self._state is not ModelState.UNLOADED:
                return False
            self._state = ModelState.LOADING
        self._jobs.put(_Command("warm"))
        return True

    def stop(self) -> None:
        """Drop queued work (its requests were answered by the caller), then unload and end
        the thread; :meth:`join` waits for that."""
        self._stopping = True
        self._jobs.put(_Command("stop"))

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ reading (any thread)

    def readiness(self) -> tuple[ModelState, PreprocessSpec | None, str | None]:
        """State, the input spec (None until the first load), and the last load error."""
        with self._lock:
            return self._state, self._spec, self._last_error

    def model_info(self) -> protocol.ActiveModel:
        with self._lock:
            return {**self._info, "state": self._state.value}

    def public_info(self) -> protocol.ModelInfo:
        with self._lock:
            return self._info.copy()

    def identity(self) -> protocol.ModelIdentity:
        with self._lock:
            return {"id": self._info["id"], "dim": self._info["dim"]}

    def active_weights(self) -> str | None:
        with self._lock:
            return self._choice.weights if self._choice is not None else None

    def status(self) -> protocol.ModelStatus:
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            while stats.recent and stats.recent[0][0] < now - RATE_WINDOW:
                stats.recent.popleft()
            window = min(RATE_WINDOW, max(now - self._started, 1e-3))
            recent = sum(n for _, n in stats.recent) / window
            status: protocol.ModelStatus = {
                "state": self._state.value,
                "model": self._info["id"],
                "dim": self._info["dim"],
                "model_name": self._info["name"],
                "why": self._info["why"],
                "device": self._info["device"],
                "images_served": stats.images_served,
                "batches": stats.batches,
                "mean_batch": stats.batched_items / stats.batches if stats.batches else 0.0,
                "largest_batch": stats.largest_batch,
                "loads": stats.loads,
                "unloads": stats.unloads,
                "memory_trims": stats.trims,
                "recent_images_per_s": round(recent, 2),
                "load_seconds": self._load_seconds,
                "last_error": self._last_error,
                "queue_depth": self._jobs.qsize(),
            }
            _copy_model_input(self._info, status)
            return status

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        backend.configure_threads(self.config.threads)  # for loading: streams set their own
        streams = self._streams
        try:
            while True:
                streams.wait_free()
                try:
                    first = self._jobs.get(timeout=self._idle_wait())
                except queue.Empty:
                    if streams.busy():
                        self._last_work = time.monotonic()  # a forward pass is running
                    else:
                        self._on_idle()
                    continue
                command = first if isinstance(first, _Command | _Classify) else None
                if isinstance(first, Job):
                    batch, command = self._gather(first)
                    try:
                        self._start_batch(batch)
                    except Exception as exc:  # a bug here must fail the batch, not the thread
                        self._fail_batch(batch, exc)
                if command is not None:
                    streams.wait_idle()  # no model is swapped or dropped under a forward pass
                    if self._run_command(command):
                        return
        finally:
            streams.close()

    def _gather(self, first: Job) -> tuple[list[Job], _Command | _Classify | None]:
        """Form a micro-batch from what is queued, waiting for company only while more
        admitted items are still on their way (decoding, not in a forward pass yet):

        * up to ``batch_wait_ms``, as long as any are on their way;
        * up to :data:`BUSY_DECODERS_WAIT` while enough of them are decoding to keep
          every decoder busy: the cores are working anyway, so a bigger batch (cheaper
          per image) costs no throughput.

        With several streams a batch takes at most its stream's share of the backlog
        (guided scheduling): at the end of a burst the streams finish together
        instead of one core idling while the other runs a last big batch."""
        batch = [first]
        limit = self._batch_limit()
        started = time.monotonic()
        short = started + self.config.batch_wait_ms / 1000.0
        long = started + BUSY_DECODERS_WAIT
        while len(batch) < limit:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                on_their_way = self._backlog() - len(batch)
                if on_their_way <= 0:
                    break
                now = time.monotonic()
                deadline = long if on_their_way >= self.config.decode_workers else short
                if now >= deadline:
                    break
                try:
                    job = self._jobs.get(timeout=min(deadline - now, _WAIT_SLICE))
                except queue.Empty:
                    continue  # re-check: decoders may have gone idle meanwhile
            if isinstance(job, _Command | _Classify):
                return batch, job
            batch.append(job)
        return batch, None

    def _backlog(self) -> int:
        """Admitted items not in a forward pass yet: decoding, or queued here."""
        return self._pending_items() - self._streams.items()

    def _batch_limit(self) -> int:
        share = -(-self._backlog() // self._streams.count)  # ceiling division
        return max(1, min(self._batch_size(), max(share, MIN_SHARE)))

    def _batch_size(self) -> int:
        return self._plan.batch_size if self._plan is not None else self.config.batch_size

    def _device_plan(self) -> devices.DevicePlan:
        """The device, chosen once (model thread): torch is asked what is there."""
        if self._plan is None:
            self._plan = devices.choose(
                self.config.device, backend.probe_devices(), self.config.batch_size
            )
            log.info("device %s (%s)", self._plan.device, self._plan.why)
        return self._plan

    def _start_batch(self, batch: list[Job]) -> None:
        """Check the batch against the model and hand it to a free stream (model thread)."""
        self._last_work = time.monotonic()
        if self._stopping:
            return  # the caller already answered these requests
        model = self._model if self._model is not None else self._ensure_loaded()
        if model is None:
            failure = ServiceError(
                ErrorCode.MODEL_UNAVAILABLE, self._last_error or "the model failed to load"
            )
            for job in batch:
                self._reply(job, failure)
            return
        size = model.spec.size
        ready: list[Job] = []
        arrays: list[np.ndarray] = []
        for job in batch:
            pixels = job.decoded.pixels
            if pixels is None or pixels.shape != (size, size, 3):
                shape = None if pixels is None else pixels.shape
                message = f"decoded pixels {shape} do not fit the model input {size}x{size}"
                self._reply(job, ItemError(ErrorCode.INTERNAL, message))
            else:
                ready.append(job)
                arrays.append(pixels)
        if ready:
            self._trim_due = True
            # A batch with nothing running beside it and nothing behind it (one photo
            # asked for alone, the end of a burst) gets every thread: it is the latency.
            streams = self._streams
            alone = streams.busy() == 0 and self._backlog() <= len(ready)
            threads = streams.threads_all if alone else streams.threads_each
            work = functools.partial(self._embed_batch, model, ready, arrays)
            streams.run(work, len(ready), threads)

    def _embed_batch(self, model: LoadedModel, batch: list[Job], arrays: list[np.ndarray]) -> None:
        """One forward pass and its replies (a stream thread).  Every path answers every
        item: nobody reads the stream's own result, so an escaped exception would leave
        the requests waiting forever."""
        try:
            self._forward_and_reply(model, batch, arrays)
        except Exception as exc:
            self._fail_batch(batch, exc)
        finally:
            self._last_work = time.monotonic()

    def _forward_and_reply(
        self, model: LoadedModel, batch: list[Job], arrays: list[np.ndarray]
    ) -> None:
        started = time.monotonic()
        try:
            vectors = model.embed(np.stack(arrays))
        except Exception as exc:  # a model bug must not take the daemon down
            log.exception("model forward pass failed")
            for job in batch:
                message = f"model: {type(exc).__name__}: {exc}"
                self._reply(job, ItemError(ErrorCode.INTERNAL, message))
            return
        identity = (model.id, model.dim)
        now = time.monotonic()
        share = (now - started) / len(batch)
        with self._lock:
            self._stats.images_served += len(batch)
            self._stats.batches += 1
            self._stats.batched_items += len(batch)
            self._stats.largest_batch = max(self._stats.largest_batch, len(batch))
            self._stats.recent.append((now, len(batch)))
        for job, vector in zip(batch, vectors, strict=True):
            waited = max(0.0, started - job.queued)
            self._reply(job, Embedded(job.decoded, vector, identity, waited, share))

    def _fail_batch(self, batch: list[Job], exc: Exception) -> None:
        log.exception("failed on a batch")
        for job in batch:  # items already answered ignore a second answer
            self._reply(job, ItemError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))

    def _run_command(self, command: _Command | _Classify) -> bool:
        """Returns True when the thread must exit."""
        if isinstance(command, _Classify):
            self._classify(command)
            return False
        if command.kind == "stop":
            self._drop_model()
            command.reply.set_result(self.public_info())
            return True
        if command.kind == "warm":
            self._ensure_loaded()
            command.reply.set_result(self.public_info())
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

    def _classify(self, command: _Classify) -> None:
        """Answer a probe: the classifier head's top classes (model thread, streams idle)."""
        model = self._ensure_loaded()
        if model is None:
            command.reply.set_exception(
                ServiceError(
                    ErrorCode.MODEL_UNAVAILABLE, self._last_error or "the model failed to load"
                )
            )
            return
        identity: protocol.ModelIdentity = {"id": model.id, "dim": model.dim}
        classify = getattr(model, "classify", None)  # only the built-in model has a head
        try:
            if classify is None:
                command.reply.set_result((identity, None))
                return
            scores = np.asarray(classify(command.pixels[None]))[0]
        except Exception as exc:  # a model bug: the probe says so, the daemon carries on
            log.exception("probe failed")
            command.reply.set_exception(
                ServiceError(ErrorCode.INTERNAL, f"model: {type(exc).__name__}: {exc}")
            )
            return
        top = np.argsort(scores)[::-1][:TOP_CLASSES]
        command.reply.set_result((identity, [(int(i), float(scores[i])) for i in top]))

    # ------------------------------------------------------------------ loading (model thread)

    def _resolve_configured(self) -> ModelChoice:
        cfg = self.config
        return catalog.resolve(cfg.model, weights=cfg.weights, model_config=cfg.model_config)

    def _switch(self, choice: ModelChoice | None) -> protocol.ModelInfo:
        old = self._model
        try:
            chosen = choice if choice is not None else self._resolve_configured()
        except catalog.ModelUnavailable as exc:
            self._fail_switch(str(exc))
            raise ServiceError(ErrorCode.MODEL_UNAVAILABLE, str(exc)) from None
        if old is not None and self._same_model(chosen, old):
            self._install(chosen, old)  # nothing to load; only the reason may have changed
            return self.public_info()
        self._set_state(ModelState.LOADING)
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
        return self.public_info()

    @staticmethod
    def _same_model(choice: ModelChoice, model: LoadedModel) -> bool:
        try:
            return catalog.model_id(choice) == catalog.base_id(model.id)
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
        self._set_state(ModelState.LOADING)
        model = self._load(choice)
        if model is not None:
            self._install(choice, model)
        else:
            self._set_state(ModelState.FAILED)
        return model

    def _load(self, choice: ModelChoice) -> LoadedModel | None:
        started = time.monotonic()
        try:
            plan = self._device_plan()
            model = backend.load_model(
                choice,
                device=plan.device,
                half_weights=self.config.clip_weights == "float16",
                half_compute=plan.half_compute,
            )
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
        self._last_work = time.monotonic()
        with self._lock:
            self._choice = choice
            self._state = ModelState.READY
            self._spec = model.spec
            self._info = {
                "id": model.id,
                "dim": model.dim,
                "name": choice.resolved,
                "device": model.device,
                "why": choice.why,
                "device_why": self._plan.why if self._plan is not None else "",
                "input_size": model.spec.size,
                "input_resize": model.spec.resize,
            }
        self._on_state_change()

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
        self._on_state_change()

    def _set_state(self, state: ModelState) -> None:
        with self._lock:
            self._state = state
        self._on_state_change()

    # ------------------------------------------------------------------ idling (model thread)

    def _idle_wait(self) -> float | None:
        """How long the queue may stay empty before an idle duty (trim, unload) is due."""
        due: list[float] = []
        if self._trim_due:
            due.append(self._last_work + TRIM_AFTER)
        if self._model is not None and self.config.idle_unload > 0:
            due.append(self._last_work + self.config.idle_unload)
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _on_idle(self) -> None:
        if self._pending_items() > 0:
            self._last_work = time.monotonic()  # items still decoding: that is work too
            return
        idle = time.monotonic() - self._last_work
        if self._trim_due and idle >= TRIM_AFTER:
            # The forward passes freed their activations, but glibc keeps the pages;
            # hand them back now that the burst is over.
            self._trim_due = False
            backend.trim_memory()
            with self._lock:
                self._stats.trims += 1
        if self._model is None or self.config.idle_unload <= 0:
            return
        if idle < self.config.idle_unload:
            return
        log.info("idle for %.0fs: unloading %s", self.config.idle_unload, self._info["id"])
        self._drop_model()
        with self._lock:
            self._state = ModelState.UNLOADED
            self._stats.unloads += 1
        self._on_state_change()

    def _drop_model(self) -> None:
        if self._model is not None:
            self._model = None
            backend.release_memory()

"""Features from a photodupd that is not this computer's daemon: a remote one over SSH, or a
private inline child.  One connection for the whole scan.

The connection (:class:`~photodupd.client.AsyncClient` over an endpoint of
:mod:`photodupd.transport`) lives on an event loop of its own, on a thread of its own, from
the moment the source opens (the model's readiness is awaited then) until :meth:`close`:
a program at the other end (ssh, the inline child) is started once, not per call.

What travels per photo depends on ``upload``:

* ``path`` (inline: the child reads the files itself, as the local daemon would);
* ``reduced`` (remote, the default): each photo is decoded here, in isolated decoder
  processes, by the daemon's own decode with the remote model's input spec; only the model's
  input goes (:mod:`photodupd.pixelcodec`, ~95 KB for a 224 x 224 model), and the pHash,
  size, format and EXIF facts come from the same local decode, so the result is what a
  local daemon would have answered;
* ``original`` (remote, for fast links): the file's bytes (RAW files still go reduced: the
  daemon knows a RAW by its name, which bytes do not carry).

Many requests are in flight at once so a 20-50 ms round trip never starves the remote model.
A dropped connection (ssh killed, a laptop asleep) is reopened with backoff and the
requests that were not answered are sent again (each request is answered whole or not at
all, so no photo is answered twice); every reply's model id is checked, so one scan never
mixes two models.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from photodup_tui.engine.daemon_features import to_result
from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.local_features import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT
from photodup_tui.engine.walk import has_raw_suffix
from photodupd import imaging, pixelcodec, protocol, rawimage
from photodupd.client import AsyncClient, DaemonUnavailable
from photodupd.decodepool import DecoderPool
from photodupd.imaging import Decoded, DecodeSpec, ImageError, PreprocessSpec
from photodupd.protocol import ErrorCode, FeatureItem, ModelState, RemoteError
from photodupd.transport import Endpoint

T = TypeVar("T")

UPLOADS: Final = ("path", "reduced", "original")
#: Items per request, and requests in flight: a request is answered whole, so a small one
#: loses little to a dropped link; 16 in flight keep the remote model's batches full
#: across a 50 ms round trip.
CHUNK: Final = 16
IN_FLIGHT: Final = 16
#: At most this many bytes per request and in flight (original uploads: 12 MP JPEGs are
#: 3-8 MB each; a frame holds at most 64 MiB).
CHUNK_BYTES: Final = 8 * 1024 * 1024
IN_FLIGHT_BYTES: Final = 48 * 1024 * 1024
#: Photos decoding here at once, per decoder process.
DECODES_PER_WORKER: Final = 4
#: How long the source keeps trying to get a dropped connection back.
RETRY_FOR: Final = 120.0
#: How long requests in flight may still finish after the user cancelled.
CANCEL_GRACE: Final = 2.0
#: How long the model may take to load over there.
MODEL_TIMEOUT: Final = 600.0


class SourceCancelled(Exception):
    """The user cancelled while the source was opening."""


@dataclass(slots=True)
class _Prepared:
    """One photo ready to go: its item, and what the local decode learnt (reduced)."""

    path: str
    item: dict[str, Any]
    size: int
    facts: Decoded | None = None


def _cpus() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


class LinkedFeatureSource:
    """A FeatureSource over one long-lived connection to a photodupd somewhere else."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        upload: str,
        mode: str,
        report: Report | None = None,
        cancel: threading.Event | None = None,
        decode_workers: int | None = None,
        retry_for: float = RETRY_FOR,
    ) -> None:
        """Connect and wait until the model there is ready.  ``mode``: "remote" or "inline",
        for messages.  Raises DaemonUnavailable (its message is the reason in one line),
        RemoteError, or SourceCancelled when ``cancel`` comes first."""
        if upload not in UPLOADS:
            raise ValueError(f"upload must be one of {', '.join(UPLOADS)}")
        self.endpoint = endpoint
        self.upload = upload
        self.mode = mode
        self.decode_workers = decode_workers or _cpus()
        self.photos_sent = 0
        self.bytes_sent = 0
        self._say = report or (lambda _message: None)
        self._cancel = cancel or threading.Event()
        self._down: str | None = None  # set once the connection is given up on
        self._pool: DecoderPool | None = None
        self._pool_started: threading.Thread | None = None
        self._pool_error: Exception | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="photodup-link", daemon=True
        )
        self._thread.start()
        self._client = AsyncClient(
            endpoint=endpoint, retry_for=retry_for, client_name="photodup-scan"
        )
        try:
            self.model = self._run(self._open())
        except BaseException:
            self.close()
            raise
        self.model_id = str(self.model["id"])
        self.dim = int(self.model.get("dim") or 0)
        self.spec = _spec(self.model)
        if self.upload == "reduced" and self.spec is None:
            self._say(
                f"{endpoint.label} does not say its model's input size (an older photodup): "
                "sending whole files instead of reduced images"
            )
            self.upload = "original"
        # Reduced uploads are decoded here; whole files and paths by the daemon there.
        welcome = self._client.welcome
        remote_raw = welcome is not None and welcome.get("decodes_raw", False)
        self.decodes_raw = rawimage.available() if self.upload == "reduced" else remote_raw
        if self.upload == "reduced":
            self._start_decoders()  # ready by the time the scan has walked and hashed

    def __enter__(self) -> LinkedFeatureSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop thread

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """End the connection (and the program behind it), the local decoders and the loop;
        idempotent."""
        if self._pool_started is not None:
            self._pool_started.join()
            self._pool_started = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _open(self) -> protocol.ActiveModel:
        """Hello, then ``status`` until the model is ready (the daemon there may be loading)."""
        await self._client.connect()
        deadline = time.monotonic() + MODEL_TIMEOUT
        last_state = None
        while True:
            if self._cancel.is_set():
                raise SourceCancelled
            status = await self._client.call(protocol.STATUS)
            state, model_id = status.get("state"), status.get("model")
            if state != last_state:
                self._say(f"model {model_id or '(choosing)'} ({self.mode}): {state}")
                last_state = state
            if state in (ModelState.READY, ModelState.UNLOADED) and model_id:
                model: protocol.ActiveModel = {
                    "id": model_id,
                    "dim": status.get("dim"),
                    "name": status.get("model_name"),
                    "device": status.get("device"),
                    "why": status.get("why") or "",
                    "state": str(state),
                }
                for key in ("device_why", "input_size", "input_resize"):
                    if key in status:
                        model[key] = status[key]
                return model
            if state == ModelState.FAILED:
                raise DaemonUnavailable(
                    f"{self.endpoint.label} could not load its model: {status.get('last_error')}",
                    permanent=True,
                )
            if time.monotonic() > deadline:
                raise DaemonUnavailable(f"the model did not load within {MODEL_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ reporting

    def served_by(self) -> str:
        """One line for the scan's summary: where the model ran, and what travelled."""
        device = self.model.get("device") or "?"
        line = f"{self.endpoint.label} ({self.mode}, {device})"
        if self.upload != "path" and self.photos_sent:
            per_photo = self.bytes_sent / self.photos_sent
            line += f"; {_kilobytes(per_photo)} sent per photo ({self.upload} upload)"
        return line

    # ------------------------------------------------------------------ computing

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        if not paths or cancel.is_set():
            return
        pool = self._decoders(paths)
        # Every frame written while this scan computes, resent ones included: what the link
        # really carried.  (Requests run concurrently, so per-request deltas would overlap.)
        sent_before = self._client.bytes_sent
        try:
            self._run(self._compute(list(paths), on_result, cancel, pool))
        finally:
            self.bytes_sent += self._client.bytes_sent - sent_before

    def _decoders(self, paths: Sequence[str]) -> DecoderPool | None:
        """The local decoders this upload needs, started once (reduced: already while the
        scan walked and hashed, see :meth:`_start_decoders`)."""
        if self.upload == "reduced" or (
            self.upload == "original" and any(map(has_raw_suffix, paths))
        ):
            self._start_decoders()
            assert self._pool_started is not None
            self._pool_started.join()
        if self._pool is not None and self._pool_error is not None:
            raise self._pool_error
        return self._pool

    def _start_decoders(self) -> None:
        """Start the local decoder processes on a thread (they take a second to import)."""
        if self._pool_started is not None:
            return
        pool = DecoderPool(
            self.decode_workers,
            DEFAULT_TIMEOUT,
            DEFAULT_MEMORY_MB,
            decode_fn="photodupd.pixelcodec:decode_for_upload",
        )
        self._pool = pool

        def start() -> None:
            try:
                pool.start()
            except Exception as exc:  # DecoderPoolError: said when the scan needs them
                self._pool_error = exc

        self._pool_started = threading.Thread(target=start, name="photodup-decoders", daemon=True)
        self._pool_started.start()

    async def _compute(
        self,
        paths: list[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
        pool: DecoderPool | None,
    ) -> None:
        """The pipeline, until done; a cancel stops new requests at once and gives those in
        flight :data:`CANCEL_GRACE` seconds (a link being retried could take minutes)."""
        work = asyncio.ensure_future(self._pipeline(paths, on_result, cancel, pool))
        cancelled_at: float | None = None
        while not work.done():
            await asyncio.wait({work}, timeout=0.1)
            if cancel.is_set() and cancelled_at is None:
                cancelled_at = time.monotonic()
            if cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE:
                work.cancel()
                break
        with contextlib.suppress(asyncio.CancelledError):
            await work

    async def _pipeline(
        self,
        paths: list[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
        pool: DecoderPool | None,
    ) -> None:
        ready: asyncio.Queue[_Prepared | None] = asyncio.Queue(maxsize=CHUNK * IN_FLIGHT)
        budget = _Budget(IN_FLIGHT_BYTES)
        producer = asyncio.create_task(self._produce(paths, ready, on_result, cancel, pool))
        senders = [
            asyncio.create_task(self._send(ready, on_result, cancel, budget))
            for _ in range(IN_FLIGHT)
        ]
        try:
            await producer
            for _ in senders:
                await ready.put(None)
            await asyncio.gather(*senders)
        finally:
            for task in (producer, *senders):
                task.cancel()
            await asyncio.gather(producer, *senders, return_exceptions=True)

    async def _produce(
        self,
        paths: list[str],
        ready: asyncio.Queue[_Prepared | None],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
        pool: DecoderPool | None,
    ) -> None:
        """Turn paths into items, in order of readiness; failures here are answered here."""
        if self.upload == "path":
            for path in paths:
                if cancel.is_set():
                    return
                await ready.put(_Prepared(path, {"path": protocol.path_for_wire(path)}, 0))
            return
        decoding: set[asyncio.Future[_Prepared | tuple[str, FeatureResult]]] = set()
        limit = DECODES_PER_WORKER * self.decode_workers
        pending = iter(paths)
        exhausted = False
        while (decoding or not exhausted) and not cancel.is_set():
            while not exhausted and len(decoding) < limit:
                upcoming = next(pending, None)
                if upcoming is None:
                    exhausted = True
                    break
                decoding.add(asyncio.ensure_future(self._prepare(upcoming, pool)))
            if not decoding:
                break
            done, decoding = await asyncio.wait(decoding, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                prepared = future.result()
                if isinstance(prepared, _Prepared):
                    await ready.put(prepared)
                else:
                    on_result(*prepared)
        for future in decoding:
            future.cancel()

    async def _prepare(
        self, path: str, pool: DecoderPool | None
    ) -> _Prepared | tuple[str, FeatureResult]:
        """What to send for ``path``, or its failure (a local decode error is the error the
        daemon would have answered for the file)."""
        try:
            if self.upload == "original" and not has_raw_suffix(path):
                data = await asyncio.to_thread(imaging.read_image_file, path)
                return _Prepared(path, {"data": data}, len(data))
            if pool is None or self.spec is None:
                raise ImageError(
                    ErrorCode.UNSUPPORTED_FORMAT,
                    f"{self.endpoint.label} is too old to be sent RAW files (upgrade it)",
                )
            # The pixel checks' thumbnail is made by the same local decode, in the worker.
            wants = DecodeSpec(self.spec, thumb=True)
            decoded = await asyncio.wrap_future(pool.submit(FeatureItem(path=path), wants))
        except ImageError as exc:
            return path, FeatureResult.failure(str(exc.code), exc.message)
        upload = pixelcodec.for_upload(decoded, self.spec)
        if not has_raw_suffix(path):
            # A file smaller than its model input (a small web image) goes as it is: the
            # daemon decodes it to the very same pixels, and fewer bytes travel.
            with contextlib.suppress(OSError, ImageError):
                if os.stat(path).st_size < len(upload.packed):
                    data = await asyncio.to_thread(imaging.read_image_file, path)
                    return _Prepared(path, {"data": data}, len(data), upload.decoded)
        return _Prepared(path, upload.item(), len(upload.packed), upload.decoded)

    async def _send(
        self,
        ready: asyncio.Queue[_Prepared | None],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
        budget: _Budget,
    ) -> None:
        """One of IN_FLIGHT senders: a chunk of what is ready, one request, its answers."""
        while True:
            first = await ready.get()
            if first is None:
                return
            chunk = [first]
            size = first.size
            while len(chunk) < CHUNK and size < CHUNK_BYTES:
                try:
                    more = ready.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if more is None:
                    ready.put_nowait(None)  # for a sibling; this one finishes its chunk first
                    break
                chunk.append(more)
                size += more.size
            if cancel.is_set():
                continue  # drain without sending: the scan keeps what it has
            await budget.take(size)
            try:
                results = await self._request(chunk)
            finally:
                await budget.give(size)
            for prepared, result in zip(chunk, results, strict=True):
                on_result(prepared.path, result)

    async def _request(self, chunk: list[_Prepared]) -> list[FeatureResult]:
        if self._down is not None:
            return [FeatureResult.failure("daemon_unavailable", self._down) for _ in chunk]
        try:
            # Files the daemon decodes (path, original) come back with their thumbnails.
            reply = await self._client.features([p.item for p in chunk], thumbs=True)
        except RemoteError as exc:
            return [FeatureResult.failure(exc.code, str(exc)) for _ in chunk]
        except DaemonUnavailable as exc:
            # Given up after the retry window (or at once: a permanent failure): the rest of
            # the scan is not kept waiting the same window for each of its requests.
            self._down = self._down or str(exc)
            return [FeatureResult.failure("daemon_unavailable", self._down) for _ in chunk]
        self.photos_sent += len(chunk)
        model = reply.get("model")
        model_id = model.get("id") if model else None
        if model_id != self.model_id:
            message = f"{self.endpoint.label} now serves {model_id}, this scan uses {self.model_id}"
            return [FeatureResult.failure("model_changed", message) for _ in chunk]
        items = reply.get("items", [])
        return [_merge(p, item) for p, item in zip(chunk, items, strict=True)]


class _Budget:
    """Bytes in flight: a request waits while others hold the budget (one always goes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    async def take(self, size: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size

    async def give(self, size: int) -> None:
        async with self._changed:
            self.used -= size
            self._changed.notify_all()


def _merge(prepared: _Prepared, item: protocol.ItemResult) -> FeatureResult:
    """The daemon's answer; for a reduced upload, its embedding with the local facts."""
    result = to_result(item)
    if prepared.facts is None or not result.ok:
        return result
    facts = prepared.facts
    if facts.thumb is None and result.thumb is not None:  # sent as data: the daemon's
        facts = replace(facts, thumb=result.thumb)
    return FeatureResult.from_decoded(facts, result.embedding)


def _spec(model: protocol.ActiveModel) -> PreprocessSpec | None:
    size, resize = model.get("input_size"), model.get("input_resize")
    if not isinstance(size, int) or not isinstance(resize, int):
        return None
    try:
        return PreprocessSpec(size=size, resize=resize)
    except ValueError:
        return None


def _kilobytes(count: float) -> str:
    return f"{count / 1024:,.1f} KB" if count < 1024 * 1024 else f"{count / 1048576:,.1f} MB"

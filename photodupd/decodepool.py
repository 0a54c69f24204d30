"""Isolated, bounded image decoding for the daemon (docs/safety.md rule 21).

Every image is decoded in a separate worker process, so a decoder that hangs,
crashes or eats memory costs one item, never the daemon:

* each worker is a fresh interpreter started with ``subprocess`` (fork+exec,
  safe in a threaded process): the daemon's torch threads are never forked,
  and the child imports only the decoder, not the daemon's ``__main__``
  (multiprocessing's "spawn" would re-run that script, and with it torch);
* the child caps its own address space (``RLIMIT_AS``) at ``memory_mb``;
* each job has a wall-clock timeout; a worker that overruns is killed and
  replaced and the item fails with ``timeout``; a worker that dies (signal,
  ``os._exit``) is replaced and the item fails with ``decoder_crashed``;
* one dispatcher thread per worker pulls jobs from a shared queue and talks to
  its process over a socket pair (:class:`multiprocessing.connection.Connection`,
  ``poll`` with the timeout), so other items keep flowing while one is stuck.

:meth:`DecoderPool.submit` only enqueues, so it is safe to call from an asyncio
loop thread; the daemon adds a done-callback to the future it returns, which hands
the decoded item on to the model thread.
A path item is read by the worker; a data item's bytes travel over the socket.

The workers are started by the first :meth:`~DecoderPool.submit` (or at once by
:meth:`~DecoderPool.start`) and stopped by :meth:`~DecoderPool.release` when
nothing is queued or running: an idle daemon holds no decoder processes.  Each
start is a *generation* (its own job queue, dispatcher threads and workers), so
a submit racing a release never lands in a queue whose threads are leaving.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final, Generic, Self, TypeVar

from photodupd.imaging import Decoded, DecodeSpec, ImageError, PreprocessSpec
from photodupd.protocol import ErrorCode, FeatureItem

DEFAULT_DECODE_FN: Final = "photodupd.imaging:decode_item"

#: How long a new worker may take to import the decoder and say "ready".
STARTUP_TIMEOUT: Final = 30.0

# The child's entry point.  Self-contained on purpose: it first receives the
# parent's sys.path (so it imports the same photodupd, and tests can inject
# decoders), then hands over to _worker_main.  argv: socket fd, parent pid,
# memory cap in MiB, decode function.
_BOOTSTRAP: Final = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = conn.recv()\n"
    "from photodupd.decodepool import _worker_main\n"
    "_worker_main(conn, int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])\n"
)

# Native libraries in the child use one thread each (the pool is the parallelism),
# and glibc keeps few malloc arenas: every idle thread and arena reserves address
# space that counts against the RLIMIT_AS cap without holding any data.
_CHILD_ENV: Final = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}


T = TypeVar("T")


class DecoderPoolError(Exception):
    """The pool itself cannot work (e.g. no worker could start); not a per-item error."""


@dataclass(slots=True)
class _Job:
    item: Any  # a FeatureItem for the daemon's decoders; any picklable job otherwise
    spec: Any
    future: Future[Any]


_STOP: Final = object()  # queue sentinel: one per dispatcher thread


class _Generation:
    """One start of the workers: a job queue and the dispatcher threads serving it."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []

    def stop(self) -> None:
        """Queue one stop per thread, behind any jobs already queued."""
        for _ in self.threads:
            self.jobs.put(_STOP)


class _Worker:
    """One decoder process and the parent's end of its socket."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe_exit(self) -> str:
        """How the process ended, waiting briefly for the kernel to report it."""
        try:
            code = self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "connection lost, process still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def signal_kill(self) -> None:
        """SIGKILL only: safe from any thread; the owner sees EOF and cleans up."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def kill(self) -> None:
        """SIGKILL, close the socket and reap; only the owning dispatcher thread calls this.
        Workers hold no state, so there is nothing to shut down gently."""
        self.signal_kill()
        self.conn.close()
        # A process stuck in uninterruptible I/O (a dead network mount) dies when
        # the I/O returns; close() reaps it then.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5.0)


class IsolatedPool(Generic[T]):
    """A fixed number of isolated decoder processes serving a shared queue, started on
    first use and stopped by :meth:`release` when idle.

    ``decode_fn`` is a ``"module:function"`` resolved in each child, called as
    ``fn(job, spec)`` and returning a ``result_type``: every untrusted decode photodup
    makes (features, the pixel checks' full-detail decodes, previews) runs through one of
    these, under the same memory cap, timeout and crash isolation.
    """

    def __init__(
        self,
        workers: int,
        timeout: float,
        memory_mb: int,
        decode_fn: str,
        result_type: type[T],
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if memory_mb < 64:
            raise ValueError("memory_mb must be at least 64")
        if ":" not in decode_fn:
            raise ValueError("decode_fn must look like 'package.module:function'")
        self.workers = workers
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.decode_fn = decode_fn
        self.result_type = result_type
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._started = False  # start() was called (it may be called once)
        self._closed = False
        self._current: _Generation | None = None  # the running workers; None when released
        self._leaving: list[_Generation] = []  # released, their threads not joined yet
        self._live: dict[int, _Worker] = {}  # id(worker) -> worker, every generation's
        self._all_processes: list[subprocess.Popen[bytes]] = []
        self._counts = {
            "busy": 0,
            "restarts": 0,
            "timeouts": 0,
            "crashes": 0,
            "decoded": 0,
            "failed": 0,
            "starts": 0,  # generations started (first use, and first use after a release)
            "releases": 0,  # generations stopped while idle
        }

    # ------------------------------------------------------------------
    # Lifecycle

    def start(self) -> None:
        """Start every worker now and wait until each has imported its decoder (without
        this, the first :meth:`submit` starts them).

        Raises :class:`DecoderPoolError` (after cleaning up) when a worker cannot
        start, e.g. ``decode_fn`` does not exist or ``memory_mb`` is too small.
        """
        ready = [threading.Event() for _ in range(self.workers)]
        errors: list[str] = []
        with self._lock:
            if self._started or self._current is not None:
                raise RuntimeError("decoder pool already started")
            if self._closed:
                raise RuntimeError("decoder pool is closed")
            self._started = True
            self._current = self._launch(ready, errors)
        for event in ready:
            event.wait()
        if errors:
            self.close()
            raise DecoderPoolError(errors[0])

    def submit(self, item: Any, spec: Any = None) -> Future[T]:
        """Queue one job, starting the workers if they are not running; never blocks (the
        workers start in their own threads).  The future raises :class:`ImageError` for
        item errors."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("decoder pool is closed")
            if self._current is None:
                self._current = self._launch(None, None)
            self._current.jobs.put(_Job(item, spec, future))
        return future

    def release(self) -> bool:
        """Stop the worker processes if nothing is queued or being decoded, and wait until
        they are gone; the next :meth:`submit` starts new ones.  False (and nothing stopped)
        when work is pending or the workers were not running."""
        with self._lock:
            generation = self._current
            if generation is None or self._closed:
                return False
            if self._counts["busy"] or generation.jobs.qsize():
                return False
            self._current = None
            self._leaving.append(generation)
            self._counts["releases"] += 1
        # A job taken but not yet counted busy is finished before its thread sees the stop.
        generation.stop()
        for thread in generation.threads:
            thread.join()
        with self._lock:
            self._leaving.remove(generation)
        return True

    def _launch(self, ready: list[threading.Event] | None, errors: list[str] | None) -> _Generation:
        """A new generation, its threads started (each spawns its worker); under _lock."""
        generation = _Generation()
        self._counts["starts"] += 1
        for slot in range(self.workers):
            thread = threading.Thread(
                target=self._dispatch,
                args=(generation, slot, ready[slot] if ready else None, errors),
                name=f"photodupd-decoder-{slot}",
                daemon=True,
            )
            generation.threads.append(thread)
            thread.start()
        return generation

    def close(self, grace: float = 0.0) -> None:
        """Stop the pool: queued items fail with ``shutting_down``, running ones get up to
        ``grace`` seconds to finish, then every worker process is killed and reaped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            generations = [g for g in (self._current, *self._leaving) if g is not None]
            self._current = None
        threads = [thread for generation in generations for thread in generation.threads]
        for generation in generations:
            for job in self._drain_queue(generation.jobs):
                _fail(job.future, ErrorCode.SHUTTING_DOWN, "decoder pool closed")
            generation.stop()
        deadline = time.monotonic() + max(0.0, grace)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._closing.set()
        with self._lock:
            live = list(self._live.values())
        for worker in live:  # wakes the dispatchers blocked in poll() with an EOF
            worker.signal_kill()
        for thread in threads:
            thread.join()
        for process in self._all_processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5.0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters for ``status``: workers, whether they are running (started and not
        released), busy, queued, restarts, timeouts, crashes, decoded, failed, starts,
        releases, and the worker pids."""
        with self._lock:
            counts = dict(self._counts)
            pids = sorted(worker.pid for worker in self._live.values())
            current = self._current
        return {
            "workers": self.workers,
            "running": current is not None,
            "queued": current.jobs.qsize() if current is not None else 0,
            "pids": pids,
            **counts,
        }

    # ------------------------------------------------------------------
    # Dispatcher threads

    def _dispatch(
        self,
        generation: _Generation,
        slot: int,
        ready: threading.Event | None,
        errors: list[str] | None,
    ) -> None:
        """One slot's thread.  With ``ready`` (an eager :meth:`start`) a worker that cannot
        start ends the thread and is reported in ``errors``; otherwise the next job retries
        the start (and fails with ``decoder_crashed`` if it cannot)."""
        worker: _Worker | None = None
        failures = 0
        try:
            try:
                worker = self._spawn(slot)
            except DecoderPoolError as exc:
                if errors is not None:
                    errors.append(str(exc))
                    return
            finally:
                if ready is not None:
                    ready.set()
            while True:
                job = generation.jobs.get()
                if job is _STOP or not isinstance(job, _Job):
                    return
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                if worker is None:
                    try:
                        worker = self._spawn(slot)
                        failures = 0
                        with self._lock:
                            self._counts["restarts"] += 1
                    except DecoderPoolError as exc:
                        self._finish(job, ErrorCode.DECODER_CRASHED, str(exc))
                        failures += 1
                        # Back off so a broken environment does not spin; close() wakes us.
                        self._closing.wait(min(5.0, 0.1 * 2**failures))
                        continue
                try:
                    healthy = self._run(worker, job)
                except Exception as exc:  # a bug here must not strand the caller's future
                    self._finish(job, ErrorCode.DECODER_CRASHED, f"decoder pool error: {exc!r}")
                    healthy = False
                if not healthy:
                    worker.kill()
                    self._forget(worker)
                    worker = None
                    if not self._closing.is_set():
                        # Replace now, so the next item does not wait for a cold start.
                        try:
                            worker = self._spawn(slot)
                            with self._lock:
                                self._counts["restarts"] += 1
                        except DecoderPoolError:
                            worker = None  # retried (and reported) with the next job
        finally:
            if worker is not None:
                worker.kill()
                self._forget(worker)

    def _run(self, worker: _Worker, job: _Job) -> bool:
        """Run one job on ``worker``; False when the worker must be replaced."""
        with self._lock:
            self._counts["busy"] += 1
        try:
            return self._exchange(worker, job)
        finally:
            with self._lock:
                self._counts["busy"] -= 1

    def _exchange(self, worker: _Worker, job: _Job) -> bool:
        try:
            worker.conn.send((job.item, job.spec))
            answered = worker.conn.poll(self.timeout)
            reply = worker.conn.recv() if answered else None
        except (EOFError, OSError):
            if self._closing.is_set():  # close() killed the worker under this job
                self._finish(job, ErrorCode.SHUTTING_DOWN, "decoder pool closed")
            else:
                with self._lock:
                    self._counts["crashes"] += 1
                self._finish(
                    job, ErrorCode.DECODER_CRASHED, f"decoder process {worker.describe_exit()}"
                )
            return False
        except Exception as exc:  # an unreadable reply: treat the worker as broken
            with self._lock:
                self._counts["crashes"] += 1
            self._finish(job, ErrorCode.DECODER_CRASHED, f"bad reply from decoder: {exc!r}")
            return False
        if reply is None:
            with self._lock:
                self._counts["timeouts"] += 1
            self._finish(
                job,
                ErrorCode.TIMEOUT,
                f"decoding took longer than {self.timeout:g} s; the decoder was replaced",
            )
            return False
        status = reply[0] if isinstance(reply, tuple) and reply else None
        if status == "ok" and isinstance(reply[1], self.result_type):
            with self._lock:
                self._counts["decoded"] += 1
            job.future.set_result(reply[1])
            return True
        if status == "error":
            self._finish(job, ErrorCode(reply[1]), str(reply[2]))
            return True
        with self._lock:
            self._counts["crashes"] += 1
        self._finish(job, ErrorCode.DECODER_CRASHED, "unexpected reply from decoder")
        return False

    def _finish(self, job: _Job, code: ErrorCode, message: str) -> None:
        with self._lock:
            self._counts["failed"] += 1
        _fail(job.future, code, message)

    @staticmethod
    def _drain_queue(jobs: queue.SimpleQueue[_Job | object]) -> list[_Job]:
        drained: list[_Job] = []
        stops = 0
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job):
                if job.future.set_running_or_notify_cancel():
                    drained.append(job)
            else:
                stops += 1
        for _ in range(stops):
            jobs.put(_STOP)
        return drained

    # ------------------------------------------------------------------
    # Worker processes

    def _spawn(self, slot: int) -> _Worker:
        """Start a worker for ``slot`` and wait for its "ready"; DecoderPoolError if it cannot."""
        if self._closing.is_set():
            raise DecoderPoolError("decoder pool closed")
        parent_sock, child_sock = socket.socketpair()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOTSTRAP,
                    str(child_sock.fileno()),
                    str(os.getpid()),
                    str(self.memory_mb),
                    self.decode_fn,
                ],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, **_CHILD_ENV},
                # Its own process group: a Ctrl-C meant for the daemon does not kill
                # decoders.  Not its own session: with autogroup scheduling (most Linux
                # desktops) each session is scheduled as a group of its own, so decoders
                # in new sessions would escape the daemon's nice level and CPU share.
                process_group=0,
            )
        except OSError as exc:
            parent_sock.close()
            raise DecoderPoolError(f"cannot start a decoder process: {exc}") from None
        finally:
            child_sock.close()
        worker = _Worker(process, Connection(parent_sock.detach()))
        with self._lock:
            self._all_processes = [p for p in self._all_processes if p.poll() is None]
            self._all_processes.append(process)
            registered = not self._closing.is_set()
            if registered:
                self._live[id(worker)] = worker
        if not registered:
            worker.kill()
            raise DecoderPoolError("decoder pool closed")
        try:
            worker.conn.send(list(sys.path))
            if not worker.conn.poll(STARTUP_TIMEOUT):
                raise DecoderPoolError(f"decoder process not ready after {STARTUP_TIMEOUT:g} s")
            hello = worker.conn.recv()
            if not (isinstance(hello, tuple) and hello and hello[0] == "ready"):
                reason = hello[1] if isinstance(hello, tuple) and len(hello) > 1 else hello
                raise DecoderPoolError(f"decoder process failed to start: {reason}")
        except (EOFError, OSError):
            reason = worker.describe_exit()
            worker.kill()
            self._forget(worker)
            raise DecoderPoolError(f"decoder process {reason} while starting") from None
        except DecoderPoolError:
            worker.kill()
            self._forget(worker)
            raise
        return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._live.pop(id(worker), None)


class DecoderPool(IsolatedPool[Decoded]):
    """The daemon's decoders: ``decode_fn(item: FeatureItem, spec: PreprocessSpec |
    DecodeSpec | None) -> Decoded`` (a DecodeSpec may ask for the thumbnail too)."""

    def __init__(
        self,
        workers: int,
        timeout: float,
        memory_mb: int,
        decode_fn: str = DEFAULT_DECODE_FN,
    ) -> None:
        super().__init__(workers, timeout, memory_mb, decode_fn, Decoded)

    def submit(
        self, item: FeatureItem, spec: PreprocessSpec | DecodeSpec | None = None
    ) -> Future[Decoded]:
        return super().submit(item, spec)


def _fail(future: Future[Any], code: ErrorCode, message: str) -> None:
    if not future.done():
        future.set_exception(ImageError(code, message))


# --------------------------------------------------------------------------
# Child side


def _resolve(decode_fn: str) -> Callable[[Any, Any], Any]:
    module_name, _, attr = decode_fn.partition(":")
    function = getattr(importlib.import_module(module_name), attr)
    if not callable(function):
        raise TypeError(f"{decode_fn} is not callable")
    return function


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this process if the daemon dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _limit_memory(memory_mb: int) -> None:
    import resource

    limit = memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _address_space_mb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None  # not Linux: no cheap way to ask, and the cap still applies


def _worker_main(conn: Connection, parent_pid: int, memory_mb: int, decode_fn: str) -> None:
    """Serve decode jobs until the parent closes the socket."""
    import warnings

    _die_with_parent(parent_pid)
    warnings.simplefilter("ignore")  # this process has no one to show warnings to
    try:
        function = _resolve(decode_fn)
        from PIL import Image, ImageFile

        ImageFile.LOAD_TRUNCATED_IMAGES = False
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _limit_memory(memory_mb)
        footprint = _address_space_mb()
        if footprint is not None and footprint + 64 > memory_mb:
            raise MemoryError(
                f"memory_mb={memory_mb} leaves no room: the decoder alone maps {footprint} MiB"
            )
    except Exception as exc:
        conn.send(("fatal", f"cannot load {decode_fn}: {type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            item, spec = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[Any, ...] = ("ok", function(item, spec))
        except ImageError as exc:
            reply = ("error", exc.code.value, exc.message)
        except MemoryError:
            reply = ("error", ErrorCode.TOO_LARGE.value, f"over the {memory_mb} MiB decoder limit")
        except Exception as exc:
            reply = ("error", ErrorCode.DECODER_CRASHED.value, f"decoder raised {exc!r}"[:300])
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # the result did not pickle
            conn.send(("error", ErrorCode.DECODER_CRASHED.value, f"unsendable result: {exc!r}"))

"""Features from a Ray cluster (``photodup scan --ray ADDRESS``): decoding and the model spread
over many machines, everything else (walk, hashes, cache, grouping) here as always.

The files that need features become a Ray Data ``Dataset`` of paths, then two stages:

* ``decode_batch`` *tasks* (one CPU each): photodupd's own isolated, capped decoders, so a
  bomb, a truncated file or a hang is that row's error, never a failed job;
* ``Embedder`` *actors*: the model photodupd would load (the same backends, the same served
  id), one per GPU when the cluster has GPUs, else between one and half the cluster's CPUs
  (Ray Data grows the pool while decoded rows wait).

Both live in :mod:`photodupd.raywork`, with the pipeline that chains them (run in this
process, or, for a Ray Client (``ray://``), whose ``ray`` cannot run Ray Data's executor,
in an actor on the cluster that this process pulls from).  This module names that module
but never imports it itself: the scanning process imports no model code (the import
contracts in pyproject.toml; the same "module:function" hand-over as the decoder pool's
``decode_fn``), and ``ray`` is imported only when a scan asks for it.

Where the bytes come from: when every node sees the driver's files at the same paths (a
shared mount: checked on a sample, per node), the workers read them; otherwise this process
decodes each photo in its own isolated decoders and ships the model's input
(:mod:`photodupd.pixelcodec`'s reduced upload, ~95 KB a photo) to the model actors.

Results stream back as the pipeline yields them; each path is answered once (a retried
task or a restarted actor can hand a row back twice: the second is dropped), so the cache
gets one row per file, under the model's id.  A cancel stops delivery at once and the
pipeline with it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import random
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.features import FeatureResult
from photodupd import rawimage
from photodupd.client import DaemonUnavailable
from photodupd.config import DaemonConfig
from photodupd.decodepool import DecoderPool
from photodupd.imaging import DecodeSpec, ImageError, PreprocessSpec
from photodupd.protocol import FeatureItem

#: The module Ray's workers run (named, never imported here at import time).
WORKER_MODULE: Final = "photodupd.raywork"
ADDRESS_HELP: Final = "local | auto | ray://HOST:PORT"
#: Rows per decoding task and per model batch: small enough that progress and a cancel are
#: prompt, big enough that a forward pass is efficient (photodupd's batches are <= 32).
DECODE_BATCH: Final = 16
EMBED_BATCH: Final = 32
#: Files whose sizes are compared on every node to decide whether the workers can read them.
VISIBILITY_SAMPLE: Final = 16
#: How long rows still in flight may arrive after a cancel before the pipeline is dropped.
CANCEL_GRACE: Final = 2.0
#: Packed photos the driver ships at once (reduced upload): ~95 KB each.
SHIP_BATCH: Final = 32
SHIP_IN_FLIGHT_PER_ACTOR: Final = 2
#: Runs of a decoding task whose Ray worker was lost (a node gone): the decoders' own
#: isolation means a file never takes the Ray worker down with it.
TASK_RETRIES: Final = 5
#: How long a cluster's address may take to accept a connection before the scan gives up.
CONNECT_TIMEOUT: Final = 5.0


class RayUnavailable(DaemonUnavailable):
    """Ray is not installed, or the cluster cannot be reached."""


@dataclass(frozen=True, slots=True)
class RaySettings:
    """What the scan asks of the cluster (``[daemon]`` keys and flags)."""

    address: str  # local | auto | ray://host:port
    model: str = "auto"
    clip_weights: str = "float16"
    weights: str | None = None
    model_config: str | None = None
    decode_timeout: float = DaemonConfig().decode_timeout
    decode_memory_mb: int = DaemonConfig().decode_memory_mb
    #: auto (check on a sample) | shared (the workers read the paths) | ship (this computer
    #: decodes and sends the model's input)
    files: str = "auto"
    #: CPUs for a Ray instance started by ``local`` (None: all of this machine's)
    local_cpus: int | None = None
    #: model actors (None: sized from the cluster)
    actors: int | None = None


def check_address(address: str) -> str:
    """``address`` if it is one photodup understands, else ValueError saying what is."""
    if address in ("local", "auto") or address.startswith("ray://"):
        return address
    raise ValueError(f"ray must be {ADDRESS_HELP}, not {address!r}")


def import_ray() -> Any:
    """The ``ray`` module, or RayUnavailable saying how to get it."""
    try:
        import ray
        import ray.data  # the extra, not just ray's core
    except ImportError as exc:
        raise RayUnavailable(
            f"Ray is not installed ({exc}): pip install 'photodup[ray]'", permanent=True
        ) from None
    return ray


class RayFeatureSource:
    """A FeatureSource on a Ray cluster; :meth:`close` disconnects (and stops a local Ray)."""

    def __init__(
        self,
        settings: RaySettings,
        *,
        report: Report | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.address = check_address(settings.address)
        self._say = report or (lambda _message: None)
        self._cancel = cancel or threading.Event()
        self._ray = import_ray()
        self._worker = importlib.import_module(WORKER_MODULE)
        self._owned = False  # this source started (or connected) Ray, so it ends it
        self._owner: _RayOwner | None = None
        self.files_mode = "none needed (every photo's features came from the cache)"
        self.photos_shipped = 0
        self.bytes_shipped = 0
        self._connect()
        try:
            self.cpus, self.gpus = self._resources()
            self.model = self._describe_model()
        except BaseException:
            self.close()
            raise
        self.model_id: str = str(self.model["id"])
        self.dim = int(self.model["dim"])
        # The workers decode shared files, this computer shipped ones: RAW files are asked
        # about only when both can read them (which one decodes is known only per scan).
        self.decodes_raw = bool(self.model.get("decodes_raw")) and rawimage.available()
        self.actors = self._actor_count()

    # ------------------------------------------------------------------ the cluster

    def _connect(self) -> None:
        ray = self._ray
        self._quiet()
        if ray.is_initialized():  # the caller's own Ray (a program embedding photodup, tests)
            self._say("using the Ray instance this process already runs")
            return
        target = self._target()
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if target == "local":
            self._say("starting a local Ray instance for this scan")
            kwargs["num_cpus"] = self.settings.local_cpus
        else:
            self._say(f"connecting to the Ray cluster at {target}")
            _answers(target)
            kwargs["address"] = target
        self._owner, error = _start_ray(ray, kwargs, self._say)
        if error is not None:  # ConnectionError, a version mismatch, a bad address ...
            self._owner = None
            raise RayUnavailable(f"cannot reach Ray at {target}: {error}")
        self._owned = True

    def _target(self) -> str:
        """What ``ray.init`` is given: ``auto`` is the cluster RAY_ADDRESS names (a head's
        GCS ``host:port``, or a ``ray://`` Ray Client address)."""
        if self.address != "auto":
            return self.address
        target = os.environ.get("RAY_ADDRESS", "").strip()
        if not target:
            raise RayUnavailable("ray = auto needs RAY_ADDRESS (or give the address)")
        return target

    def _quiet(self) -> None:
        """Ray Data's own progress bars and per-run log lines would fight with the scan's
        progress line (and the TUI): the scan reports progress itself."""
        import logging

        self._worker.quiet_ray_data()
        # "SIGTERM handler is not set ... not the main thread", the token notice ...: the
        # scan's own lines say what is happening.
        logging.getLogger("ray").setLevel(logging.ERROR)

    def _resources(self) -> tuple[int, int]:
        total = self._ray.cluster_resources()
        return int(total.get("CPU", 0)), int(total.get("GPU", 0))

    def _describe_model(self) -> dict[str, Any]:
        s = self.settings
        self._say(f"model {s.model}: loading on the Ray cluster")
        # Half a CPU: it fits on any node, even a 1-CPU one, whatever else runs there.
        task = self._ray.remote(num_cpus=0.5)(self._worker.describe_model)
        ref = task.remote(s.model, s.clip_weights, s.weights, s.model_config)
        described: dict[str, Any] = self._wait(ref)
        self._say(f"model {described['id']} (ray): ready ({described['why']})")
        return described

    def _wait(self, ref: Any) -> Any:
        """``ray.get`` that a cancel interrupts (SourceCancelled-like: Cancelled upstream)."""
        while True:
            ready, _ = self._ray.wait([ref], timeout=0.1)
            if ready:
                try:
                    return self._ray.get(ready[0])
                except Exception as exc:  # RayTaskError: e.g. the model could not load there
                    raise RayUnavailable(f"on the Ray cluster: {exc}") from None
            if self._cancel.is_set():
                self._ray.cancel(ref, force=True)
                raise RayUnavailable("cancelled")

    def _actor_count(self) -> int:
        """One model actor per GPU; without GPUs, half the CPUs (decoding needs the rest)."""
        if self.settings.actors:
            return self.settings.actors
        if self.gpus:
            return self.gpus
        return max(1, self.cpus // 2)

    def _actor_cpus(self) -> float:
        return 1.0 if self.cpus >= 2 else 0.5

    def close(self) -> None:
        """Disconnect (a local Ray instance stops with it); idempotent."""
        if self._owned and self._owner is not None:
            self._owned = False
            self._owner.stop()
            self._owner = None

    def __enter__(self) -> RayFeatureSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def served_by(self) -> str:
        """One line for the scan's summary: where, how big, and how the files got there."""
        if self.address == "local":
            where = "a local Ray instance"
        elif self.address == "auto":
            where = f"Ray at {os.environ.get('RAY_ADDRESS', 'auto')} (RAY_ADDRESS)"
        else:
            where = f"Ray at {self.address}"
        gpus = f", {self.gpus} GPUs" if self.gpus else ""
        actors = f"{self.actors} model {'actor' if self.actors == 1 else 'actors'}"
        line = f"{where} ({self.cpus} CPUs{gpus}; {actors}); files: {self.files_mode}"
        if self.photos_shipped:
            line += f", {self.bytes_shipped / self.photos_shipped / 1024:,.1f} KB per photo"
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
        wanted = set(paths)
        answered: set[str] = set()
        lock = threading.Lock()  # shipping answers its decode failures from the pipeline's thread

        def answer(path: str, result: FeatureResult) -> None:
            # Once per path, whatever Ray retried or restarted behind us.
            with lock:
                if path not in wanted or path in answered or cancel.is_set():
                    return
                answered.add(path)
            on_result(path, result)

        shared = self._workers_see(paths)
        if shared:
            self.files_mode = "shared mount (the workers read each path)"
            batches = self._shared_pipeline(list(paths))
        else:
            self.files_mode = "shipped by this computer (reduced upload)"
            batches = self._shipped(list(paths), answer, cancel)
        self._drain(batches, answer, cancel)

    def _workers_see(self, paths: Sequence[str]) -> bool:
        """Does every node see a sample of the files, with the sizes seen here?"""
        if self.settings.files != "auto":
            return self.settings.files == "shared"
        sample = random.Random(len(paths)).sample(list(paths), min(VISIBILITY_SAMPLE, len(paths)))
        here = self._worker.stat_paths(sample)
        strategy = importlib.import_module("ray.util.scheduling_strategies")
        task = self._ray.remote(num_cpus=0)(self._worker.stat_paths)
        refs = [
            task.options(
                scheduling_strategy=strategy.NodeAffinitySchedulingStrategy(node["NodeID"], False)
            ).remote(sample)
            for node in self._ray.nodes()
            if node.get("Alive") and node.get("Resources", {}).get("CPU")
        ]
        return all(self._wait(ref) == here for ref in refs)

    def _embedder_args(self) -> dict[str, Any]:
        s = self.settings
        return {
            # The concrete model the probe resolved (never "auto", which a node without the
            # CLIP weights would resolve to another model); each node finds the weights in
            # its own cache, or at the path the user gave (which must exist on every node).
            # Every row carries the id its actor served, checked in _results.
            "model": s.model if s.weights else self.model["name"],
            "clip_weights": s.clip_weights,
            "weights": s.weights,
            "model_config": s.model_config,
            "threads": max(1, int(self._actor_cpus())),
            "side": int(self.model["input_size"]),
        }

    def _shared_pipeline(self, paths: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """The Ray Data pipeline, workers reading the files: decode tasks -> model actors
        (:func:`photodupd.raywork.shared_pipeline`), run in this process, or on the cluster
        when this process is a Ray Client (whose ``ray`` cannot run Ray Data's executor)."""
        plan = self._pipeline_plan(len(paths))
        if importlib.import_module("ray.util.client").ray.is_connected():
            return self._run_on_cluster(paths, plan)
        batches: Iterator[dict[str, np.ndarray]] = self._worker.shared_pipeline(paths, plan)
        return batches

    def _pipeline_plan(self, count: int) -> dict[str, Any]:
        """What :func:`photodupd.raywork.shared_pipeline` builds, in plain values."""
        s = self.settings
        decode = {
            "batch_size": DECODE_BATCH,
            "num_cpus": self._actor_cpus(),
            "max_retries": TASK_RETRIES,
            "fn_kwargs": {
                "size": int(self.model["input_size"]),
                "resize": int(self.model["input_resize"]),
                "timeout": s.decode_timeout,
                "memory_mb": s.decode_memory_mb,
            },
        }
        embed: dict[str, Any] = {
            "batch_size": EMBED_BATCH,
            "fn_constructor_kwargs": self._embedder_args(),
            # On CPUs a pool Ray Data grows from one to :attr:`actors` while decoded rows
            # wait; one actor per GPU.
            "num_cpus": self._actor_cpus(),
            "min_size": 1 if self.settings.actors is None else self.actors,
            "max_size": self.actors,
        }
        if self.gpus:
            embed.update(num_gpus=1, num_cpus=1, min_size=self.actors)
        return {
            "blocks": max(1, min(count // DECODE_BATCH, 4096)),
            "decode": decode,
            "embed": embed,
        }

    def _run_on_cluster(
        self, paths: list[str], plan: dict[str, Any]
    ) -> Iterator[dict[str, np.ndarray]]:
        """Ray Client: the pipeline runs in a :class:`photodupd.raywork.PipelineRunner` actor
        (no CPU of its own: it only drives), this process pulls its batches, one call ahead
        so that the next batch is on its way while this one is answered."""
        runner_class = self._ray.remote(num_cpus=0, max_restarts=0)(self._worker.PipelineRunner)
        runner = runner_class.remote(paths, plan)
        try:
            pending = [runner.next_batch.remote(), runner.next_batch.remote()]
            while True:
                batch = self._ray.get(pending.pop(0))
                if batch is None:
                    return
                pending.append(runner.next_batch.remote())
                yield batch
        finally:
            with contextlib.suppress(Exception):
                self._ray.kill(runner)  # ends the pipeline: its tasks and actors go with it

    def _drain(
        self,
        batches: Iterator[dict[str, np.ndarray]],
        answer: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        """Hand each row to ``answer`` as the pipeline yields it.  The pipeline is pulled on a
        thread of its own so that a cancel is heard at once, not at the next batch."""
        rows: queue.Queue[dict[str, np.ndarray] | BaseException | None] = queue.Queue(maxsize=4)
        stop = threading.Event()

        def pull() -> None:
            try:
                for batch in batches:
                    while not stop.is_set():
                        with contextlib.suppress(queue.Full):
                            rows.put(batch, timeout=0.1)
                            break
                    if stop.is_set():
                        break
            except BaseException as exc:
                rows.put(exc)
            finally:
                close = getattr(batches, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        close()  # ends the streaming executor: its tasks and actors go
                rows.put(None)

        puller = threading.Thread(target=pull, name="photodup-ray", daemon=True)
        puller.start()
        try:
            while True:
                if cancel.is_set():
                    return
                try:
                    item = rows.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise RayUnavailable(f"the Ray job failed: {item}") from item
                for path, result in _results(item, self.model_id):
                    answer(path, result)
        finally:
            stop.set()
            puller.join(CANCEL_GRACE if cancel.is_set() else None)

    # ------------------------------------------------------------------ shipping the files

    def _shipped(
        self,
        paths: list[str],
        answer: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> Iterator[dict[str, np.ndarray]]:
        """The workers cannot read the files: decode here (isolated decoders, the reduced
        upload's pixels), ship each batch to a pool of model actors (Ray restarts a lost one
        and retries its batches).  A photo that fails to decode here is answered here."""
        model = PreprocessSpec(
            size=int(self.model["input_size"]), resize=int(self.model["input_resize"])
        )
        spec = DecodeSpec(model=model, thumb=True)  # the pixel checks' thumbnail too
        actor_class = self._ray.remote(max_restarts=-1, max_task_retries=-1)(self._worker.Embedder)
        options: dict[str, Any] = {"num_cpus": self._actor_cpus()}
        if self.gpus:
            options = {"num_gpus": 1, "num_cpus": 1}
        actors = [
            actor_class.options(**options).remote(**self._embedder_args())
            for _ in range(self.actors)
        ]
        workers = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        pool = DecoderPool(
            workers,
            self.settings.decode_timeout,
            self.settings.decode_memory_mb,
            decode_fn="photodupd.pixelcodec:decode_for_upload",
        )
        try:
            yield from self._ship(paths, pool, spec, actors, answer, cancel)
        finally:
            pool.close()
            for actor in actors:
                with contextlib.suppress(Exception):
                    self._ray.kill(actor)

    def _ship(
        self,
        paths: list[str],
        pool: Any,
        spec: Any,
        actors: list[Any],
        answer: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> Iterator[dict[str, np.ndarray]]:
        in_flight: list[Any] = []
        limit = SHIP_IN_FLIGHT_PER_ACTOR * len(actors)
        turn = 0
        for start in range(0, len(paths), SHIP_BATCH):
            if cancel.is_set():
                return
            chunk = paths[start : start + SHIP_BATCH]
            futures = [pool.submit(FeatureItem(path=p), spec) for p in chunk]
            batch = self._packed_rows(chunk, futures, answer)
            if batch is not None:
                in_flight.append(actors[turn % len(actors)].__call__.remote(batch))
                turn += 1
            while len(in_flight) >= limit or (in_flight and start + SHIP_BATCH >= len(paths)):
                done, in_flight = self._ray.wait(in_flight, num_returns=1, timeout=0.1)
                for ref in done:
                    yield self._ray.get(ref)
                if cancel.is_set():
                    return

    def _packed_rows(
        self, chunk: list[str], futures: list[Any], answer: Callable[[str, FeatureResult], None]
    ) -> dict[str, np.ndarray] | None:
        rows = self._worker.empty_rows(np.asarray(chunk, dtype=object), 1)
        del rows["pixels"]
        packed = np.full(len(chunk), b"", dtype=object)
        for index, (path, future) in enumerate(zip(chunk, futures, strict=True)):
            try:
                decoded = future.result()
            except ImageError as exc:
                answer(path, FeatureResult.failure(str(exc.code), exc.message))
                continue
            packed[index] = decoded.pixels.tobytes()  # decode_for_upload packed them
            self._worker.put_facts(rows, index, decoded)
            self.photos_shipped += 1
            self.bytes_shipped += len(packed[index])
        keep = np.asarray(rows["ok"], dtype=bool)
        if not keep.any():
            return None
        rows["packed"] = packed
        return {name: column[keep] for name, column in rows.items()}


def _answers(address: str) -> None:
    """RayUnavailable at once when nothing listens at ``address``'s host and port: ``ray.init``
    itself would retry a dead address for half a minute (Ray Client) or minutes (a GCS)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():  # not host:port (e.g. RAY_ADDRESS=auto): Ray decides
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayUnavailable(
            f"cannot reach Ray at {address}: nothing answers at {host}:{port} ({reason}); "
            "is the cluster's head running (ray start --head)?"
        ) from None


#: A Ray Client server forks a session server for each connection, and now and then that
#: fork dies at birth (ray-project/ray#63202, a few percent of connections): the same
#: connection made again works.  Ray says so in one of two ways: "Starting Ray client
#: server failed", or, when the fork died while the proxy was reading its command line
#: (``proxier.py`` waits for it with psutil), "psutil.ZombieProcess".  Other errors are not
#: retried (a wrong address, a version mismatch stay wrong).
CLIENT_ATTEMPTS: Final = 3
CLIENT_FLAKES: Final = ("Starting Ray client server failed", "psutil.ZombieProcess")


def _start_ray(
    ray: Any, kwargs: dict[str, Any], say: Callable[[str], None]
) -> tuple[_RayOwner | None, BaseException | None]:
    """Ray started (its owner thread) or what went wrong, connecting again after a session
    server that died at birth (CLIENT_FLAKES), at most CLIENT_ATTEMPTS times in all."""
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        owner = _RayOwner(ray, kwargs)
        error = owner.started()
        if error is None:
            return owner, None
        flake = any(sign in str(error) for sign in CLIENT_FLAKES)
        if not flake or attempt == CLIENT_ATTEMPTS:
            return None, error
        say("the cluster's Ray Client server could not start a session; connecting again")
        with contextlib.suppress(Exception):
            ray.shutdown()
    raise AssertionError("unreachable")


class _RayOwner:
    """The thread that starts Ray and, at :meth:`stop`, shuts it down.

    A local Ray's processes (GCS, raylet) get PR_SET_PDEATHSIG from the thread that started
    them, and Linux sends it when that *thread* ends: started from a short-lived thread (the
    scan opens its source on one, to stay cancellable), they would die under the scan.  So
    one thread lives exactly as long as this source's Ray."""

    def __init__(self, ray: Any, kwargs: dict[str, Any]) -> None:
        self._ray = ray
        self._kwargs = kwargs
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="photodup-ray-owner", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._ray.init(**self._kwargs)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._stop.wait()
        with contextlib.suppress(Exception):
            self._ray.shutdown()

    def started(self) -> BaseException | None:
        """Wait until Ray is up; what went wrong, if it did not come up."""
        self._ready.wait()
        return self._error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _thumb(batch: dict[str, np.ndarray], index: int) -> bytes | None:
    """A row's packed thumbnail; None when the worker sent none."""
    column = batch.get("thumb")
    if column is None:
        return None
    return bytes(column[index]) or None


def _results(batch: dict[str, np.ndarray], model_id: str) -> Iterator[tuple[str, FeatureResult]]:
    """The rows of one output batch as (path, FeatureResult)."""
    for index, path in enumerate(batch["path"]):
        served = str(batch["model_id"][index])
        if served != model_id:  # never mix two models' embeddings in one scan
            message = f"a Ray worker served {served}, this scan uses {model_id}"
            yield str(path), FeatureResult.failure("model_changed", message)
        elif not bool(batch["ok"][index]):
            yield (
                str(path),
                FeatureResult.failure(
                    str(batch["error_code"][index]), str(batch["error_message"][index])
                ),
            )
        else:
            yield (
                str(path),
                FeatureResult(
                    embedding=np.asarray(batch["embedding"][index], dtype=np.float32).copy(),
                    phash=int(batch["phash"][index]),
                    width=int(batch["width"][index]),
                    height=int(batch["height"][index]),
                    format=str(batch["format"][index]) or None,
                    taken=str(batch["taken"][index]) or None,
                    camera=str(batch["camera"][index]) or None,
                    exif_fields=int(batch["exif_fields"][index]),
                    thumb=_thumb(batch, index),
                ),
            )

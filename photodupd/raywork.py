"""What Ray's workers run for ``photodup scan --ray``: decoding tasks and model actors.

The scan's driver (``photodup_tui.engine.ray_features``) runs :func:`shared_pipeline`, the Ray
Data pipeline over the paths that need features (itself, or through a
:class:`PipelineRunner` actor when it is a Ray Client), and names the callables here by
module path, never importing the model: this module is torch-free when imported; only :class:`Embedder`'s constructor, which
runs inside a Ray actor, imports :mod:`photodupd.models.backend`.  So the scanning process
stays as light as with a local photodupd, while the workers do what photodupd's own decoders
and model thread do:

* :func:`decode_batch` (a Ray *task*, one CPU): each file is decoded by the daemon's decode
  in an isolated, capped worker process (:class:`photodupd.decodepool.DecoderPool`, the
  address-space cap and the timeout of ``[daemon] decode_memory_mb`` / ``decode_timeout``),
  so a bomb, a truncated file, a hang or a crash is that row's error, never a failed task;
* :class:`Embedder` (a Ray *actor*): the same :class:`~photodupd.models.LoadedModel` backend
  photodupd loads, embedding the decoded rows in batches; its rows carry the served model id.
* :func:`embed_packed`'s input (the driver ships the model's input when the workers cannot
  read the files): :mod:`photodupd.pixelcodec`'s reduced upload, unpacked in the actor.

Rows are plain columns (numpy arrays) so Ray moves them through its object store: strings
are "" for "none" (Arrow would otherwise have to guess a type for an all-None column).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import Any, Final

import numpy as np

from photodupd import rawimage
from photodupd.decodepool import DEFAULT_DECODE_FN, DecoderPool
from photodupd.imaging import Decoded, DecodeSpec, ImageError, PreprocessSpec
from photodupd.protocol import ErrorCode, FeatureItem

#: The columns a decoded row has (besides ``path``), and the ones an embedded row adds.
FACTS: Final = ("phash", "width", "height", "format", "taken", "camera", "exif_fields")

_pool_lock = threading.Lock()
_pool: DecoderPool | None = None
_pool_key: tuple[float, int, str] | None = None


def _decoders(timeout: float, memory_mb: int, decode_fn: str) -> DecoderPool:
    """This Ray worker process's decoder: one isolated process (the task holds one CPU),
    kept for the worker's life, since Ray reuses a worker for many tasks and a decoder
    takes a second to start.  It dies with the worker (decodepool: PR_SET_PDEATHSIG)."""
    global _pool, _pool_key
    key = (timeout, memory_mb, decode_fn)
    with _pool_lock:
        if _pool is None or _pool_key != key:
            if _pool is not None:
                _pool.close()
            _pool = DecoderPool(1, timeout, memory_mb, decode_fn)
            _pool_key = key
        return _pool


def empty_rows(paths: np.ndarray, side: int) -> dict[str, np.ndarray]:
    count = len(paths)
    return {
        "path": paths,
        "ok": np.zeros(count, dtype=bool),
        "error_code": np.full(count, "", dtype=object),
        "error_message": np.full(count, "", dtype=object),
        "pixels": np.zeros((count, side, side, 3), dtype=np.uint8),
        "phash": np.zeros(count, dtype=np.uint64),
        "width": np.zeros(count, dtype=np.int64),
        "height": np.zeros(count, dtype=np.int64),
        "format": np.full(count, "", dtype=object),
        "taken": np.full(count, "", dtype=object),
        "camera": np.full(count, "", dtype=object),
        "exif_fields": np.zeros(count, dtype=np.int64),
        "thumb": np.full(count, b"", dtype=object),  # the pixel checks' (pixelthumb.pack)
    }


def put_facts(rows: dict[str, np.ndarray], index: int, decoded: Decoded) -> None:
    rows["ok"][index] = True
    rows["phash"][index] = decoded.phash
    rows["width"][index] = decoded.width
    rows["height"][index] = decoded.height
    rows["format"][index] = decoded.format or ""
    rows["taken"][index] = decoded.taken or ""
    rows["camera"][index] = decoded.camera or ""
    rows["exif_fields"][index] = decoded.exif_fields
    rows["thumb"][index] = decoded.thumb or b""


def put_error(rows: dict[str, np.ndarray], index: int, code: str, message: str) -> None:
    rows["ok"][index] = False
    rows["error_code"][index] = code
    rows["error_message"][index] = message


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    size: int,
    resize: int,
    timeout: float,
    memory_mb: int,
    decode_fn: str = DEFAULT_DECODE_FN,
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: ``path`` -> the decoded rows (pixels at the
    model's input spec, the facts, or the row's error)."""
    # The pixel checks' thumbnail comes from the same decode, as from photodupd.
    spec = DecodeSpec(model=PreprocessSpec(size=size, resize=resize), thumb=True)
    paths = np.asarray(batch["path"], dtype=object)
    rows = empty_rows(paths, size)
    pool = _decoders(timeout, memory_mb, decode_fn)
    futures: list[Future[Decoded] | None] = []
    for index, path in enumerate(paths):
        try:
            futures.append(pool.submit(FeatureItem(path=str(path)), spec))
        except Exception as exc:  # a closed or broken pool: this row fails, the rest go on
            futures.append(None)
            put_error(rows, index, ErrorCode.INTERNAL.value, f"decoder: {exc}")
    for index, future in enumerate(futures):
        if future is None:
            continue
        try:
            decoded = future.result()
        except ImageError as exc:
            put_error(rows, index, str(exc.code), exc.message)
            continue
        except Exception as exc:  # never a failed task for one file
            put_error(rows, index, ErrorCode.INTERNAL.value, f"decoder: {exc}"[:300])
            continue
        if decoded.pixels is None or decoded.pixels.shape != (size, size, 3):
            put_error(rows, index, ErrorCode.INTERNAL.value, "the decoder gave no model input")
            continue
        rows["pixels"][index] = decoded.pixels
        put_facts(rows, index, decoded)
    return rows


def stat_paths(paths: list[str]) -> list[int]:
    """Sizes of ``paths`` as this node sees them (-1: not there): can the workers read the
    files the driver walked (a shared mount), or must the driver ship them?"""
    sizes = []
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            sizes.append(-1)
    return sizes


def describe_model(
    model: str, clip_weights: str, weights: str | None, model_config: str | None
) -> dict[str, Any]:
    """Resolve and load ``model`` as photodupd would (``auto``'s fallback to the built-in
    model included) on a worker: its served id, size, input spec, and the concrete choice
    every :class:`Embedder` then loads (so no node resolves ``auto`` differently)."""
    loaded, choice = _load(model, clip_weights, weights, model_config, threads=1)
    return {
        "id": loaded.id,
        "dim": loaded.dim,
        "name": choice.resolved,
        "why": choice.why,
        "device": loaded.device,
        "input_size": loaded.spec.size,
        "input_resize": loaded.spec.resize,
        "weights": choice.weights,
        "model_config": choice.config,
        "decodes_raw": rawimage.available(),  # this worker's environment stands for all
    }


def _load(
    model: str, clip_weights: str, weights: str | None, model_config: str | None, threads: int
) -> tuple[Any, Any]:
    """(LoadedModel, ModelChoice), as photodupd's model thread loads them (batcher.py)."""
    from pathlib import Path

    from photodupd import devices
    from photodupd.models import ModelChoice, backend, catalog

    backend.configure_threads(threads)
    choice = catalog.resolve(
        model,
        weights=Path(weights) if weights else None,
        model_config=Path(model_config) if model_config else None,
    )
    plan = devices.choose("auto", backend.probe_devices(), 32)

    def load(chosen: ModelChoice) -> Any:
        return backend.load_model(
            chosen,
            device=plan.device,
            half_weights=clip_weights == "float16",
            half_compute=plan.half_compute,
        )

    try:
        return load(choice), choice
    except Exception as exc:
        if choice.requested != catalog.AUTO or choice.resolved == catalog.BUILTIN:
            raise
        fallback = ModelChoice(
            choice.requested,
            catalog.BUILTIN,
            f"auto: {choice.resolved} failed to load ({exc}); using the built-in model",
        )
        return load(fallback), fallback


class Embedder:
    """Ray Data ``map_batches`` actor: the decoded rows -> the same rows with ``embedding``
    (zeros for rows that failed) and ``model_id``, without their pixels."""

    def __init__(
        self,
        model: str,
        clip_weights: str,
        weights: str | None,
        model_config: str | None,
        threads: int = 1,
        side: int = 224,
    ) -> None:
        self.model, _choice = _load(model, clip_weights, weights, model_config, threads)
        self.side = side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = dict(batch)
        if "packed" in rows:  # shipped by the driver: the reduced upload
            self._unpack(rows)
        pixels = rows.pop("pixels")
        ok = np.asarray(rows["ok"], dtype=bool)
        embeddings = np.zeros((len(ok), self.model.dim), dtype=np.float32)
        if ok.any():
            try:
                embeddings[ok] = self.model.embed(np.ascontiguousarray(pixels[ok]))
            except Exception as exc:  # the rows fail; the actor and the job go on
                message = f"model: {type(exc).__name__}: {exc}"[:300]
                rows["error_code"] = np.where(ok, ErrorCode.INTERNAL.value, rows["error_code"])
                rows["error_message"] = np.where(ok, message, rows["error_message"])
                rows["ok"] = np.zeros(len(ok), dtype=bool)
        rows["embedding"] = embeddings
        rows["model_id"] = np.full(len(ok), self.model.id, dtype=object)
        return rows

    def _unpack(self, rows: dict[str, np.ndarray]) -> None:
        from photodupd import pixelcodec

        packed = rows.pop("packed")
        ok = np.asarray(rows["ok"], dtype=bool).copy()
        pixels = np.zeros((len(ok), self.side, self.side, 3), dtype=np.uint8)
        codes = np.asarray(rows["error_code"], dtype=object).copy()
        messages = np.asarray(rows["error_message"], dtype=object).copy()
        for index in np.flatnonzero(ok):
            try:
                pixels[index] = pixelcodec.unpack(bytes(packed[index]), self.side)
            except ImageError as exc:
                ok[index] = False
                codes[index], messages[index] = str(exc.code), exc.message
        rows.update(pixels=pixels, ok=ok, error_code=codes, error_message=messages)


# ---------------------------------------------------------------------- the pipeline


def shared_pipeline(paths: list[str], plan: dict[str, Any]) -> Any:
    """The Ray Data pipeline over files the workers read: ``decode_batch`` tasks -> a pool
    of :class:`Embedder` actors; an iterator of output batches (numpy columns).

    ``plan`` (plain values, built by the scan's driver): ``blocks``; ``decode``: the tasks'
    ``batch_size``, ``num_cpus``, ``max_retries`` and ``fn_kwargs``; ``embed``: the actors'
    ``batch_size``, ``fn_constructor_kwargs``, ``num_cpus``, ``num_gpus`` and the pool's
    ``min_size`` / ``max_size``.  It runs where Ray Data can run its executor: the scan's own
    process, or (Ray Client) a :class:`PipelineRunner` on the cluster."""
    import warnings

    import ray.data

    decode, embed = plan["decode"], plan["embed"]
    dataset: Any = ray.data.from_items(  # Any: ray's own types, not checked here
        [{"path": p} for p in paths], override_num_blocks=int(plan["blocks"])
    )
    with warnings.catch_warnings():
        # Ray 2.60 calls any task option a "ray_remote_args" and warns (removal in 2.64,
        # past the pin): the scan's output is no place for it.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        dataset = dataset.map_batches(
            decode_batch,
            batch_size=decode["batch_size"],
            batch_format="numpy",
            num_cpus=decode["num_cpus"],
            # SPREAD: reading is I/O, best spread over the nodes; it also keeps Ray Data
            # from fusing these tasks into the model actors (fusion needs equal remote
            # args), so decoding scales with the cluster's CPUs, not with the number of
            # models.  A task whose worker is lost is run again (the driver answers each
            # path once).
            scheduling_strategy="SPREAD",
            max_retries=decode["max_retries"],
            fn_kwargs=decode["fn_kwargs"],
        )
    # Model actors: Ray Data restarts a lost actor and runs its batches again (max_restarts
    # / max_task_retries: -1, its defaults for actor pools).
    resources: dict[str, Any] = {"num_cpus": embed["num_cpus"]}
    if embed.get("num_gpus"):
        resources["num_gpus"] = embed["num_gpus"]
    dataset = dataset.map_batches(
        Embedder,
        batch_size=embed["batch_size"],
        batch_format="numpy",
        fn_constructor_kwargs=embed["fn_constructor_kwargs"],
        compute=ray.data.ActorPoolStrategy(min_size=embed["min_size"], max_size=embed["max_size"]),
        **resources,
    )
    return iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))


def quiet_ray_data() -> None:
    """Ray Data's own progress bars and per-run log lines: off (the scan reports progress)."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


class PipelineRunner:
    """An actor on the cluster that runs :func:`shared_pipeline` for a driver connected
    through Ray Client (``ray://``): Ray Data's executor needs a process of the cluster
    (a client's ``ray`` has no core worker), so it runs here and the driver pulls the
    output batches one call at a time.  Killing this actor ends the pipeline: the tasks and
    actors it started are its own and go with it."""

    def __init__(self, paths: list[str], plan: dict[str, Any]) -> None:
        quiet_ray_data()
        self._batches = shared_pipeline(paths, plan)

    def next_batch(self) -> dict[str, np.ndarray] | None:
        """The next output batch; None once the pipeline is done."""
        return next(self._batches, None)

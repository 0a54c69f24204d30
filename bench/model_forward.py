"""The model's forward pass alone, timed: the ceiling the daemon's pipeline can reach.

Used by ``bench/daemon_bench.py`` (in a process that loaded the daemon's model) and by
the tests of the model streams.
"""

from __future__ import annotations

import resource
import threading
import time

import numpy as np
import torch

from photodupd.models import LoadedModel, backend


def benchmark_forward(
    model: LoadedModel,
    *,
    images: int = 256,
    batch_size: int = 32,
    threads: int | None = None,
    streams: int = 1,
) -> dict[str, float]:
    """Model-only throughput: embed ``images`` random preprocessed images in batches.

    Decoding is left out on purpose; this is the ceiling the pipeline can reach.
    ``streams`` > 1 runs that many batches at once on threads of their own, the
    torch threads split among them, as the daemon's model streams do; with one
    stream the caller's thread does the work.
    """
    total = threads if threads is not None else torch.get_num_threads()
    rng = np.random.default_rng(0)
    size = model.spec.size
    pixels = rng.integers(0, 256, size=(min(images, batch_size), size, size, 3), dtype=np.uint8)
    shares = [images // streams + (1 if n < images % streams else 0) for n in range(streams)]

    def embed_share(share: int) -> None:
        done = 0
        while done < share:
            count = min(batch_size, share - done)
            model.embed(pixels[:count])
            done += count

    backend.configure_threads(total)
    model.embed(pixels[:batch_size])  # warm-up: first call allocates and picks kernels
    if streams == 1:
        started, cpu_started = time.perf_counter(), _cpu()
        embed_share(images)
    else:
        ready = threading.Barrier(streams + 1)

        def run(share: int) -> None:
            backend.configure_threads(max(1, total // streams))
            model.embed(pixels[:batch_size])  # this thread's own warm-up
            ready.wait()
            embed_share(share)

        workers = [threading.Thread(target=run, args=(share,)) for share in shares]
        for worker in workers:
            worker.start()
        ready.wait()
        started, cpu_started = time.perf_counter(), _cpu()
        for worker in workers:
            worker.join()
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu() - cpu_started
    return {
        "images": float(images),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # the whole process's, warm-ups excluded
        "images_per_s": images / seconds,
        "batch_size": float(batch_size),
        "threads": float(total),
        "streams": float(streams),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

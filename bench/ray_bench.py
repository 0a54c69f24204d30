"""Features on a local Ray cluster (``photodup scan --ray``) against photodupd, on the same files.

Usage::

    python bench/ray_bench.py [--photos 64] [--rounds 2] [--out bench/results/ray.md]

Three configurations embed the same photos with the built-in model, one after another
within each round (A B C A B C ...), and the best round of each is kept:

* *photodupd*: this machine's daemon (``--threads 2 --decode-workers 2``) through the engine's
  ``DaemonFeatureSource``, as a local scan asks it;
* *ray, 1 worker* / *ray, 2 workers*: ``RayFeatureSource`` on a local Ray instance started
  with ``num_cpus`` 1 / 2 (the CPU slots Ray schedules decoding tasks and model actors on),
  one model actor, the workers reading the files (a shared mount).

images/s is photos / seconds from the first answer to the last (the steady state: a model
actor's start, seconds, is paid once per job and is reported apart as "start").  The
machine is shared with other work: only the RATIOS within one run mean anything, never the
absolute rates.  The photos are generated 12 MP camera-like JPEGs (bench/_common.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    Daemon,
    emit,
    isolated_environment,
    machine_line,
    make_camera_photos,
    markdown_table,
    say,
)
from photodup_tui.engine.features import FeatureResult, FeatureSource  # noqa: E402


def timed(source: FeatureSource, paths: list[str]) -> tuple[float, float, int]:
    """(seconds to the first answer, images/s from the first answer to the last, errors)."""
    stamps: list[float] = []
    errors = 0

    def on_result(_path: str, result: FeatureResult) -> None:
        nonlocal errors
        stamps.append(time.monotonic())
        errors += not result.ok

    started = time.monotonic()
    source.compute(paths, on_result, threading.Event())
    if len(stamps) != len(paths):
        raise RuntimeError(f"{len(stamps)} answers for {len(paths)} photos")
    steady = max(stamps[-1] - stamps[0], 1e-6)
    return stamps[0] - started, (len(stamps) - 1) / steady, errors


def ray_run(cpus: int) -> Callable[[list[str]], tuple[float, float, int]]:
    def run(paths: list[str]) -> tuple[float, float, int]:
        import ray

        from photodup_tui.engine.ray_features import RayFeatureSource, RaySettings

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            with RayFeatureSource(RaySettings("local", model="builtin", actors=1)) as source:
                return timed(source, paths)
        finally:
            ray.shutdown()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    files = [str(p) for p in make_camera_photos(args.photos)]
    best: dict[str, tuple[float, float, int]] = {}
    with isolated_environment() as base, Daemon(base, "builtin", threads=2) as daemon:
        source = daemon.source()

        def daemon_run(paths: list[str]) -> tuple[float, float, int]:
            return timed(source, paths)

        configurations = {
            "photodupd": daemon_run,
            "ray, 1 worker": ray_run(1),
            "ray, 2 workers": ray_run(2),
        }
        for round_ in range(args.rounds):
            for name, run in configurations.items():
                say(f"round {round_ + 1}: {name}")
                result = run(files)
                if name not in best or result[1] > best[name][1]:
                    best[name] = result
    base_rate = best["photodupd"][1]
    rows = [
        [name, f"{start:.1f} s", f"{rate:.2f}", f"{rate / base_rate:.2f}", errors]
        for name, (start, rate, errors) in best.items()
    ]
    table = markdown_table(["configuration", "start", "images/s", "x photodupd", "errors"], rows)
    header = (
        f"{args.photos} photos (12 MP JPEG), best of {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.1f}; {machine_line()}.  "
        "Shared machine: compare the ratios, not the rates."
    )
    emit(f"{header}\n\n{table}", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Features on a local Ray cluster (``photodup scan --ray``) against photodupd, on the same files.

Usage::

    python bench/ray_bench.py [--photos 240] [--rounds 1] [--out bench/results/ray.md]

Three configurations embed the same photos with the built-in model, one after another
within each round (A B C A B C ...), and the best round of each is kept:

* *photodupd*: this machine's daemon (``--threads 2 --decode-workers 2``) through the engine's
  ``DaemonFeatureSource``, as a local scan asks it;
* *ray, 1 worker* / *ray, 2 workers*: ``RayFeatureSource`` on a local Ray instance started
  with ``num_cpus`` 1 / 2 (the CPU slots Ray schedules decoding tasks and model actors on),
  one model actor, the workers reading the files (a shared mount).

Each configuration runs two jobs, a third of the photos and then all of them.  "whole job"
is photos / seconds of the larger job, start included: what a scan of that many photos
sees (a Ray Data job starts its model actors per job: seconds, paid once however large the
job).  "marginal" is (all - third) / (time(all) - time(third)): the rate once started,
what a job of millions runs at (the start cancels out; decoding that overlaps an actor's
start does too, which a first-to-last-answer rate would wrongly credit).  The machine is
shared with other work: only the RATIOS within one run mean anything, never the absolute
rates.  The photos are generated 12 MP camera-like JPEGs (bench/_common.py).
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


def timed(source: FeatureSource, paths: list[str]) -> tuple[float, int]:
    """(seconds for the whole job, errors)."""
    answers = errors = 0

    def on_result(_path: str, result: FeatureResult) -> None:
        nonlocal answers, errors
        answers += 1
        errors += not result.ok

    started = time.monotonic()
    source.compute(paths, on_result, threading.Event())
    if answers != len(paths):
        raise RuntimeError(f"{answers} answers for {len(paths)} photos")
    return time.monotonic() - started, errors


def rates(source: FeatureSource, paths: list[str]) -> tuple[float, float, int]:
    """(whole-job images/s of all the photos, marginal images/s, errors)."""
    third = paths[: len(paths) // 3]
    small, errors_small = timed(source, third)
    large, errors_large = timed(source, paths)
    marginal = (len(paths) - len(third)) / max(large - small, 1e-6)
    return len(paths) / large, marginal, errors_small + errors_large


def ray_run(cpus: int) -> Callable[[list[str]], tuple[float, float, int]]:
    def run(paths: list[str]) -> tuple[float, float, int]:
        import ray

        from photodup_tui.engine.ray_features import RayFeatureSource, RaySettings

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            with RayFeatureSource(RaySettings("local", model="builtin", actors=1)) as source:
                return rates(source, paths)
        finally:
            ray.shutdown()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    files = [str(p) for p in make_camera_photos(args.photos)]
    best: dict[str, tuple[float, float, int]] = {}
    with isolated_environment() as base, Daemon(base, "builtin", threads=2) as daemon:
        source = daemon.source()

        def daemon_run(paths: list[str]) -> tuple[float, float, int]:
            return rates(source, paths)

        configurations = {
            "photodupd": daemon_run,
            "ray, 1 worker": ray_run(1),
            "ray, 2 workers": ray_run(2),
        }
        for round_ in range(args.rounds):
            for name, run in configurations.items():
                say(f"round {round_ + 1}: {name}")
                result = run(files)
                if name not in best or result[0] > best[name][0]:
                    best[name] = result
    whole_base, marginal_base = best["photodupd"][0], best["photodupd"][1]
    rows = [
        [
            name,
            f"{whole:.2f}",
            f"{whole / whole_base:.2f}x",
            f"{marginal:.2f}",
            f"{marginal / marginal_base:.2f}x",
            errors,
        ]
        for name, (whole, marginal, errors) in best.items()
    ]
    columns = ["configuration", "whole job img/s", "ratio", "marginal img/s", "ratio", "errors"]
    table = markdown_table(columns, rows)
    header = (
        f"{args.photos} photos (12 MP JPEG), best of {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.1f}; {machine_line()}.  "
        "Shared machine: compare the ratios, not the rates."
    )
    emit(f"{header}\n\n{table}", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

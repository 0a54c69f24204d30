"""Per-pair cost of the same-shot score: this checkout against another (``--before DIR``).

Usage::

    python bench/sameshot_micro.py --before DIR [--keepers 24] [--rounds 3]

Thumbnails of the Adwaita icons (bench/lookalike_bench.py builds the set), in groups of one
keeper and 16 candidates as the grouping asks.  Each round times, alternating on the same
pairs: the other checkout's ``sameshot.score`` pair by pair; this checkout's full search
without the quick rejection, one keeper's chunk at a time (``score_prepared``, each
thumbnail prepared once per chunk as ``score_chunk`` does); and the same with the quick
rejection (what a scan runs).  CPU time of this process (one core), best of the rounds; the
machine is shared, so compare the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine_line, markdown_table
from lookalike_bench import icon_set

from photodup_tui.engine import sameshot, sameshot_check

CANDIDATES = 16


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("before_sameshot", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["before_sameshot"] = module
    spec.loader.exec_module(module)
    return module


def _asked(path: Path, keepers: int) -> list[tuple[sameshot.Thumb, list[sameshot.Thumb]]]:
    """The first ``keepers`` keepers (with at least 8 candidates) of a calibration file and
    the candidates the scan asked about for each."""
    document = json.loads(path.read_text())
    rows = document["icons"] if isinstance(document, dict) else document
    by_keeper: dict[str, list[str]] = {}
    for row in rows:
        by_keeper.setdefault(row["a"], []).append(row["b"])
    chosen = [(k, cs) for k, cs in by_keeper.items() if len(cs) >= 8][:keepers]
    groups = []
    for keeper, candidates in chosen:
        thumb = sameshot_check.thumbnail_file(keeper)
        others = [t for c in candidates if (t := sameshot_check.thumbnail_file(c)) is not None]
        if thumb is not None:
            groups.append((thumb, others))
    return groups


def _cpu(work: object) -> float:
    started = time.process_time()
    work()  # type: ignore[operator]
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--keepers", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pairs",
        type=Path,
        help="the pairs a scan asked about (lookalike_bench.py --calibrate FILE), not random",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    before = _load(args.before / "photodup_tui" / "engine" / "sameshot.py")
    if args.pairs:
        groups = _asked(args.pairs, args.keepers)
        source = f"pairs a scan asked about, from {args.pairs.name}"
    else:
        files = sorted(icon_set().glob("64x64_*.png"))
        rng = np.random.default_rng(21)
        count = args.keepers * (CANDIDATES + 1)
        picked = [files[i] for i in rng.choice(len(files), count, False)]
        thumbs = [sameshot_check.thumbnail_file(str(p)) for p in picked]
        usable = [t for t in thumbs if t is not None]
        groups = [
            (usable[i], usable[i + 1 : i + 1 + CANDIDATES])
            for i in range(0, len(usable) - CANDIDATES, CANDIDATES + 1)
        ]
        source = "random 64-px icons"
    pairs = sum(len(c) for _, c in groups)
    old_thumbs = [
        (before.Thumb(k.gray, k.colour), [before.Thumb(c.gray, c.colour) for c in cs])
        for k, cs in groups
    ]

    def old() -> None:
        for keeper, candidates in old_thumbs:
            for candidate in candidates:
                before.score(keeper, candidate)

    def new(quick: bool) -> None:
        for keeper, candidates in groups:
            prepared = sameshot.Prepared(keeper)
            for candidate in candidates:
                sameshot.score_prepared(prepared, sameshot.Prepared(candidate), quick=quick)

    times: dict[str, list[float]] = {"before": [], "full": [], "quick": []}
    for _ in range(args.rounds):
        times["before"].append(_cpu(old))
        times["full"].append(_cpu(lambda: new(False)))
        times["quick"].append(_cpu(lambda: new(True)))
    stages = sameshot_check.score_chunk([(k, c) for k, cs in groups for c in cs])
    counts = {s: sum(x.stage == s for x in stages) for s in ("quick", "coarse", "fine", "none")}
    best = {name: min(values) / pairs * 1000 for name, values in times.items()}
    rows = [
        ["before: `sameshot.score` per pair", f"{best['before']:.2f} ms", "1.00x"],
        [
            "prepared per chunk, full search",
            f"{best['full']:.2f} ms",
            f"{best['before'] / best['full']:.2f}x",
        ],
        [
            "prepared per chunk, quick rejection first",
            f"{best['quick']:.2f} ms",
            f"{best['before'] / best['quick']:.2f}x",
        ],
    ]
    text = "\n".join(
        [
            f"## Same-shot score per pair ({pairs} icon pairs, {len(groups)} keepers; {source})",
            "",
            machine_line() + f"; CPU time, best of {args.rounds} alternating rounds",
            "",
            markdown_table(["variant", "CPU per pair", "speed-up"], rows),
            "",
            f"Stages with the quick rejection: {counts}",
        ]
    )
    emit(text, args.out)


if __name__ == "__main__":
    main()

"""Look-alike folders: does the first scan cost about what the daemon's features cost?

Usage::

    python bench/lookalike_bench.py [--rounds 1] [--camera 8 | --camera-dir DIR] [--before DIR]
                                    [--out FILE]
    python bench/lookalike_bench.py --calibrate FILE   # pair scores on the three sets

Sets (built once, reproducibly, under ``$TMPDIR/photodup-bench``):

* **icons**: Debian's ``adwaita-icon-theme`` (``apt-get install -y adwaita-icon-theme``):
  every PNG of 48-512 px (2,365 transparent icons, the set of issue 21) and every scalable
  SVG rendered to a 96-px PNG with ``rsvg-convert`` (647 symbolic glyphs, all alike).  The
  same icon at several sizes is a true resize; everything else looks alike to the model.
* **camera**: ``--camera`` photographs from ``skimage.data`` made camera-like (4000x3000,
  sensor grain, JPEG q90), each with a q70 re-encode, an 8% crop and a mirror.

Each round, per set, alternating: the daemon's own features time for the same files (64 per
request, 4 in flight, through ``photodupd.client``: no engine code), then ``photodup scan DIR
--json`` as a subprocess with a private cold cache against the same warm daemon (and the
same for the code in ``--before DIR``, e.g. ``git archive 7e3154e | tar -x -C DIR``).  The
machine is shared: compare the ratios within one run, not the absolute times.  Each scan
reports its pixel-check counts and the wall time it spent decoding thumbnails and scoring
(measured by wrapping those two methods of the checker in the scan's process; nothing else
changes), and whether its groups equal the ``--before`` scan's.

``--calibrate FILE`` scans the quality set (bench/quality.py), the hard-negative set
(bench/hard_negatives.py) and the icons with the budget off, and writes, for every pair
the same-shot check was asked about, its full score and the cheap rejections' statistics:
what any threshold of a cheap rejection is calibrated on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Inside the timed scan (``--as-scan``) only the checkout on PYTHONPATH may be imported:
#: bench/_common puts this checkout first on the path.
AS_SCAN = __name__ == "__main__" and "--as-scan" in sys.argv
if not AS_SCAN:
    from _common import (
        ROOT,
        SHARED_PHOTOS,
        emit,
        machine_line,
        markdown_table,
        say,
        tree_cpu,
        warm_page_cache,
    )

ICONS = Path("/usr/share/icons/Adwaita")
ICON_SIZES = ("48x48", "64x64", "96x96", "256x256", "512x512")
SVG_SIDE = 96
CHUNK = 64
IN_FLIGHT = 4
STATS_ENV = "PHOTODUP_BENCH_STATS"
PAIRS_ENV = "PHOTODUP_BENCH_PAIRS"


# ------------------------------------------------------------------------------- sets


def icon_set() -> Path:
    """The Adwaita icons, copied flat (size and category in the name), SVGs rendered."""
    root = SHARED_PHOTOS / "lookalike-adwaita"
    done = root / ".complete"
    if done.exists():
        return root
    if not ICONS.is_dir():
        raise SystemExit("needs Debian's adwaita-icon-theme: apt-get install -y adwaita-icon-theme")
    say(f"building the icon set in {root} ...")
    root.mkdir(parents=True, exist_ok=True)
    for size in ICON_SIZES:
        for png in sorted((ICONS / size).glob("*/*.png")):
            shutil.copyfile(png, root / f"{size}_{png.parent.name}_{png.name}")
    for svg in sorted((ICONS / "scalable").glob("*/*.svg")):
        target = root / f"svg{SVG_SIDE}_{svg.parent.name}_{svg.stem}.png"
        subprocess.run(
            ["rsvg-convert", "-w", str(SVG_SIDE), "-h", str(SVG_SIDE), "-o", str(target), str(svg)],
            check=True,
        )
    done.touch()
    return root


def camera_set(count: int) -> Path:
    """``count`` skimage photographs at 12 MP with grain, each with three copies/edits."""
    import numpy as np
    from PIL import Image, ImageOps
    from quality import PHOTOGRAPHS, _load

    root = SHARED_PHOTOS / f"lookalike-camera-{count}"
    done = root / ".complete"
    if done.exists():
        return root
    say(f"building the camera-like set in {root} ...")
    root.mkdir(parents=True, exist_ok=True)
    colour = [n for n in PHOTOGRAPHS if _load(n).mode == "RGB"]
    names = (colour + [n for n in PHOTOGRAPHS if n not in colour])[:count]
    for i, name in enumerate(names):
        big = _load(name).convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS)
        rng = np.random.default_rng(i)
        grain = rng.normal(0, 6.0, (3000, 4000, 1)).astype(np.float32)
        pixels = np.clip(np.asarray(big, np.float32) + grain, 0, 255).astype(np.uint8)
        photo = Image.fromarray(pixels)
        photo.save(root / f"{name}.jpg", quality=90)
        photo.save(root / f"{name}__q70.jpg", quality=70)
        w, h = photo.size
        dx, dy = round(w * 0.04), round(h * 0.04)
        photo.crop((dx, dy, w - dx, h - dy)).save(root / f"{name}__crop.jpg", quality=90)
        ImageOps.mirror(photo).save(root / f"{name}__mirror.jpg", quality=90)
    done.touch()
    return root


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# ------------------------------------------------------------------------ measurements


def features_seconds(socket_path: Path, files: list[Path]) -> float:
    """The daemon's own features time: 64 files a request, 4 requests in flight."""
    from photodupd import protocol
    from photodupd.client import AsyncClient

    async def run() -> float:
        async with AsyncClient(socket_path) as client:
            slots = asyncio.Semaphore(IN_FLIGHT)

            async def one(chunk: list[Path]) -> None:
                async with slots:
                    items = [{"path": protocol.path_for_wire(str(p))} for p in chunk]
                    reply = await client.features(items)
                    if len(reply.get("items", [])) != len(chunk):
                        raise RuntimeError("the daemon answered for fewer files")

            chunks = [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
            started = time.perf_counter()
            await asyncio.gather(*(one(c) for c in chunks))
            return time.perf_counter() - started

    return asyncio.run(run())


@dataclass
class Scanned:
    seconds: float
    stats: dict[str, Any]
    groups: list[tuple[str, tuple[tuple[str, str, str], ...]]]
    warnings: list[str] = field(default_factory=list)


def scan_seconds(code: Path, folder: Path, base: Path, env: dict[str, str]) -> Scanned:
    """``photodup scan FOLDER --json`` in a subprocess running ``code``, cold private cache."""
    run = Path(tempfile.mkdtemp(prefix="scan-", dir=base))
    for name in ("cache", "state", "config"):
        (run / name).mkdir(mode=0o700)
    report, stats = run / "report.json", run / "stats.json"
    child = {
        **env,
        "PYTHONPATH": str(code),
        "PHOTODUP_CACHE_DIR": str(run / "cache"),
        "PHOTODUP_STATE_DIR": str(run / "state"),
        "PHOTODUP_CONFIG_DIR": str(run / "config"),
        STATS_ENV: str(stats),
    }
    args = [sys.executable, str(Path(__file__).resolve()), "--as-scan", "--"]
    args += ["scan", str(folder), "--json", str(report), "--mode", "local", "-q"]
    started = time.perf_counter()
    done = subprocess.run(args, env=child, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"scan failed ({done.returncode}): {done.stderr[-2000:]}")
    document = json.loads(report.read_text())
    groups = sorted(
        (
            group["kind"],
            tuple(
                sorted((m["path"], m["verdict"] or "keeper", m["action"]) for m in group["members"])
            ),
        )
        for group in document["groups"]
    )
    warnings = [line for line in done.stderr.splitlines() if "pixel" in line]
    scanned = Scanned(seconds, json.loads(stats.read_text()), groups, warnings)
    shutil.rmtree(run, ignore_errors=True)
    return scanned


# ------------------------------------------------------------- inside the scan process


def as_scan(argv: list[str]) -> int:
    """Run ``photodup`` with the checker's thumbnail and scoring methods timed, and its
    counts written to $PHOTODUP_BENCH_STATS when it closes."""
    from photodup_tui import cli
    from photodup_tui.engine import sameshot_check

    checker_class = sameshot_check.SameShotChecker
    stats: dict[str, Any] = {"thumbnails_s": 0.0, "scoring_s": 0.0, "near_s": 0.0}

    def timed(name: str, key: str) -> None:
        original = getattr(checker_class, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                stats[key] += time.perf_counter() - started

        setattr(checker_class, name, wrapper)

    timed("_thumbnails", "thumbnails_s")
    timed("_scores", "scoring_s")
    timed("_near_scores", "near_s")  # part of scoring_s: the same-picture (and detail) checks
    original_close = checker_class.close

    def close(self: Any) -> None:
        # CPU of the scoring workers and the isolated decoders (pixel checks), read before
        # they stop, and of this process (walk, hash, grouping, messages).
        import psutil

        pools = {"scorers_cpu_s": self._scorers, "decoders_cpu_s": self._decoders}
        for key, pool in pools.items():
            stats[key] = stats.get(key, 0.0) + _pool_cpu(pool)
        original_close(self)
        own = psutil.Process().cpu_times()
        stats["client_cpu_s"] = own.user + own.system
        names = ("asked", "rejected", "scored", "over_budget", "unanswered", "decoded")
        for name in (*names, "given_ahead", "ahead_unused"):
            if hasattr(self, name):
                stats[name] = getattr(self, name)
        Path(os.environ[STATS_ENV]).write_text(json.dumps(stats))

    checker_class.close = close  # type: ignore[method-assign]
    if os.environ.get(PAIRS_ENV):
        _record_pairs(checker_class, Path(os.environ[PAIRS_ENV]))
    return cli.main(argv)


def _pool_cpu(pool: Any) -> float:
    """User + system CPU seconds of a pool's live worker processes (0 when it never ran)."""
    import psutil

    if pool is None:
        return 0.0
    pids = [p.pid for p in getattr(pool, "_processes", {}).values()]  # ProcessPoolExecutor
    pids += [w.process.pid for w in getattr(pool, "_live", {}).values()]  # IsolatedPool
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def _record_pairs(checker_class: Any, out: Path) -> None:
    """Calibration: every same-shot pair's full score and cheap statistics, computed here
    (slow, in this process) beside what the checker itself does; the budget is lifted."""
    from photodup_tui.engine import sameshot, sameshot_check

    sameshot_check.PIXEL_CHECKS_PER_PHOTO = 10**9
    original = checker_class._scores
    rows: list[dict[str, Any]] = []

    def scores(self: Any, check: Any, pairs: Any, thumbs: Any) -> Any:
        done = original(self, check, pairs, thumbs)
        if check.method == sameshot_check.METHOD:
            for (a, b), value in done:
                row = {"a": a.path, "b": b.path, "checker": value}
                row.update(sameshot.calibration_row(thumbs[a.path], thumbs[b.path]))
                rows.append(row)
            out.write_text(json.dumps(rows))
        return done

    checker_class._scores = scores


# --------------------------------------------------------------------------- the run


@dataclass
class Row:
    label: str
    files: int
    features: list[float] = field(default_factory=list)
    #: CPU seconds of the daemon and its decoders during each features run.
    features_cpu: list[float] = field(default_factory=list)
    scans: dict[str, list[Scanned]] = field(default_factory=dict)


def start_daemon(base: Path) -> tuple[subprocess.Popen[bytes], Path]:
    from _common import Daemon

    runtime = base / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    daemon = Daemon.__new__(Daemon)
    daemon.socket_path = runtime / "photodupd.sock"
    args = ["--socket", str(daemon.socket_path), "--model", "builtin", "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    daemon.proc = subprocess.Popen([sys.executable, "-m", "photodupd.daemon_cli", *args], env=env)
    daemon.wait_hello()
    return daemon.proc, daemon.socket_path


def measure(sets: list[tuple[str, Path]], codes: dict[str, Path], rounds: int) -> list[Row]:
    base = Path(tempfile.mkdtemp(prefix="pdl-"))
    base.chmod(0o700)
    env = {**os.environ, "PHOTODUP_RUNTIME_DIR": str(base / "runtime")}
    proc, socket_path = start_daemon(base)
    rows = []
    try:
        features_seconds(socket_path, _files(sets[0][1])[:CHUNK])  # warm: model, decoders
        for label, folder in sets:
            files = _files(folder)
            warm_page_cache(files)
            row = Row(label, len(files))
            for round_ in range(rounds):
                say(f"{label}: round {round_ + 1} of {rounds}: features ...")
                before = tree_cpu(proc.pid)
                row.features.append(features_seconds(socket_path, files))
                row.features_cpu.append(tree_cpu(proc.pid) - before)
                say(f"  features {row.features[-1]:.1f} s, daemon CPU {row.features_cpu[-1]:.1f} s")
                for name, code in codes.items():
                    say(f"{label}: round {round_ + 1}: scan with {name} ...")
                    scanned = scan_seconds(code, folder, base, env)
                    row.scans.setdefault(name, []).append(scanned)
                    say(f"  {scanned.seconds:.1f} s {scanned.stats}")
            rows.append(row)
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(base, ignore_errors=True)
    return rows


def report(rows: list[Row], codes: dict[str, Path]) -> str:
    header = [
        "set",
        "code",
        "files",
        "features (daemon; its CPU)",
        "first scan",
        "ratio",
        "<= 1.3x",
        "thumbnails / scoring (of which same-picture checks)",
        "CPU: scan process / scoring workers / decoders",
        "pairs asked / rejected cheaply / fully scored / over budget",
        "groups as --before",
    ]
    lines = []
    for row in rows:
        for name in codes:
            for i, scanned in enumerate(row.scans[name]):
                feat = row.features[i]
                s = scanned.stats
                ratio = scanned.seconds / feat
                same = "-"
                if "before" in row.scans and name != "before":
                    same = "yes" if scanned.groups == row.scans["before"][i].groups else "**NO**"
                counts = " / ".join(
                    str(s.get(k, "n/a")) for k in ("asked", "rejected", "scored", "over_budget")
                )
                lines.append(
                    [
                        row.label,
                        name,
                        row.files,
                        f"{feat:.1f} s; {row.features_cpu[i]:.1f} s",
                        f"{scanned.seconds:.1f} s",
                        f"{ratio:.2f}x",
                        "yes" if ratio <= 1.3 else "**NO**",
                        f"{s['thumbnails_s']:.1f} s / {s['scoring_s']:.1f} s"
                        + (f" (near {s['near_s']:.1f} s)" if "near_s" in s else ""),
                        " / ".join(
                            f"{s[k]:.1f} s" if k in s else "n/a"
                            for k in ("client_cpu_s", "scorers_cpu_s", "decoders_cpu_s")
                        ),
                        counts,
                        same,
                    ]
                )
    groups = [
        f"- {row.label}, {name}: {len(row.scans[name][-1].groups)} groups"
        + (f"; warnings: {row.scans[name][-1].warnings}" if row.scans[name][-1].warnings else "")
        for row in rows
        for name in codes
    ]
    return "\n".join(
        [
            "## Look-alike scan vs the daemon's features",
            "",
            machine_line() + "; times are wall clock in one run (compare ratios)",
            "",
            markdown_table(header, lines),
            "",
            *groups,
        ]
    )


def calibrate(out: Path, names: list[str]) -> None:
    """Pair scores and cheap statistics on the three sets (or ``names`` of them), budget
    off."""
    import hard_negatives
    import quality

    work = Path(tempfile.mkdtemp(prefix="pdc-"))
    quality_dir, hard_dir = work / "quality", work / "hard"
    quality_dir.mkdir()
    hard_dir.mkdir()
    quality.build_set(quality_dir)
    hard_negatives.build_set(hard_dir)
    base = Path(tempfile.mkdtemp(prefix="pdl-"))
    base.chmod(0o700)
    env = {**os.environ, "PHOTODUP_RUNTIME_DIR": str(base / "runtime")}
    proc, _socket = start_daemon(base)
    found: dict[str, Any] = {}
    try:
        sets = {"quality": quality_dir, "hard": hard_dir, "icons": icon_set()}
        for label, folder in ((n, sets[n]) for n in names):
            say(f"calibration scan of {label} ...")
            pairs = base / f"{label}.json"
            scanned = scan_seconds(ROOT, folder, base, {**env, PAIRS_ENV: str(pairs)})
            found[label] = json.loads(pairs.read_text()) if pairs.exists() else []
            say(f"  {len(found[label])} pairs, {scanned.seconds:.1f} s")
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    out.write_text(json.dumps(found))


def main() -> None:
    if "--as-scan" in sys.argv:
        argv = sys.argv[sys.argv.index("--") + 1 :]
        raise SystemExit(as_scan(argv))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--camera", type=int, default=8, help="photographs (x4 files); 0: none")
    parser.add_argument(
        "--camera-dir",
        type=Path,
        help="a camera-like folder to use instead of --camera (e.g. bench/peer_sets.py's "
        "camera set, $TMPDIR/photodup-bench/peers-camera-v1)",
    )
    parser.add_argument("--no-icons", action="store_true")
    parser.add_argument("--before", type=Path, help="another checkout to compare with")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--calibrate", type=Path, metavar="FILE")
    parser.add_argument("--sets", default="quality,hard,icons", help="for --calibrate")
    args = parser.parse_args()
    if args.calibrate:
        calibrate(args.calibrate, args.sets.split(","))
        return
    sets = []
    if not args.no_icons:
        sets.append(("icons (Adwaita)", icon_set()))
    if args.camera_dir:
        sets.append((f"camera ({args.camera_dir.name})", args.camera_dir))
    elif args.camera:
        sets.append((f"camera-like ({args.camera} x 4)", camera_set(args.camera)))
    codes = {"this": ROOT}
    if args.before:
        codes["before"] = args.before.resolve()
    emit(report(measure(sets, codes, args.rounds), codes), args.out)


if __name__ == "__main__":
    main()

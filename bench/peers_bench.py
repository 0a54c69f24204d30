"""photodup's first scan and rescan against its peers, on two sets built from real photos.

Usage::

    python bench/peers_bench.py [--set camera|mixed|both] [--rounds 3] [--out FILE]
                                [--no-exact]

The sets are bench/peer_sets.py's (built once, cached under ``$TMPDIR/photodup-bench``):
``camera`` (12 MP JPEGs with copies and edits) and ``mixed`` (large PNG, WebP, HEIC and JPEG
with copies across formats).  Every contender is a whole process, timed from outside:

* **photodup, built-in model**: ``photodup scan --mode local`` against a photodupd started
  before the rounds and warmed up (model loaded, decoders running), a fresh cache for the first
  scan, the same cache for the rescan;
* **photodup --no-model**: ``photodup scan --no-model`` (no daemon), fresh cache, then rescan;
* **Czkawka** (PyPI ``czkawka``, its Rust core through ``ImageSimilarity.find_similar``), with
  a fresh ``$XDG_CACHE_HOME``/``$HOME`` for the first scan and the same one for the rescan;
* **imagededup PHash** ``find_duplicates`` with as many encoding workers as cores (it keeps
  no cache: its rescan is another first scan);
* **decode floor**: one reduced decode of every file (Pillow, ``draft`` for JPEG, the
  shorter side then brought to 256 px), one process per core;
* **model floor**: the built-in model's forward pass alone on as many preprocessed 224x224
  inputs as the set has distinct contents (batches of 32, one stream per core as the daemon
  runs it), timed inside a process that loaded the model first: what no decoder or protocol
  can undercut.

Per round the contenders run one after the other, A B C ... A B C ... (``--rounds`` rounds),
so a burst of load from the machine's other users hits them alike; every figure is the
median over rounds, and each ratio is the median of the per-round ratios against Czkawka's
first scan of the same round.  The machine is shared: read ratios, not absolute times.

Measured per run: wall time; CPU (user + system) of the client process and every process it
waited for, plus for photodup with the model the daemon's and its decoder processes' CPU over
the run (``psutil``: the daemon's own times, its reaped children's and its live children's,
before and after); peak RSS, the sum over the client's process tree and the daemon's
(sampled every 50 ms).

The exact tier's reads (``--no-exact`` skips it): one ``Scanner`` run per set (built-in
model) with the exact tier's ``pread`` counted: partial hashes, full hashes of the exact
candidates, full hashes of near/similar group members.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_sets
import psutil
from _common import (
    ROOT,
    Daemon,
    emit,
    isolated_environment,
    link_into,
    machine_line,
    markdown_table,
    say,
    tree_cpu,
    warm_page_cache,
)

CZKAWKA_SIMILARITY = 10  # bits (of its 8x8 gradient hash); only grouping depends on it
IMAGEDEDUP_DISTANCE = 10
SAMPLE_SECONDS = 0.05
DECODE_SIDE = 256


def _cores() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


# ------------------------------------------------------------------------------ measuring


@dataclass
class Run:
    wall: float
    cpu_client: float
    cpu_daemon: float
    peak_rss: int  # bytes
    note: str = ""

    @property
    def cpu(self) -> float:
        return self.cpu_client + self.cpu_daemon


def _tree_rss(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in (proc, *proc.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(cmd: Sequence[str], env: dict[str, str], daemon_pid: int | None = None) -> Run:
    """Run ``cmd`` to completion: wall, CPU (with the daemon's), peak RSS (sampled sum).

    Reaped with ``wait4``, whose rusage covers the command and every process it waited for
    (imagededup's and the decode floor's worker processes)."""
    daemon_before = tree_cpu(daemon_pid)
    peak = 0
    stop = threading.Event()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=str(ROOT))
        watched = [proc.pid] + ([daemon_pid] if daemon_pid is not None else [])

        def sample() -> None:
            nonlocal peak
            while not stop.wait(SAMPLE_SECONDS):
                peak = max(peak, _tree_rss(watched))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        daemon_cpu = tree_cpu(daemon_pid) - daemon_before
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode not in (0, 1):  # photodup scan: 1 = duplicates found
        raise RuntimeError(f"{' '.join(cmd[:4])} exited {proc.returncode}: {stderr[-2000:]}")
    peak = max(peak, usage.ru_maxrss * 1024)  # a run shorter than one sample
    return Run(wall, usage.ru_utime + usage.ru_stime, daemon_cpu, peak, stdout.strip()[-300:])


# ------------------------------------------------------------------------------ contenders


def _python(*code_or_args: str) -> list[str]:
    return [sys.executable, *code_or_args]


def _photodup_cmd(folder: Path, *extra: str) -> list[str]:
    return _python("-m", "photodup_tui.cli", "scan", "--quiet", *extra, str(folder))


CZKAWKA_CODE = (
    "import sys\n"
    "from czkawka import ImageSimilarity\n"
    "f = ImageSimilarity()\n"
    "f.set_directories([sys.argv[1]])\n"
    "f.set_similarity(int(sys.argv[2]))\n"
    "groups = f.find_similar()\n"
    "print(len(groups), 'groups', sum(len(g) for g in groups), 'files')\n"
)

IMAGEDEDUP_CODE = (
    "import sys, logging\n"
    "from imagededup.methods import PHash\n"
    "for n in list(logging.root.manager.loggerDict):\n"
    "    if n.startswith('imagededup'): logging.getLogger(n).setLevel(logging.WARNING)\n"
    "d = PHash(verbose=False).find_duplicates(image_dir=sys.argv[1],"
    " max_distance_threshold=int(sys.argv[2]), num_enc_workers=int(sys.argv[3]))\n"
    "print(len(d), 'hashed', sum(1 for v in d.values() if v), 'with duplicates')\n"
)


@dataclass
class Contender:
    label: str
    first: Callable[[int], Run]  # round -> the first scan
    rescan: Callable[[int], Run] | None  # the rescan right after it, same cache
    rescan_note: str = ""


@dataclass
class SetResult:
    name: str
    files: int
    megabytes: float
    contents: int
    runs: dict[str, list[Run]] = field(default_factory=dict)
    rescans: dict[str, list[Run]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    exact: dict[str, int] = field(default_factory=dict)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _fresh(base: Path, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=name, dir=base))
    folder.chmod(0o700)
    return folder


def contenders(folder: Path, base: Path, daemon: DaemonProcess, contents: int) -> list[Contender]:
    cores = str(_cores())
    env = _env()

    def photodup(extra: Sequence[str], daemon_pid: int | None) -> tuple[Callable, Callable]:
        cache: dict[int, Path] = {}

        def first(round_: int) -> Run:
            cache[round_] = _fresh(base, "cache-")
            run_env = {**env, "PHOTODUP_CACHE_DIR": str(cache[round_])}
            return measure(_photodup_cmd(folder, *extra), run_env, daemon_pid)

        def again(round_: int) -> Run:
            run_env = {**env, "PHOTODUP_CACHE_DIR": str(cache[round_])}
            return measure(_photodup_cmd(folder, *extra), run_env, daemon_pid)

        return first, again

    model_first, model_again = photodup(["--mode", "local", "--model", "builtin"], daemon.pid)
    local_first, local_again = photodup(["--no-model"], None)
    czkawka_home: dict[int, Path] = {}

    def czkawka(round_: int, again: bool) -> Run:
        if not again:
            czkawka_home[round_] = _fresh(base, "czk-")
        home = str(czkawka_home[round_])
        run_env = {**env, "HOME": home, "XDG_CACHE_HOME": home, "XDG_CONFIG_HOME": home}
        cmd = _python("-c", CZKAWKA_CODE, str(folder), str(CZKAWKA_SIMILARITY))
        return measure(cmd, run_env)

    def imagededup(_round: int) -> Run:
        cmd = _python("-c", IMAGEDEDUP_CODE, str(folder), str(IMAGEDEDUP_DISTANCE), cores)
        return measure(cmd, env)

    def decode_floor(_round: int) -> Run:
        return measure(_python(__file__, "--decode-floor", str(folder)), env)

    def model_floor(_round: int) -> Run:
        run = measure(_python(__file__, "--model-floor", str(contents)), env)
        inner = json.loads(run.note.splitlines()[-1])  # the forward pass alone, from inside
        return Run(inner["seconds"], inner["cpu"], 0.0, run.peak_rss, "forward pass only")

    return [
        Contender("Czkawka core", lambda r: czkawka(r, False), lambda r: czkawka(r, True)),
        Contender("photodup, built-in model", model_first, model_again),
        Contender("photodup --no-model", local_first, local_again),
        Contender("imagededup PHash", imagededup, None, "keeps no cache: as its first scan"),
        Contender("decode floor", decode_floor, None),
        Contender("model floor", model_floor, None),
    ]


# ------------------------------------------------------------------------------ the daemon


class DaemonProcess:
    """photodupd on the isolated runtime dir's default socket, so ``photodup scan --mode
    local`` finds it; warmed up (model loaded, decoders started) before any timing."""

    def __init__(self, base: Path) -> None:
        self._daemon = Daemon(base, "builtin", default_socket=True)
        self.pid = self._daemon.proc.pid

    def warm(self, sample: Sequence[Path], base: Path) -> None:
        self._daemon.wait_hello()
        folder = _fresh(base, "warm-")
        for i, photo in enumerate(sample):
            os.link(photo, folder / f"{i}{photo.suffix}")
        env = {**_env(), "PHOTODUP_CACHE_DIR": str(_fresh(base, "cache-"))}
        measure(_photodup_cmd(folder, "--mode", "local", "--model", "builtin"), env, self.pid)

    def stop(self) -> None:
        self._daemon.stop()


# ------------------------------------------------------------------------------ floors


def decode_floor(folder: Path) -> None:
    """One reduced decode of every file, one process per core (this is its own process)."""
    from multiprocessing import Pool

    files = peer_sets.files_of(folder)
    with Pool(_cores()) as pool:
        sizes = pool.map(_reduced_decode, files, chunksize=4)
    print(len(sizes), "decoded")


def _reduced_decode(path: Path) -> tuple[int, int]:
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    with Image.open(path) as image:
        image.draft("RGB", (DECODE_SIDE, DECODE_SIDE))  # a no-op for all but JPEG
        rgb = image.convert("RGB")
    scale = DECODE_SIDE / min(rgb.size)
    if scale < 1:
        size = (round(rgb.width * scale), round(rgb.height * scale))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return rgb.size


def model_floor(images: int) -> None:
    """The built-in model's forward pass on ``images`` inputs, after loading: prints JSON."""
    from bench.model_forward import benchmark_forward
    from photodupd.models import backend, catalog

    model = backend.load_model(catalog.resolve("builtin"))  # the daemon's default flags
    # The daemon's layout: one model stream per core, one torch thread each (a single
    # stream on all threads spin-waits in OpenMP on a busy machine, doubling its CPU).
    # The CPU counts from when every stream has warmed up (bench/model_forward.py).
    result = benchmark_forward(
        model, images=images, batch_size=32, threads=_cores(), streams=_cores()
    )
    print(json.dumps({"seconds": result["seconds"], "cpu": result["cpu_seconds"]}))


# ------------------------------------------------------------------------------ decode study


def decode_study(folder: Path, per_format: int = 6, repeats: int = 3) -> str:
    """CPU per file, by format, of the daemon's decode (``imaging.decode`` with the model's
    spec): as shipped, without the shrink after decoding, and Pillow's bare decode; HEIC
    files' embedded thumbnails.  In this process, one file at a time, the three alternated."""
    import io

    import pillow_heif
    from PIL import Image

    from photodupd import imaging

    spec = imaging.PreprocessSpec()
    by_format: dict[str, list[Path]] = {}
    for path in peer_sets.files_of(folder):
        if "__" not in path.name:  # the shots themselves, not their copies
            by_format.setdefault(path.suffix.lower(), []).append(path)
    shrink = imaging._reduced

    def bare(data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (DECODE_SIDE, DECODE_SIDE))
            image.load()

    def shipped(data: bytes) -> None:
        imaging.decode(data, is_data=True, spec=spec)

    def unshrunk(data: bytes) -> None:
        imaging._reduced = lambda image, side: image
        try:
            imaging.decode(data, is_data=True, spec=spec)
        finally:
            imaging._reduced = shrink

    rows = []
    for suffix, paths in sorted(by_format.items()):
        times: dict[str, list[float]] = {"bare": [], "shipped": [], "unshrunk": []}
        bits = []
        for path in paths[:per_format]:
            data = path.read_bytes()
            for _ in range(repeats):
                for label, fn in (("bare", bare), ("shipped", shipped), ("unshrunk", unshrunk)):
                    started = time.process_time()
                    fn(data)
                    times[label].append(time.process_time() - started)
            with Image.open(io.BytesIO(data)) as image:
                full = image.convert("RGB")
            got = imaging.decode(data, is_data=True, spec=spec)
            bits.append((got.phash ^ imaging.phash(full)).bit_count())
        thumbs = ""
        if suffix in (".heic", ".heif"):
            count = sum(len(pillow_heif.open_heif(p).info.get("thumbnails", [])) for p in paths)
            thumbs = f"{count} embedded thumbnails"
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        rows.append(
            [
                suffix,
                min(len(paths), per_format),
                f"{med['bare']:.0f} ms",
                f"{med['unshrunk']:.0f} ms",
                f"{med['shipped']:.0f} ms",
                f"{1 - med['shipped'] / med['unshrunk']:.0%}",
                max(bits),
                thumbs,
            ]
        )
    header = [
        "format",
        "files",
        "Pillow decode alone",
        "decode() without the shrink",
        "decode() as shipped",
        "saved",
        "pHash bits vs full size (max)",
        "",
    ]
    return "Decode CPU per file (medians):\n\n" + markdown_table(header, rows)


# ------------------------------------------------------------------------------ exact tier


def exact_tier_reads(folder: Path) -> dict[str, int]:
    """Bytes the exact tier reads in one real scan (built-in model), by purpose."""
    from _common import scan

    from photodup_tui.engine import exact
    from photodup_tui.engine import scan as scan_module
    from photodup_tui.engine.types import Group

    counts = {"partial": 0, "full (exact candidates)": 0, "full (group members)": 0}
    label = threading.local()
    members = threading.Event()
    real_pread = os.pread

    class CountingOs:
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def pread(fd: int, n: int, offset: int) -> bytes:
            data = real_pread(fd, n, offset)
            kind = getattr(label, "kind", "partial")
            if kind == "full":
                kind = "full (group members)" if members.is_set() else "full (exact candidates)"
            counts[kind] += len(data)
            return data

    def labelled(fn: Callable[[str, object], str], kind: str) -> Callable[[str, object], str]:
        def wrapper(path: str, expected: object) -> str:
            label.kind = kind
            return fn(path, expected)

        return wrapper

    saved = (exact.os, exact.partial_hash, exact.full_hash, scan_module._Run._hash_members)

    def hash_members(self: scan_module._Run, groups: list[Group]) -> list[Group]:
        members.set()
        try:
            return saved[3](self, groups)
        finally:
            members.clear()

    exact.os = CountingOs()  # type: ignore[assignment]
    exact.partial_hash = labelled(saved[1], "partial")  # type: ignore[assignment,arg-type]
    exact.full_hash = labelled(saved[2], "full")  # type: ignore[assignment,arg-type]
    scan_module._Run._hash_members = hash_members  # type: ignore[method-assign]
    try:
        with isolated_environment() as base, Daemon(base, "builtin") as daemon:
            source = daemon.source()
            result = scan([folder], source, base / "exact.sqlite")
            first = dict(counts)
            scan([folder], source, base / "exact.sqlite")  # a rescan: cached hashes, no reads
            first["rescan"] = sum(counts.values()) - sum(first.values())
            first["groups"] = len(result.groups)
            return first
    finally:
        exact.os, exact.partial_hash, exact.full_hash = saved[:3]
        scan_module._Run._hash_members = saved[3]  # type: ignore[method-assign]


# ------------------------------------------------------------------------------ the run


def _contents(files: Sequence[Path]) -> int:
    import hashlib

    return len({hashlib.blake2b(f.read_bytes(), digest_size=16).digest() for f in files})


def bench_set(name: str, rounds: int, with_exact: bool, limit: int | None) -> SetResult:
    folder = peer_sets.build(name)
    files = peer_sets.files_of(folder)
    if limit is not None:  # a quick try: hard links to the first files
        files = link_into(files[:limit], Path(tempfile.mkdtemp(prefix="pdb-few-")) / name)
        folder = files[0].parent
    contents = _contents(files)
    result = SetResult(name, len(files), sum(f.stat().st_size for f in files) / 1e6, contents)
    warm_page_cache(files)
    with isolated_environment() as base:
        daemon = DaemonProcess(base)
        try:
            say(f"{name}: warming photodupd ...")
            daemon.warm(files[:8], base)
            field_list = contenders(folder, base, daemon, contents)
            for round_ in range(rounds):
                for contender in field_list:
                    say(f"{name}: round {round_ + 1}/{rounds}: {contender.label} ...")
                    run = contender.first(round_)
                    result.runs.setdefault(contender.label, []).append(run)
                    result.notes[contender.label] = run.note.splitlines()[-1] if run.note else ""
                    if contender.rescan is not None:
                        again = contender.rescan(round_)
                        result.rescans.setdefault(contender.label, []).append(again)
        finally:
            daemon.stop()
    if with_exact:
        say(f"{name}: counting the exact tier's reads ...")
        result.exact = exact_tier_reads(folder)
    return result


# ------------------------------------------------------------------------------ report


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _ratio(runs: Sequence[Run], base: Sequence[Run], get: Callable[[Run], float]) -> float:
    return _median([get(a) / get(b) for a, b in zip(runs, base, strict=True)])


def report(results: Sequence[SetResult], rounds: int) -> str:
    lines = [f"Peers benchmark; {machine_line()}; {rounds} rounds, medians, ratios per round"]
    for res in results:
        czk = res.runs["Czkawka core"]
        header = [
            "contender",
            "first scan wall",
            "/ Czkawka",
            "CPU (client + daemon)",
            "/ Czkawka",
            "peak RSS",
            "rescan wall",
            "rescan / Czkawka rescan",
        ]
        rows = []
        for label, runs in res.runs.items():
            again = res.rescans.get(label)
            czk_again = res.rescans["Czkawka core"]
            cpu = f"{_median([r.cpu for r in runs]):.1f} s"
            if any(r.cpu_daemon for r in runs):
                cpu += (
                    f" ({_median([r.cpu_client for r in runs]):.1f}"
                    f" + {_median([r.cpu_daemon for r in runs]):.1f})"
                )
            rows.append(
                [
                    label,
                    f"{_median([r.wall for r in runs]):.1f} s",
                    f"{_ratio(runs, czk, lambda r: r.wall):.2f}x",
                    cpu,
                    f"{_ratio(runs, czk, lambda r: r.cpu):.2f}x",
                    f"{_median([r.peak_rss for r in runs]) / 2**20:.0f} MB",
                    f"{_median([r.wall for r in again]):.2f} s" if again else "",
                    f"{_ratio(again, czk_again, lambda r: r.wall):.2f}x" if again else "",
                ]
            )
        floors = _median(
            [
                d.cpu + m.cpu
                for d, m in zip(res.runs["decode floor"], res.runs["model floor"], strict=True)
            ]
        )
        model_cpu = _median([r.cpu for r in res.runs["photodup, built-in model"]])
        lines += [
            "",
            f"### {res.name} set: {res.files} files, {res.megabytes:.0f} MB, "
            f"{res.contents} distinct contents",
            "",
            markdown_table(header, rows),
            "",
            f"photodup (built-in model) CPU / (decode floor + model floor) CPU: "
            f"{model_cpu / floors:.2f}x",
            "",
            "What each contender reported (last round): "
            + "; ".join(f"{k}: {v}" for k, v in res.notes.items() if v),
        ]
        if res.exact:
            total = res.megabytes * 1e6
            kinds = {k: v for k, v in res.exact.items() if k not in ("groups", "rescan")}
            read = sum(kinds.values())
            parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in kinds.items())
            lines += [
                "",
                f"Exact tier reads (one scan, built-in model, {res.exact['groups']} groups): "
                f"{read / 1e6:.1f} MB of {total / 1e6:.0f} MB ({read / total:.0%}): {parts}; "
                f"the rescan reads {res.exact['rescan'] / 1e6:.1f} MB.",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--set", choices=[*peer_sets.SETS, "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-exact", action="store_true", help="skip the exact tier's reads")
    parser.add_argument("--files", type=int, help="only the first N files of each set (a try)")
    parser.add_argument(
        "--decode-study", action="store_true", help="only the per-format decode study"
    )
    parser.add_argument("--decode-floor", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode_floor is not None:
        return decode_floor(args.decode_floor)
    if args.model_floor is not None:
        return model_floor(args.model_floor)
    if args.decode_study:
        return emit(decode_study(peer_sets.build("mixed")), args.out)
    names = peer_sets.SETS if args.set == "both" else (args.set,)
    results = [bench_set(name, args.rounds, not args.no_exact, args.files) for name in names]
    emit(report(results, args.rounds), args.out)


if __name__ == "__main__":
    main()

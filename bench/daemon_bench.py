"""photodupd benchmark: latency, end-to-end throughput vs model-only, cold start, memory.

Usage::

    python bench/daemon_bench.py [--images 96] [--clip] [--rounds 2] [--out bench/results/daemon.md]

Everything is measured in one run on this machine, so the ratios compare like
with like; with ``--rounds N`` every measurement is repeated N times,
interleaved (daemon, model-only, next model, ...), and the best is kept, so a
busy neighbour skews less.  Photos are generated 12 MP JPEGs (4000x3000,
quality 90, with sensor-like grain so they weigh ~3-4 MB like camera files),
cached under ``$TMPDIR/photodup-bench``.  ViT-B-32 is measured with random
weights saved to a file (real weights need a download); its memory and speed
are the same as with the real weights.

Columns:

* *model only*: the target's baseline, the model's own forward pass on
  preprocessed tensors, batches of 32 on all threads;
* *model only, daemon layout*: the same with the daemon's model streams (one
  batch per stream at once, the threads split among them): the real ceiling;
* *CPU per image*: core-milliseconds the daemon's threads and the decoder
  processes spent per photo end to end; with every core busy, end to end
  cannot beat ``cores * 1000 / (model + decode)`` images/s;
* *RSS*: the daemon process alone (decoders are separate processes, listed
  below the table) once loaded and idle, at its peak while serving (sampled
  every 20 ms), and right after the burst (the freed activations go back to
  the OS a second later).

Below the table, what an idle daemon costs (built-in model): the RSS of the whole
daemon, its decoder processes included (summed), just started and ready, ready after
a burst, after ``idle_unload``, and after ``idle_exit`` (no process left); and the
first reply after an idle unload (the model reloads) next to the first reply after
an idle exit (a cold start: a new photodupd, ``import torch``, the model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photodupd.client import AsyncClient, ConnectionLost, SyncClient  # noqa: E402

MIB = 2**20


def make_photos(count: int, size: tuple[int, int]) -> list[Path]:
    from tests.photos import make_photo, write_jpeg

    folder = Path(tempfile.gettempdir()) / "photodup-bench" / f"{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        if not path.exists():
            partial = path.with_suffix(".part")
            write_jpeg(partial, make_photo(1000 + i, size, noise=6.0), quality=90)
            os.replace(partial, path)  # an interrupted run never leaves a truncated photo
        paths.append(path)
    return paths


class Daemon:
    def __init__(self, socket_path: Path, *args: str) -> None:
        self.socket_path = socket_path
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "photodupd.daemon_cli",
                "--socket",
                str(socket_path),
                "--log-level",
                "WARNING",
                *args,
            ],
            env=env,
        )

    def wait_hello(self) -> None:
        while True:
            try:
                with SyncClient(self.socket_path, timeout=5) as client:
                    client.connect()
                    return
            except (OSError, ConnectionLost):
                if self.proc.poll() is not None:
                    raise RuntimeError("photodupd exited") from None
                time.sleep(0.02)

    def status(self) -> dict:
        with SyncClient(self.socket_path, timeout=30) as client:
            client.connect()
            return dict(client.request("status"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def first_reply_seconds(daemon: Daemon, photo: Path) -> float:
    """From the daemon's spawn (or from now, after an unload) to the first embedding."""
    daemon.wait_hello()
    with SyncClient(daemon.socket_path, timeout=300) as client:
        client.connect()
        reply = client.request("features", items=[{"path": str(photo)}])
    assert reply["items"][0]["ok"], reply
    return time.perf_counter() - daemon.started


def ping_latency(socket_path: Path, count: int = 2000) -> tuple[float, float]:
    samples = []
    with SyncClient(socket_path) as client:
        client.connect()
        for _ in range(100):
            client.request("ping")
        for _ in range(count):
            t = time.perf_counter()
            client.request("ping")
            samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


async def end_to_end(
    socket_path: Path, photos: list[Path], chunk: int = 16, in_flight: int = 8
) -> float:
    """Images/s for all photos, pipelined the way the engine sends them."""
    async with AsyncClient(socket_path) as client:
        await client.features([{"path": str(photos[0])}])  # warm
        queue = [photos[i : i + chunk] for i in range(0, len(photos), chunk)]
        started = time.perf_counter()

        async def worker() -> int:
            ok = 0
            while queue:
                part = queue.pop()
                reply = await client.features([{"path": str(p)} for p in part])
                ok += sum(1 for item in reply["items"] if item["ok"])
            return ok

        done = sum(await asyncio.gather(*(worker() for _ in range(in_flight))))
        seconds = time.perf_counter() - started
    assert done == len(photos), f"only {done} of {len(photos)} embedded"
    return done / seconds


def model_only(model_args: list[str], images: int, threads: int, streams: int) -> dict[str, float]:
    """The model's own forward pass on preprocessed tensors (no decode, no socket), loaded
    with the daemon's own flags so it is the very model the daemon serves."""
    code = (
        "import sys, json\n"
        "from photodupd import daemon_cli\n"
        "from bench.model_forward import benchmark_forward\n"
        "from photodupd.models import backend, catalog\n"
        "daemon_cli.limit_memory_growth()\n"
        "cfg = daemon_cli.make_config(daemon_cli.build_parser().parse_args(sys.argv[4:]))\n"
        "choice = catalog.resolve(cfg.model, weights=cfg.weights, model_config=cfg.model_config)\n"
        "model = backend.load_model(choice, half_weights=cfg.clip_weights == 'float16')\n"
        "print(json.dumps(benchmark_forward(model, images=int(sys.argv[1]),"
        " batch_size=32, threads=int(sys.argv[2]), streams=int(sys.argv[3]))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(images), str(threads), str(streams), *model_args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def random_vit_b32(folder: Path) -> Path:
    path = folder / "vit-b-32-random.safetensors"
    if not path.exists():
        code = (
            "import sys, open_clip, safetensors.torch as st\n"
            "m = open_clip.create_model('ViT-B-32', pretrained=None)\n"
            "st.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[1])\n"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def memory(pid: int) -> dict[str, int]:
    """VmRSS / RssAnon / RssFile of a process, in bytes (Linux); VmRSS elsewhere."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            fields = dict(
                line.split(":", 1) for line in status if line.startswith(("VmRSS", "Rss"))
            )
        return {key: int(value.split()[0]) * 1024 for key, value in fields.items()}
    except OSError:
        return {"VmRSS": psutil.Process(pid).memory_info().rss}


def cpu_seconds(process: psutil.Process) -> tuple[float, float]:
    """(the daemon's own CPU seconds, its decoder processes' CPU seconds)."""
    times = process.cpu_times()
    children = 0.0
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.Error:
            continue
        children += child_times.user + child_times.system
    return times.user + times.system, children


@dataclass
class Row:
    label: str
    daemon_args: list[str]
    cold: list[float] = field(default_factory=list)
    ping: list[tuple[float, float]] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # ms per image
    only: list[float] = field(default_factory=list)
    only_streams: list[float] = field(default_factory=list)
    rss_idle: list[dict[str, int]] = field(default_factory=list)
    rss_peak: list[dict[str, int]] = field(default_factory=list)
    rss_after: list[int] = field(default_factory=list)
    decoder_rss: list[int] = field(default_factory=list)
    streams: int = 1


def measure_daemon(row: Row, photos: list[Path], threads: int) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="pdb-"))
    runtime.chmod(0o700)
    sock = runtime / "rt" / "d.sock"
    daemon = Daemon(
        sock, "--threads", str(threads), "--decode-workers", str(threads), *row.daemon_args
    )
    try:
        row.cold.append(first_reply_seconds(daemon, photos[0]))
        row.ping.append(ping_latency(sock))
        time.sleep(1.5)  # past the daemon's post-burst memory trim
        process = psutil.Process(daemon.proc.pid)
        row.rss_idle.append(memory(process.pid))
        peak: dict[str, int] = {"VmRSS": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                now = memory(process.pid)
                if now["VmRSS"] > peak["VmRSS"]:
                    peak.clear()
                    peak.update(now)
                done.wait(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        own, children = cpu_seconds(process)
        try:
            row.e2e.append(asyncio.run(end_to_end(sock, photos)))
        finally:
            done.set()
            sampler.join()
        own_after, children_after = cpu_seconds(process)
        row.cpu.append(
            (
                (own_after - own) * 1000 / len(photos),
                (children_after - children) * 1000 / len(photos),
            )
        )
        status = daemon.status()
        row.rss_peak.append(peak)
        row.rss_after.append(int(status["rss"]))
        row.streams = int(status.get("model_streams") or 1)
        row.decoder_rss.append(
            sum(child.memory_info().rss for child in process.children(recursive=True))
        )
    finally:
        daemon.stop()
    row.only.append(model_only(row.daemon_args, len(photos), threads, 1)["images_per_s"])
    if row.streams > 1:
        measured = model_only(row.daemon_args, len(photos), threads, row.streams)
        row.only_streams.append(measured["images_per_s"])


def whole_rss(pid: int) -> tuple[int, int]:
    """(the daemon's RSS, its child processes' RSS summed); (0, 0) when it is gone."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return 0, 0
        own = process.memory_info().rss
        children = 0
        for child in process.children(recursive=True):
            try:
                children += child.memory_info().rss
            except psutil.Error:
                continue
        return own, children
    except psutil.NoSuchProcess:
        return 0, 0


@dataclass
class Idle:
    """What an idle daemon holds (daemon, decoders) in bytes, and its first replies."""

    started: tuple[int, int] = (0, 0)  # loaded and ready, before any request
    ready: tuple[int, int] = (0, 0)  # ready, a second after a burst
    unloaded: tuple[int, int] = (0, 0)  # after idle_unload
    exited: tuple[int, int] = (0, 0)  # after idle_exit
    after_unload: float = 0.0  # first embedding after an idle unload, seconds
    after_exit: float = 0.0  # first embedding after an idle exit (a new process), seconds


#: Idle timers for the lifecycle run: long enough to measure each state on a busy machine.
IDLE_UNLOAD = 6.0
IDLE_EXIT = 15.0


def wait_status(daemon: Daemon, done: Callable[[dict], bool]) -> dict:
    while True:
        status = daemon.status()
        if done(status):
            return status
        time.sleep(0.1)


def idle_lifecycle(photos: list[Path], threads: int) -> Idle:
    """One built-in daemon from start to idle exit, then its successor's cold start."""
    runtime = Path(tempfile.mkdtemp(prefix="pdb-"))
    runtime.chmod(0o700)
    sock = runtime / "rt" / "d.sock"
    args = ["--model", "builtin", "--threads", str(threads), "--decode-workers", str(threads)]
    timers = ["--idle-unload", f"{IDLE_UNLOAD:g}", "--idle-exit", f"{IDLE_EXIT:g}"]
    idle = Idle()
    daemon = Daemon(sock, *args, *timers)
    pid = daemon.proc.pid
    try:
        daemon.wait_hello()
        wait_status(daemon, lambda s: s["state"] == "ready")
        time.sleep(1.5)  # past the post-load memory trim
        idle.started = whole_rss(pid)
        asyncio.run(end_to_end(sock, photos[:32]))
        time.sleep(1.5)  # past the post-burst memory trim, well before the unload
        idle.ready = whole_rss(pid)
        wait_status(daemon, lambda s: s["state"] == "unloaded" and not s["decoder"]["pids"])
        idle.unloaded = whole_rss(pid)
        daemon.started = time.perf_counter()
        idle.after_unload = first_reply_seconds(daemon, photos[1])
        code = daemon.proc.wait(IDLE_EXIT + 120)  # its idle exit, on its own
        assert code == 0, f"photodupd exited {code}"
        idle.exited = whole_rss(pid)
        assert not sock.exists(), "an idle exit hands the socket path over"
    finally:
        daemon.stop()
    successor = Daemon(sock, *args)  # what photodup or socket activation starts next
    try:
        idle.after_exit = first_reply_seconds(successor, photos[2])
    finally:
        successor.stop()
    return idle


def idle_lines(idle: Idle) -> list[str]:
    def both(rss: tuple[int, int]) -> str:
        return f"{mib(sum(rss))} MiB (daemon {mib(rss[0])} + decoders {mib(rss[1])})"

    return [
        "- builtin, idle, the whole daemon (its decoder processes' RSS added): "
        f"started and ready {both(idle.started)}; ready after a burst {both(idle.ready)}; "
        f"after idle_unload {both(idle.unloaded)}; after idle_exit {mib(sum(idle.exited))} MiB "
        "(no process left)",
        f"- first embedding after an idle unload (builtin): {idle.after_unload:.2f} s; "
        f"after an idle exit (a new photodupd: cold start): {idle.after_exit:.2f} s",
    ]


def half_weights_check(weights: Path, threads: int) -> str:
    """ViT-B-32 with float16 weight storage against float32: cosine on real photos, speed."""
    code = (
        "import sys, time, json, numpy as np, skimage.data\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "from photodupd import imaging\n"
        "from bench.model_forward import benchmark_forward\n"
        "from photodupd.models import backend, catalog\n"
        "backend.configure_threads(int(sys.argv[2]))\n"
        "choice = catalog.resolve('clip:ViT-B-32', weights=Path(sys.argv[1]))\n"
        "full = backend.load_model(choice, half_weights=False)\n"
        "half = backend.load_model(choice, half_weights=True)\n"
        "names = ['astronaut', 'camera', 'coffee', 'chelsea', 'rocket', 'coins', 'moon', 'page',\n"
        "         'text', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'grass',\n"
        "         'gravel', 'brick', 'cell', 'clock', 'horse', 'cat']\n"
        "def pixels(name):\n"
        "    image = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert('RGB')\n"
        "    return imaging._model_pixels(image, full.spec)\n"
        "batch = np.stack([pixels(n) for n in names])\n"
        "cos = np.sum(full.embed(batch) * half.embed(batch), axis=1)\n"
        "speed = {}\n"
        "for rnd in range(3):\n"
        "    for label, model in (('full', full), ('half', half)):\n"
        "        r = benchmark_forward(model, images=64, batch_size=32)\n"
        "        speed[label] = max(speed.get(label, 0.0), r['images_per_s'])\n"
        "print(json.dumps({'photos': len(names), 'min': float(cos.min()),\n"
        "                  'mean': float(cos.mean()), **speed, 'id': half.id}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(weights), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (
        f"float16 weight storage (ViT-B-32, vs float32, {r['photos']} skimage.data photos): "
        f"cosine min {r['min']:.7f}, mean {r['mean']:.7f}; model only {r['half']:.1f} vs "
        f"{r['full']:.1f} img/s ({(r['half'] / r['full'] - 1) * 100:+.1f}%); id `{r['id']}`"
    )


def mib(value: int) -> str:
    return f"{value / MIB:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="repeat, interleaved; keep best")
    parser.add_argument(
        "--clip", action="store_true", help="also measure ViT-B-32 (random weights)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    print(f"generating {args.images} 12 MP JPEGs (cached)...", file=sys.stderr)
    photos = make_photos(args.images, (4000, 3000))
    mb = sum(p.stat().st_size for p in photos) / len(photos) / 1e6
    rows = [Row("builtin (EfficientNet-Lite0)", ["--model", "builtin"])]
    weights = None
    if args.clip:
        weights = random_vit_b32(Path(tempfile.gettempdir()) / "photodup-bench")
        rows.append(
            Row("ViT-B-32 (open_clip)", ["--model", "clip:ViT-B-32", "--weights", str(weights)])
        )
    loads = []
    for round_number in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for row in rows:
            print(f"round {round_number + 1}: {row.label}", file=sys.stderr)
            measure_daemon(row, photos, args.threads)
    print("idle lifecycle: builtin", file=sys.stderr)
    lifecycle = idle_lifecycle(photos, args.threads)
    check = half_weights_check(weights, args.threads) if weights is not None else None

    lines = [
        f"photodupd benchmark: {args.images} generated 12 MP JPEGs ({mb:.1f} MB average), "
        f"{args.threads} torch threads + {args.threads} decoders, {os.cpu_count()} cores; "
        f"best of {args.rounds} interleaved round(s), load average at the start of each: "
        + ", ".join(f"{load:.1f}" for load in loads),
        "",
        "| model | cold start to first embedding | ping p50 / p99 | end to end | model only "
        "| ratio | model only, daemon layout | ratio | CPU per image: model + decode "
        "| ceiling | RSS idle / peak / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e2e, only = max(r.e2e), max(r.only)
        own, decode = min(r.cpu, key=sum)
        layout = max(r.only_streams) if r.only_streams else only
        p50, p99 = min(r.ping)
        idle = min(r.rss_idle, key=lambda m: m["VmRSS"])
        peak = min(r.rss_peak, key=lambda m: m["VmRSS"])
        lines.append(
            f"| {r.label} | {min(r.cold):.2f} s | {p50:.3f} / {p99:.3f} ms | {e2e:.1f} img/s "
            f"| {only:.1f} img/s | {e2e / only:.2f}x "
            f"| {layout:.1f} img/s ({r.streams} x {args.threads // r.streams} threads) "
            f"| {e2e / layout:.2f}x | {own:.0f} + {decode:.0f} ms "
            f"| {args.threads * 1000 / (own + decode):.1f} img/s "
            f"| {mib(idle['VmRSS'])} / {mib(peak['VmRSS'])} / {mib(min(r.rss_after))} MiB |"
        )
    lines.append("")
    for r in rows:
        idle = min(r.rss_idle, key=lambda m: m["VmRSS"])
        peak = min(r.rss_peak, key=lambda m: m["VmRSS"])
        if "RssAnon" in idle:
            lines.append(
                f"- {r.label}: RSS idle {mib(idle['RssAnon'])} MiB anonymous + "
                f"{mib(idle['RssFile'])} MiB file-backed, peak {mib(peak['RssAnon'])} + "
                f"{mib(peak['RssFile'])} MiB; decoder processes {mib(min(r.decoder_rss))} MiB "
                "in all"
            )
    lines += idle_lines(lifecycle)
    if check is not None:
        lines.append(f"- {check}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

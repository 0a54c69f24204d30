"""photodupd benchmark: latency, end-to-end throughput vs model-only, cold start, memory.

Usage::

    python bench/daemon_bench.py [--images 96] [--clip] [--out bench/results/daemon.md]

Everything is measured in one run on this machine, so the ratios compare like
with like.  Photos are generated 12 MP JPEGs (4000x3000, quality 90, with
sensor-like grain so they weigh ~3-4 MB like camera files), cached under
``$TMPDIR/photodup-bench``.  ViT-B-32 is measured with random weights saved to
a file (real weights need a download); its memory and speed are the same as
with the real weights.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from photodupd.client import AsyncClient, ConnectionLost, SyncClient  # noqa: E402


def make_photos(count: int, size: tuple[int, int]) -> list[Path]:
    from tests.photos import make_photo, write_jpeg

    folder = Path(tempfile.gettempdir()) / "photodup-bench" / f"{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        if not path.exists():
            write_jpeg(path, make_photo(1000 + i, size, noise=6.0), quality=90)
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


def model_only(model_name: str, images: int, threads: int, weights: Path | None = None) -> float:
    """The model's own forward pass on preprocessed tensors (no decode, no socket)."""
    code = (
        "import sys, json; from pathlib import Path\n"
        "from photodupd.models import backend, catalog\n"
        "backend.configure_threads(int(sys.argv[2]))\n"
        "w = Path(sys.argv[4]) if sys.argv[4] else None\n"
        "model = backend.load_model(catalog.resolve(sys.argv[1], weights=w))\n"
        "print(json.dumps(backend.benchmark_forward(model, images=int(sys.argv[3]), batch_size=32)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, model_name, str(threads), str(images), str(weights or "")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    import json

    return float(json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"])


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


def measure_model(
    label: str,
    args: list[str],
    photos: list[Path],
    threads: int,
    model_name: str,
    weights: Path | None,
) -> dict[str, object]:
    runtime = Path(tempfile.mkdtemp(prefix="pdb-"))
    runtime.chmod(0o700)
    sock = runtime / "rt" / "d.sock"
    daemon = Daemon(sock, "--threads", str(threads), "--decode-workers", str(threads), *args)
    try:
        cold = first_reply_seconds(daemon, photos[0])
        p50, p99 = ping_latency(sock)
        e2e = asyncio.run(end_to_end(sock, photos))
        rss = daemon.status()["rss"]
    finally:
        daemon.stop()
    only = model_only(model_name, len(photos), threads, weights)
    return {
        "model": label,
        "cold": cold,
        "p50": p50,
        "p99": p99,
        "e2e": e2e,
        "only": only,
        "ratio": e2e / only,
        "rss": rss,
    }


def idle_reload(photos: list[Path], threads: int) -> float:
    runtime = Path(tempfile.mkdtemp(prefix="pdb-"))
    runtime.chmod(0o700)
    sock = runtime / "rt" / "d.sock"
    daemon = Daemon(sock, "--model", "builtin", "--threads", str(threads), "--idle-unload", "1")
    try:
        first_reply_seconds(daemon, photos[0])
        while daemon.status()["state"] != "unloaded":
            time.sleep(0.1)
        daemon.started = time.perf_counter()
        return first_reply_seconds(daemon, photos[1])
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clip", action="store_true", help="also measure ViT-B-32 (random weights)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    print(f"generating {args.images} 12 MP JPEGs (cached)...", file=sys.stderr)
    photos = make_photos(args.images, (4000, 3000))
    mb = sum(p.stat().st_size for p in photos) / len(photos) / 1e6
    rows = [
        measure_model(
            "builtin (EfficientNet-Lite0)",
            ["--model", "builtin"],
            photos,
            args.threads,
            "builtin",
            None,
        )
    ]
    if args.clip:
        weights = random_vit_b32(Path(tempfile.gettempdir()) / "photodup-bench")
        rows.append(
            measure_model(
                "ViT-B-32 (open_clip)",
                ["--model", "clip:ViT-B-32", "--weights", str(weights)],
                photos,
                args.threads,
                "clip:ViT-B-32",
                weights,
            )
        )
    reload_s = idle_reload(photos, args.threads)

    lines = [
        f"photodupd benchmark: {args.images} generated 12 MP JPEGs ({mb:.1f} MB average), "
        f"{args.threads} torch threads + {args.threads} decoders, {os.cpu_count()} cores",
        "",
        "| model | cold start to first embedding | ping p50 | ping p99 | end to end | model only | ratio | daemon RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['cold']:.2f} s | {r['p50']:.3f} ms | {r['p99']:.3f} ms | "
            f"{r['e2e']:.1f} img/s | {r['only']:.1f} img/s | {r['ratio']:.2f}x | {int(r['rss']) / 2**20:.0f} MiB |"  # type: ignore[call-overload]
        )
    lines += ["", f"First embedding after an idle unload (builtin): {reload_s:.2f} s"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

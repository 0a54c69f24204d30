"""Remote vs local first scan: the same photodupd, used on this computer and over ssh through
a link throttled here.

Usage::

    python bench/remote_bench.py [--photos 32] [--rounds 2] [--out bench/results/remote.md]

One photodupd (built-in model, this machine's cores) serves every run.  *local* is
``photodup scan`` on its socket (the daemon decodes the files itself).  *remote* is the same
scan through ``ssh 127.0.0.1 photodup-ctl bridge`` to that very daemon, over a real sshd
(tests/remote/sshd.py) reached through a forwarding proxy that limits the bandwidth of each
direction and adds a one-way delay of half the round trip (``LINKS``).  With the reduced
upload this computer decodes the photos (its isolated decoders) and sends the model's input;
with the original upload it sends the files and the daemon decodes them.

Each run is a first scan: a fresh cache, the product's ``Scanner`` from walk to groups.
Photos are generated 12 MP camera-like JPEGs (bench/_common.py, ~3-4 MB each).  images/s
is photos / wall time of the whole scan; "bytes per photo" is what the client wrote for
``features`` requests (frames included), per photo.  With ``--rounds N`` each configuration
runs N times, interleaved, and the best is kept (a busy neighbour skews less).

Both sides share this machine's cores: decoding moves from the daemon to the scanning
process, the model stays put, so the ratio shows what the link and the protocol cost, not
what a faster remote computer would gain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    Daemon,
    isolated_environment,
    link_into,
    make_camera_photos,
    say,
    scan,
)
from photodup_tui.engine.features import FeatureSource  # noqa: E402
from photodup_tui.engine.remote_features import LinkedFeatureSource  # noqa: E402
from photodupd import remote  # noqa: E402
from tests.remote.sshd import Sshd, free_port, start_sshd  # noqa: E402


@dataclass(frozen=True)
class Link:
    name: str
    bits_per_s: float
    rtt_s: float


LINKS = (Link("100 Mbit/s, 20 ms", 100e6, 0.020), Link("20 Mbit/s, 50 ms", 20e6, 0.050))
CHUNK = 16 * 1024
#: Bytes a direction buffers beyond what the link carries: about two bandwidth-delay
#: products of the fastest link, so the proxy slows TCP down as a real link would.
QUEUE_CHUNKS = 64


# ------------------------------------------------------------------------------ the link


class ThrottledLink:
    """A TCP proxy 127.0.0.1:port -> 127.0.0.1:target: each direction carries at most
    ``bits_per_s`` and delivers each byte ``rtt_s / 2`` after it was sent."""

    def __init__(self, target: int, link: Link) -> None:
        self.target = target
        self.link = link
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        delay = self.link.rtt_s / 2
        rate = self.link.bits_per_s / 8

        async def carry() -> None:
            while (entry := await queue.get()) is not None:
                due, chunk = entry
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
            writer.close()

        carrier = asyncio.create_task(carry())
        wire_free = time.monotonic()  # when the last byte queued has left the sender
        try:
            while chunk := await reader.read(CHUNK):
                wire_free = max(wire_free, time.monotonic()) + len(chunk) / rate
                await queue.put((wire_free + delay, chunk))
        finally:
            await queue.put(None)
            with contextlib.suppress(Exception):
                await carrier

    def close(self) -> None:
        async def stop() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        # Connections cut mid-transfer are the point of stopping: nothing to report.
        self._loop.set_exception_handler(lambda _loop, _context: None)
        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join(10)


# ------------------------------------------------------------------------------ runs


@dataclass
class Run:
    name: str
    seconds: float
    photos: int
    bytes_per_photo: float | None = None
    connect_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.photos / self.seconds


def first_scan(name: str, folder: Path, source: FeatureSource, base: Path, photos: int) -> Run:
    cache = base / f"cache-{time.monotonic_ns()}.sqlite"
    started = time.perf_counter()
    result = scan([folder], source, cache)
    seconds = time.perf_counter() - started
    assert result.counts.embedded == photos, (name, result.counts, result.errors[:3])
    return Run(name, seconds, photos)


def remote_run(
    name: str, folder: Path, endpoint: remote.CommandEndpoint, upload: str, base: Path, photos: int
) -> Run:
    started = time.perf_counter()
    source = LinkedFeatureSource(endpoint, upload=upload, mode="remote")
    connected = time.perf_counter() - started
    try:
        run = first_scan(name, folder, source, base, photos)
        run.bytes_per_photo = source.bytes_sent / max(source.photos_sent, 1)
        run.connect_seconds = connected
        return run
    finally:
        source.close()


@contextlib.contextmanager
def throttled(sshd: Sshd, link: Link) -> Iterator[int]:
    proxy = ThrottledLink(sshd.port, link)
    try:
        yield proxy.port
    finally:
        proxy.close()


def bridge_command(socket_path: Path) -> str:
    env = {"PYTHONPATH": str(ROOT)}
    for name in ("PHOTODUP_RUNTIME_DIR", "PHOTODUP_STATE_DIR", "PHOTODUP_CONFIG_DIR"):
        env[name] = os.environ[name]
    words = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (
        f"env {words} {shlex.quote(sys.executable)} -m photodup_tui.ctl "
        f"--socket {shlex.quote(str(socket_path))} bridge --no-start"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()

    say(f"making {args.photos} 12 MP photos (cached between runs)")
    files = make_camera_photos(args.photos)
    mean_size = sum(f.stat().st_size for f in files) / len(files)
    sshd = start_sshd()
    best: dict[str, Run] = {}
    try:
        with isolated_environment() as base, Daemon(base, "builtin") as daemon:
            folder = base / "library"
            link_into(files, folder)  # exactly these photos, whatever else is cached
            local = daemon.source()
            say(f"daemon ready: {local.model_id}")
            command = bridge_command(daemon.socket_path)
            configs: list[tuple[str, Link | None, str | None]] = [("local", None, None)]
            for link in LINKS:
                for upload in ("reduced", "original"):
                    configs.append((f"remote, {upload}, {link.name}", link, upload))
            for round_ in range(args.rounds):
                for name, link, upload in configs:
                    say(f"round {round_ + 1}: {name}")
                    if link is None or upload is None:
                        run = first_scan(name, folder, local, base, args.photos)
                    else:
                        with throttled(sshd, link) as port:
                            endpoint = remote.ssh_endpoint(
                                sshd.host, sshd.ssh_command(port=port), command
                            )
                            run = remote_run(name, folder, endpoint, upload, base, args.photos)
                    say(f"  {run.rate:.2f} images/s")
                    if name not in best or run.rate > best[name].rate:
                        best[name] = run
    finally:
        sshd.stop()
    table = render(best, args, mean_size)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


def render(best: dict[str, Run], args: argparse.Namespace, mean_size: float) -> str:
    local = best["local"].rate
    lines = [
        f"{args.photos} photos of 12 MP ({mean_size / 2**20:.1f} MB on average), "
        f"best of {args.rounds}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        "",
        "| scan | images/s | vs local | bytes per photo | ssh + model ready |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, run in best.items():
        sent = "-" if run.bytes_per_photo is None else f"{run.bytes_per_photo / 1024:,.0f} KB"
        ready = "-" if run.connect_seconds is None else f"{run.connect_seconds:.1f} s"
        lines.append(f"| {name} | {run.rate:.2f} | {run.rate / local:.2f}x | {sent} | {ready} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""photodupd under load and under attack: what it serves, how fast, how much memory, no crashes.

Usage::

    python bench/load_bench.py [--clients 200] [--rounds 2] [--grouped] [--out FILE.md]

One real daemon process (the production entry point, built-in model, 2 torch
threads, 2 decoder processes; see tests/fuzz/scripted_daemon.py for the one
change: a decoder that hangs or crashes on command) on a private socket in a
temporary directory.  Nothing leaves the local Unix socket.  Phases:

1. idle: ping and one-image latency with a single client;
2. load: ``--clients`` concurrent clients, each ``--rounds`` x (ping, features of one
   small photo, ping), while at the same time slow clients send a ping one byte a
   second, clients vanish mid-request and mid-reply, and every hostile frame of
   tests/fuzz/hostile_inputs.py is sent over and over;
3. busy: a burst of big requests into a small queue (``max_queue`` 128), retry off;
4. hostile images, decoder hangs and crashes, and mistyped requests, then the
   same good batch as before to compare throughput.

Peak RSS is sampled (psutil, every 50 ms) on the daemon process, and apart on its
decoder processes.  Bounded in time: about 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from photodupd import protocol  # noqa: E402
from photodupd.client import AsyncClient, ConnectionLost, DaemonUnavailable  # noqa: E402
from photodupd.protocol import RemoteError  # noqa: E402
from tests.fuzz import hostile_inputs as hostile  # noqa: E402
from tests.fuzz.scripted_daemon import ScriptedDaemon  # noqa: E402

CONFIG = {
    "threads": 2,
    "decode_workers": 2,
    "max_queue": 128,  # small, so that a burst of a few requests fills it
    "decode_timeout": 5.0,  # the injected hang costs this much
    "idle_unload": 0.0,
}
SLOW_CLIENTS = 4
VANISHING_CLIENTS = 20
BUSY_CLIENTS = 6
BUSY_ITEMS = 64
VANISHING_ITEMS = 4
HOSTILE_PAUSE = 0.02  # seconds between two hostile frames


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ measuring


class RssSampler:
    """Peak RSS of the daemon and of its decoder processes, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_decoders = 0
        self.deaths = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
                decoders = 0
                for child in self.process.children():
                    with contextlib.suppress(psutil.Error):
                        decoders += child.memory_info().rss
                self.peak_decoders = max(self.peak_decoders, decoders)
            except psutil.NoSuchProcess:
                self.deaths += 1
                return
            self._stop.wait(self.interval)

    def reset(self) -> None:
        self.peak = self.peak_decoders = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Tally:
    """What one phase saw: successes, errors by code, latencies in ms."""

    clients: int = 0
    retry_busy: bool = True  # what the product's clients do; counted apart
    served: int = 0
    busy_retried: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ping_ms: list[float] = field(default_factory=list)
    features_ms: list[float] = field(default_factory=list)

    async def call(self, samples: list[float], request: Callable[[], Awaitable[Any]]) -> Any:
        """One request; latency includes the waits of any busy retries."""
        started = time.perf_counter()
        delay = 0.05
        while True:
            try:
                result = await request()
                break
            except RemoteError as exc:
                if exc.code == "busy" and self.retry_busy:
                    self.busy_retried += 1
                    await asyncio.sleep(delay * (0.5 + random.random() / 2))
                    delay = min(1.0, delay * 2)
                    continue
                self.errors[exc.code] += 1
                return None
            except (ConnectionLost, DaemonUnavailable) as exc:
                self.errors[type(exc).__name__] += 1
                return None
        samples.append((time.perf_counter() - started) * 1000)
        self.served += 1
        return result


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "-"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(ordered):.1f} / {p99:.1f} ms"


@dataclass
class HostileCount:
    tried: int = 0
    as_expected: int = 0


class HostileLedger:
    def __init__(self) -> None:
        self.kinds: dict[str, HostileCount] = {}

    def record(self, kind: str, expected: bool) -> None:
        count = self.kinds.setdefault(kind, HostileCount())
        count.tried += 1
        count.as_expected += int(expected)


# ------------------------------------------------------------------------------ raw clients


async def raw_connection(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=protocol.MAX_FRAME)
    writer.write(protocol.pack(protocol.request(0, "hello", **protocol.hello("bench"))))
    await writer.drain()
    await read_doc(reader)
    return reader, writer


async def read_doc(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readexactly(protocol.HEADER.size)
    return protocol.unpack(await reader.readexactly(protocol.frame_length(header)))


async def hostile_frames_loop(path: Path, ledger: HostileLedger, stop: asyncio.Event) -> None:
    """Every hostile frame, over and over, each on a fresh connection: an error reply, then
    the connection closed by the daemon.  Paced (HOSTILE_PAUSE) so that the attack runs
    beside the load instead of replacing it."""
    while not stop.is_set():
        for kind, attack in hostile.HOSTILE_FRAMES.items():
            reader, writer = await raw_connection(path)
            expected = False
            try:
                writer.write(attack.payload)
                await writer.drain()
                reply = await asyncio.wait_for(read_doc(reader), 60)
                closed = await asyncio.wait_for(reader.read(), 60) == b""
                expected = reply["error"]["code"] == attack.code and closed
            except (ConnectionError, asyncio.IncompleteReadError, protocol.ProtocolError):
                pass
            finally:
                writer.close()
            ledger.record(f"frame: {kind}", expected)
            await asyncio.sleep(HOSTILE_PAUSE)


async def slow_client(path: Path, ledger: HostileLedger) -> None:
    """A ping written one byte a second (under frame_timeout, so it must be answered)."""
    reader, writer = await raw_connection(path)
    frame = protocol.pack(protocol.request(1, "ping"))
    for byte in frame:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1.0)
    reply = await read_doc(reader)
    writer.close()
    ledger.record(f"slow client ({len(frame)}-byte ping, 1 byte/s)", reply.get("ok") is True)


async def vanishing_client(path: Path, index: int, ledger: HostileLedger) -> None:
    """Sends a few photos' worth of work, then disappears before or in the middle of the reply."""
    reader, writer = await raw_connection(path)
    items = [
        {"data": hostile.good_image(index * VANISHING_ITEMS + n, (64, 48))}
        for n in range(VANISHING_ITEMS)
    ]
    writer.write(protocol.pack(protocol.request(1, "features", items=items)))
    await writer.drain()
    when = "mid reply" if index % 2 else "mid request"
    if when == "mid reply":
        header = await reader.readexactly(protocol.HEADER.size)
        await reader.readexactly(min(1024, protocol.frame_length(header)))
    writer.transport.abort()
    ledger.record(f"client vanished {when}", True)


# ------------------------------------------------------------------------------ phases


async def idle_phase(path: Path, photo: bytes) -> Tally:
    tally = Tally(clients=1)
    async with AsyncClient(path, retry_for=0) as client:
        for _ in range(200):
            await tally.call(tally.ping_ms, lambda: client.request("ping"))
        for _ in range(10):
            await tally.call(tally.features_ms, lambda: client.features([{"data": photo}]))
    return tally


async def load_phase(path: Path, clients: int, rounds: int, ledger: HostileLedger) -> Tally:
    tally = Tally(clients=clients)
    stop = asyncio.Event()

    async def well_behaved(index: int) -> None:
        photo = hostile.good_image(index, (64, 48))
        client = AsyncClient(path, retry_for=0, connect_timeout=60)
        try:
            await client.connect()
        except DaemonUnavailable:
            tally.errors["connect failed"] += 1
            return
        try:
            for _ in range(rounds):
                await tally.call(tally.ping_ms, lambda: client.request("ping"))
                await tally.call(tally.features_ms, lambda: client.features([{"data": photo}]))
                await tally.call(tally.ping_ms, lambda: client.request("ping"))
        finally:
            await client.close()

    attacker = asyncio.create_task(hostile_frames_loop(path, ledger, stop))
    background = [asyncio.create_task(slow_client(path, ledger)) for _ in range(SLOW_CLIENTS)]
    background += [
        asyncio.create_task(vanishing_client(path, n, ledger)) for n in range(VANISHING_CLIENTS)
    ]
    await asyncio.gather(*(well_behaved(n) for n in range(clients)))
    await asyncio.gather(*background)
    stop.set()
    await attacker
    return tally


async def busy_phase(path: Path) -> Tally:
    tally = Tally(clients=BUSY_CLIENTS, retry_busy=False)
    items = [{"data": hostile.good_image(n, (64, 48))} for n in range(BUSY_ITEMS)]

    async def one() -> None:
        async with AsyncClient(path, retry_for=0) as client:
            await tally.call(tally.features_ms, lambda: client.features(items))

    await asyncio.gather(*(one() for _ in range(BUSY_CLIENTS)))
    return tally


WRONG_REQUESTS: list[dict[str, Any]] = [
    {"id": "1", "op": "ping"},
    {"id": -1, "op": "ping"},
    {"id": True, "op": "ping"},
    {"id": 1.5, "op": "ping"},
    {"op": "ping"},
    {"id": 1, "op": 5},
    {"id": 1, "op": b"ping"},
    {"id": 1},
    {"id": 1, "op": "features"},
    {"id": 1, "op": "features", "items": "x"},
    {"id": 1, "op": "features", "items": []},
    {"id": 1, "op": "features", "items": [1]},
    {"id": 1, "op": "features", "items": [{}]},
    {"id": 1, "op": "features", "items": [{"path": 5}]},
    {"id": 1, "op": "features", "items": [{"path": ""}]},
    {"id": 1, "op": "features", "items": [{"path": "a\0b"}]},
    {"id": 1, "op": "features", "items": [{"data": "text"}]},
    {"id": 1, "op": "features", "items": [{"data": b""}]},
    {"id": 1, "op": "features", "items": [{"path": "/a", "data": b"x"}]},
    {"id": 1, "op": "features", "items": [{"path": "/a"}] * (protocol.MAX_ITEMS + 1)},
    {"id": 1, "op": "load", "model": 5},
    {"id": 1, "op": "load", "model": ""},
    {"id": 1, "op": "load", "model": "builtin", "weights": 5},
    {"id": 1, "op": "pull", "model": None},
    {"id": 1, "op": "pull", "model": ["x"]},
]


async def hostile_phase(path: Path, ledger: HostileLedger) -> None:
    async with AsyncClient(path, retry_for=0) as client:

        async def batch(kind: str, inputs: list[tuple[bytes, frozenset[str]]]) -> None:
            reply = await client.features([{"data": data} for data, _ in inputs])
            for item, (_data, allowed) in zip(reply["items"], inputs, strict=True):
                got = "ok" if item["ok"] else item["error"]["code"]
                ledger.record(kind, got in allowed)

        bombs = hostile.decompression_bombs()
        await batch(
            "image: decompression bomb",
            [(data, frozenset(allowed) or frozenset({"ok"})) for data, allowed in bombs.values()],
        )
        await batch(
            "image: format outside the allow-list",
            [
                (make(), frozenset({hostile.unsupported_code(name).value}))
                for name, make in hostile.UNSUPPORTED_CONTAINERS.items()
            ],
        )
        await batch(
            "image: truncated",
            [(data, frozenset({"truncated"})) for data in hostile.truncated_images().values()],
        )
        await batch(
            "image: malformed EXIF",
            [(data, frozenset({"ok"})) for data in hostile.malformed_exif_jpegs().values()],
        )
        await batch("decoder hangs (injected)", [(b"hang", frozenset({"timeout"}))])
        crashed = frozenset({"decoder_crashed"})
        await batch(
            "decoder crashes (injected)",
            [(b"segv", crashed), (b"exit", crashed), (b"raise", crashed)] * 2,
        )
    reader, writer = await raw_connection(path)
    for document in WRONG_REQUESTS:
        writer.write(protocol.pack(document))
        await writer.drain()
        reply = await read_doc(reader)
        ledger.record("request: wrong type in a field", reply["error"]["code"] == "bad_request")
    writer.close()


async def images_per_second(path: Path, count: int = 32) -> float:
    items = [{"data": hostile.good_image(1000 + n, (64, 48))} for n in range(count)]
    async with AsyncClient(path, retry_for=0) as client:
        started = time.perf_counter()
        reply = await client.features(items)
    assert all(item["ok"] for item in reply["items"])
    return count / (time.perf_counter() - started)


# ------------------------------------------------------------------------------ report


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def grouped(ledger: HostileLedger) -> HostileLedger:
    """The frame kinds folded into one row, for a short table."""
    frames = [kind for kind in ledger.kinds if kind.startswith("frame: ")]
    folded = HostileLedger()
    for kind, count in ledger.kinds.items():
        name = f"hostile frames ({len(frames)} kinds)" if kind in frames else kind
        total = folded.kinds.setdefault(name, HostileCount())
        total.tried += count.tried
        total.as_expected += count.as_expected
    return folded


def report(
    phases: list[tuple[str, Tally, int]],
    ledger: HostileLedger,
    crashes: int,
    extra: list[str],
) -> str:
    lines = [
        "| phase | clients | requests served | busy, retried | errors by code "
        "| ping p50 / p99 | features p50 / p99 | peak daemon RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, tally, peak in phases:
        errors = ", ".join(f"{code} {n}" for code, n in sorted(tally.errors.items())) or "none"
        lines.append(
            f"| {name} | {tally.clients} | {tally.served} | "
            f"{tally.busy_retried if tally.retry_busy else '-'} | {errors} | "
            f"{percentiles(tally.ping_ms)} | {percentiles(tally.features_ms)} | {mib(peak)} |"
        )
    lines += ["", "| hostile input | tried | answered as expected | daemon crashes |"]
    lines.append("|---|---|---|---|")
    total = HostileCount()
    for kind, count in sorted(ledger.kinds.items()):
        lines.append(f"| {kind} | {count.tried} | {count.as_expected} | {crashes} |")
        total.tried += count.tried
        total.as_expected += count.as_expected
    lines.append(f"| **all** | **{total.tried}** | **{total.as_expected}** | **{crashes}** |")
    return "\n".join([*lines, "", *extra])


def run(clients: int, rounds: int, group: bool) -> str:
    base = Path(tempfile.mkdtemp(prefix="pdl-"))
    base.chmod(0o700)
    daemon = ScriptedDaemon(base / "rt" / "d.sock", base / "state", CONFIG, "--log-level", "ERROR")
    try:
        say("starting photodupd (built-in model)...")
        daemon.wait_hello(timeout=180)
        daemon.wait_state("ready", timeout=180)
        pid = daemon.proc.pid
        path = daemon.socket_path
        ledger = HostileLedger()
        phases: list[tuple[str, Tally, int]] = []
        with RssSampler(pid) as sampler:

            def phase(name: str, work: Callable[[], Coroutine[Any, Any, Tally]]) -> None:
                say(f"phase: {name}")
                sampler.reset()
                tally = asyncio.run(work())
                phases.append((name, tally, sampler.peak))

            photo = hostile.good_image(7, (64, 48))
            phase("idle, one client", lambda: idle_phase(path, photo))
            before = asyncio.run(images_per_second(path))
            phase(
                f"{clients} clients + {SLOW_CLIENTS} slow + {VANISHING_CLIENTS} vanishing "
                "+ hostile frames",
                lambda: load_phase(path, clients, rounds, ledger),
            )
            phase(
                f"busy burst: {BUSY_CLIENTS} x {BUSY_ITEMS} items into a queue of "
                f"{CONFIG['max_queue']}",
                lambda: busy_phase(path),
            )
            say("phase: hostile images, decoder faults, mistyped requests")
            sampler.reset()
            asyncio.run(hostile_phase(path, ledger))
            hostile_peak, decoders_peak = sampler.peak, sampler.peak_decoders
            after = asyncio.run(images_per_second(path))
            deaths = sampler.deaths
        alive = daemon.proc.poll() is None
        status = daemon.wait_state("ready", timeout=60) if alive else {}
        crashes = deaths + (0 if alive and status.get("pid") == pid else 1)
        decoder = status.get("decoder", {})
        extra = [
            f"Daemon pid {pid} served from start to end: {'yes' if crashes == 0 else 'NO'}; "
            f"peak RSS during the hostile-input phase {mib(hostile_peak)}, decoder processes "
            f"together {mib(decoders_peak)}; decoders replaced {decoder.get('restarts')} "
            f"(timeouts {decoder.get('timeouts')}, crashes {decoder.get('crashes')}).",
            f"Throughput of a 32-photo batch before the attacks {before:.1f} img/s, "
            f"after them {after:.1f} img/s.",
            f"Machine: {os.cpu_count()} cores, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.",
        ]
        return report(phases, grouped(ledger) if group else ledger, crashes, extra)
    finally:
        daemon.terminate()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="ping/features/ping per client")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    parser.add_argument(
        "--grouped", action="store_true", help="one row for all hostile frame kinds"
    )
    args = parser.parse_args()
    started = time.monotonic()
    text = run(args.clients, args.rounds, args.grouped)
    say(f"done in {time.monotonic() - started:.0f} s")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

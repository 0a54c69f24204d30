"""The isolated decoder pool: results, timeouts, crashes, the memory cap, and a clean close."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from pathlib import Path

import psutil
import pytest

from photodupd.decodepool import DecoderPool, DecoderPoolError
from photodupd.imaging import Decoded, ImageError, PreprocessSpec, decode
from photodupd.protocol import ErrorCode, FeatureItem
from tests.daemon import faulty_decoders
from tests.photos import jpeg_bytes, make_photo, write_image, write_jpeg

SCRIPTED = f"{faulty_decoders.__name__}:scripted"
SPEC = PreprocessSpec()
#: Generous: the machine is shared; only the hang test waits for the full timeout.
TIMEOUT = 3.0


def outcome(future: Future[Decoded]) -> Decoded | ErrorCode:
    try:
        return future.result(timeout=60)
    except ImageError as exc:
        return exc.code


def error_of(future: Future[Decoded]) -> ImageError:
    error = future.exception(timeout=60)
    assert isinstance(error, ImageError), error
    return error


def data_item(data: bytes) -> FeatureItem:
    return FeatureItem(data=data)


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return jpeg_bytes(make_photo(30, (640, 480)))


@pytest.fixture
def single() -> Iterator[DecoderPool]:
    """One worker: every failure is followed by a replacement before the next item."""
    pool = DecoderPool(workers=1, timeout=TIMEOUT, memory_mb=1024, decode_fn=SCRIPTED)
    pool.start()
    yield pool
    pool.close()


def test_items_by_path_and_by_data_come_back_like_in_process(tmp_path: Path) -> None:
    paths = [
        write_jpeg(tmp_path / f"{seed}.jpg", make_photo(seed, (400, 300))) for seed in range(6)
    ]
    paths.append(write_image(tmp_path / "six.png", make_photo(6, (300, 400)), "PNG"))
    items = [FeatureItem(path=str(p)) for p in paths] + [data_item(p.read_bytes()) for p in paths]
    with DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024) as pool:
        futures = [pool.submit(item, SPEC) for item in items]
        results = [future.result(timeout=60) for future in futures]
        stats = pool.stats()
    expected = [decode(str(p), spec=SPEC) for p in paths] * 2
    for got, want in zip(results, expected, strict=True):
        assert (got.phash, got.width, got.height, got.format) == (
            want.phash,
            want.width,
            want.height,
            want.format,
        )
        assert got.pixels is not None and got.pixels.shape == (224, 224, 3)
    assert stats["decoded"] == len(items)
    assert stats["crashes"] == stats["timeouts"] == stats["restarts"] == 0


def test_item_errors_cross_the_pipe_and_others_keep_flowing(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo_bytes[: len(photo_bytes) // 2])
    with DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024) as pool:
        futures = {
            "missing": pool.submit(FeatureItem(path=str(tmp_path / "nope.jpg")), SPEC),
            "cut": pool.submit(FeatureItem(path=str(cut)), SPEC),
            "junk": pool.submit(data_item(b"not an image at all"), SPEC),
            "good": pool.submit(data_item(photo_bytes), SPEC),
        }
        assert outcome(futures["missing"]) == ErrorCode.NOT_FOUND
        assert outcome(futures["cut"]) == ErrorCode.TRUNCATED
        assert outcome(futures["junk"]) == ErrorCode.NOT_AN_IMAGE
        assert isinstance(outcome(futures["good"]), Decoded)
        assert pool.stats()["failed"] == 3


def test_a_hanging_decoder_times_out_and_is_replaced(
    single: DecoderPool, photo_bytes: bytes
) -> None:
    [hung_pid] = single.stats()["pids"]
    started = time.monotonic()
    error = error_of(single.submit(data_item(b"hang"), SPEC))
    elapsed = time.monotonic() - started
    assert error.code == ErrorCode.TIMEOUT
    assert TIMEOUT <= elapsed < TIMEOUT + 10
    assert isinstance(outcome(single.submit(data_item(photo_bytes), SPEC)), Decoded)
    stats = single.stats()
    assert (stats["timeouts"], stats["restarts"]) == (1, 1)
    assert stats["pids"] != [hung_pid]
    assert not psutil.pid_exists(hung_pid)


@pytest.mark.parametrize(
    ("command", "detail"),
    [(b"segv", "SIGSEGV"), (b"exit", "status 7"), (b"raise", "KeyError")],
)
def test_a_crashing_decoder_fails_one_item_and_is_replaced(
    single: DecoderPool, photo_bytes: bytes, command: bytes, detail: str
) -> None:
    error = error_of(single.submit(data_item(command), SPEC))
    assert error.code == ErrorCode.DECODER_CRASHED
    assert detail in error.message
    assert isinstance(outcome(single.submit(data_item(photo_bytes), SPEC)), Decoded)


def test_crashes_on_one_worker_do_not_disturb_the_others(photo_bytes: bytes) -> None:
    with DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024, decode_fn=SCRIPTED) as pool:
        commands = [photo_bytes, b"segv", photo_bytes, b"exit", photo_bytes, photo_bytes] * 2
        futures = [pool.submit(data_item(c), None) for c in commands]
        results = [outcome(f) for f in futures]
        for command, result in zip(commands, results, strict=True):
            if command == photo_bytes:
                assert isinstance(result, Decoded)
            else:
                assert result == ErrorCode.DECODER_CRASHED
        assert pool.stats()["crashes"] == 4


def test_memory_cap_turns_a_runaway_decoder_into_an_item_error(
    single: DecoderPool, photo_bytes: bytes
) -> None:
    [pid] = single.stats()["pids"]
    soft, _hard = psutil.Process(pid).rlimit(psutil.RLIMIT_AS)
    assert soft == 1024 * 1024 * 1024
    error = error_of(single.submit(data_item(b"alloc:4096"), SPEC))
    assert error.code == ErrorCode.TOO_LARGE
    assert "1024 MiB" in error.message
    assert isinstance(outcome(single.submit(data_item(photo_bytes), SPEC)), Decoded)


def test_workers_are_fresh_interpreters_without_torch(single: DecoderPool) -> None:
    [pid] = single.stats()["pids"]
    error = error_of(single.submit(data_item(b"pid"), None))
    assert f"pid={pid} " in error.message
    assert "torch=False" in error.message
    child = psutil.Process(pid)
    assert child.cmdline()[1] == "-c"  # exec'd, not a fork of this process
    assert not any("torch" in m.path for m in child.memory_maps())


def test_close_fails_pending_items_and_leaves_no_processes(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    pool = DecoderPool(workers=2, timeout=60.0, memory_mb=1024, decode_fn=SCRIPTED)
    pool.start()
    pids = pool.stats()["pids"]
    assert {c.pid for c in psutil.Process().children()} >= set(pids)
    signals = [tmp_path / "started-0", tmp_path / "started-1"]
    for fifo in signals:
        os.mkfifo(fifo)
    hanging = [pool.submit(data_item(b"hang:" + bytes(fifo)), None) for fifo in signals]
    queued = [pool.submit(data_item(photo_bytes), None) for _ in range(3)]
    for fifo in signals:  # each worker reports that it has started its hang job
        with fifo.open("rb") as started_signal:
            assert started_signal.read(1) == b"!"
    assert pool.stats()["busy"] == 2
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 10  # did not wait for the 60 s timeout
    for future in hanging + queued:
        assert error_of(future).code == ErrorCode.SHUTTING_DOWN
    for pid in pids:
        assert not psutil.pid_exists(pid)
    assert not [c for c in psutil.Process().children(recursive=True) if c.pid in pids]
    with pytest.raises(RuntimeError):
        pool.submit(data_item(photo_bytes), None)
    pool.close()  # idempotent


def test_close_leaves_no_processes_after_restarts(photo_bytes: bytes) -> None:
    pool = DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024, decode_fn=SCRIPTED)
    pool.start()
    seen = set(pool.stats()["pids"])
    for command in (b"segv", b"exit", photo_bytes):
        outcome(pool.submit(data_item(command), None))
        seen.update(pool.stats()["pids"])
    pool.close()
    assert pool.stats()["pids"] == []
    assert not [c for c in psutil.Process().children(recursive=True) if c.pid in seen]


def test_a_bad_decode_function_fails_start() -> None:
    pool = DecoderPool(workers=1, timeout=TIMEOUT, memory_mb=1024, decode_fn=f"{SCRIPTED}_missing")
    with pytest.raises(DecoderPoolError, match="scripted_missing"):
        pool.start()
    assert pool.stats()["pids"] == []


def test_a_memory_cap_below_the_decoder_footprint_fails_start() -> None:
    with pytest.raises(DecoderPoolError, match="memory_mb"):
        DecoderPool(workers=1, timeout=TIMEOUT, memory_mb=64).start()


async def test_submit_from_an_event_loop_never_blocks(photo_bytes: bytes) -> None:
    pool = DecoderPool(workers=1, timeout=TIMEOUT, memory_mb=1024, decode_fn=SCRIPTED)
    pool.start()
    try:
        hang = asyncio.wrap_future(pool.submit(data_item(b"hang"), None))
        started = time.monotonic()
        queued = [asyncio.wrap_future(pool.submit(data_item(photo_bytes), SPEC)) for _ in range(5)]
        assert time.monotonic() - started < 0.5  # enqueued behind a hung worker, at once
        with pytest.raises(ImageError) as info:
            await hang
        assert info.value.code == ErrorCode.TIMEOUT
        results = await asyncio.gather(*queued)
        assert all(isinstance(r, Decoded) for r in results)
    finally:
        pool.close()


def test_many_items_all_come_back(photo_bytes: bytes) -> None:
    with DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024) as pool:
        futures = [pool.submit(data_item(photo_bytes), SPEC) for _ in range(60)]
        done, not_done = wait_futures(futures, timeout=120)
        assert not not_done
        assert {f.result().phash for f in done} == {decode(photo_bytes, is_data=True).phash}


ORPHAN_SCRIPT = """
import sys, threading
from photodupd.decodepool import DecoderPool
from photodupd.protocol import FeatureItem
pool = DecoderPool(workers=2, timeout=600.0, memory_mb=1024, decode_fn=sys.argv[1])
pool.start()
for fifo in sys.argv[2:]:
    pool.submit(FeatureItem(data=b"hang:" + fifo.encode()), None)
for fifo in sys.argv[2:]:
    open(fifo, "rb").read(1)
print(" ".join(str(pid) for pid in pool.stats()["pids"]), flush=True)
threading.Event().wait()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_busy_workers_die_with_a_killed_daemon(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL cannot clean up; its hung decoders must not linger."""
    fifos = [tmp_path / "busy-0", tmp_path / "busy-1"]
    for fifo in fifos:
        os.mkfifo(fifo)
    daemon = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, SCRIPTED, *map(str, fifos)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    try:
        assert daemon.stdout is not None
        pids = [int(pid) for pid in daemon.stdout.readline().split()]
        assert len(pids) == 2
        workers = [psutil.Process(pid) for pid in pids]
    finally:
        daemon.kill()
        daemon.wait()
    _gone, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive


# ---------------------------------------------------------------- lazy start, idle release


def decoder_children(pids: set[int] | None = None) -> list[psutil.Process]:
    """This process's live decoder children (re-read from the OS, not the pool's word)."""
    live = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and child.cmdline()[1:2] == ["-c"]:
                live.append(child)
        except psutil.Error:
            continue
    return [c for c in live if pids is None or c.pid in pids]


def test_workers_start_on_first_use_and_stop_on_release(photo_bytes: bytes) -> None:
    pool = DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024, decode_fn=SCRIPTED)
    try:
        assert decoder_children() == [] and pool.stats()["pids"] == []
        assert isinstance(outcome(pool.submit(data_item(photo_bytes), SPEC)), Decoded)
        first = set(pool.stats()["pids"])
        assert len(first) == 2 and {c.pid for c in decoder_children()} == first
        assert pool.release()
        assert decoder_children(first) == []
        assert pool.stats()["pids"] == [] and not pool.stats()["running"]
        assert not pool.release()  # nothing running: nothing to stop
        # The next item starts a new generation of workers.
        assert isinstance(outcome(pool.submit(data_item(photo_bytes), SPEC)), Decoded)
        second = set(pool.stats()["pids"])
        assert len(second) == 2 and not second & first
        stats = pool.stats()
        assert (stats["starts"], stats["releases"], stats["restarts"]) == (2, 1, 0)
    finally:
        pool.close()
    assert decoder_children() == []


def test_release_leaves_busy_workers_alone(tmp_path: Path, photo_bytes: bytes) -> None:
    pool = DecoderPool(workers=1, timeout=60.0, memory_mb=1024, decode_fn=SCRIPTED)
    try:
        fifo = tmp_path / "started"
        os.mkfifo(fifo)
        hanging = pool.submit(data_item(b"hang:" + bytes(fifo)), None)
        queued = pool.submit(data_item(photo_bytes), SPEC)
        with fifo.open("rb") as started:
            assert started.read(1) == b"!"
        pids = pool.stats()["pids"]
        assert not pool.release()
        assert pool.stats()["pids"] == pids and not queued.done()
    finally:
        pool.close()
    assert error_of(hanging).code == ErrorCode.SHUTTING_DOWN


def test_items_racing_releases_are_all_decoded(photo_bytes: bytes) -> None:
    """A submit that lands while the workers are being released starts new ones: no item
    waits forever in a queue whose threads have left."""
    pool = DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024, decode_fn=SCRIPTED)
    futures: list[Future[Decoded]] = []
    try:
        for _ in range(6):
            futures += [pool.submit(data_item(photo_bytes), SPEC) for _ in range(3)]
            wait_futures(futures, timeout=60)
            releasing = threading.Thread(target=pool.release)
            releasing.start()
            futures.append(pool.submit(data_item(photo_bytes), SPEC))  # during the release
            releasing.join()
        assert all(isinstance(outcome(f), Decoded) for f in futures)
    finally:
        pool.close()
    assert decoder_children() == []


def test_start_is_eager_and_submit_after_close_is_refused(photo_bytes: bytes) -> None:
    pool = DecoderPool(workers=2, timeout=TIMEOUT, memory_mb=1024, decode_fn=SCRIPTED)
    pool.start()
    assert len({c.pid for c in decoder_children(set(pool.stats()["pids"]))}) == 2
    with pytest.raises(RuntimeError, match="already started"):
        pool.start()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(data_item(photo_bytes), SPEC)

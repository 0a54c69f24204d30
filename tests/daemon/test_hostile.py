"""Hostile clients and hostile images against the real photodupd (issue 6, rules 15-21).

Everything here talks to a real daemon process over its socket: the production
``photodupd`` entry point, the built-in model, the real decoder pool.  The one
change is the pool's decode function (its documented ``decode_fn`` injection
point), which runs the real decoder except for a few scripted items that hang
or crash the worker on command (``tests/fuzz/scripted_daemon.py``).

What the neighbouring files already prove is not repeated: the stub-service
server tests (test_server.py), the unit fuzz of ``unpack`` (test_protocol.py),
the pool-level fault injection (test_decodepool.py), the decoder in-process
(test_imaging.py) and the stale-socket race (test_races.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from photodupd import protocol
from photodupd.client import AsyncClient, SyncClient
from photodupd.protocol import ErrorCode
from tests.daemon.daemon_proc import DaemonProcess
from tests.fuzz import hostile_inputs as hostile
from tests.fuzz.rawclient import RawConnection, split_frames
from tests.fuzz.scripted_daemon import ScriptedDaemon

pytestmark = pytest.mark.timeout(300)

DECODE_TIMEOUT = 4.0  # a hung decoder costs this much; short so the tests stay quick
FRAME_TIMEOUT = 3.0
MAX_QUEUE = 16
WORKERS = 2
CONFIG = {
    "threads": 2,
    "decode_workers": WORKERS,
    "decode_timeout": DECODE_TIMEOUT,
    "frame_timeout": FRAME_TIMEOUT,
    "max_queue": MAX_QUEUE,
    "idle_timeout": 120.0,
    "idle_unload": 0.0,
}


def short_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pdh-"))
    path.chmod(0o700)
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedDaemon]:
    folder = short_dir()
    proc = ScriptedDaemon(folder / "rt" / "d.sock", tmp_path_factory.mktemp("hostile"), CONFIG)
    try:
        proc.wait_hello(timeout=120)
        proc.wait_state("ready", timeout=120)
        yield proc
    finally:
        proc.terminate()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def alive(daemon: ScriptedDaemon) -> Iterator[ScriptedDaemon]:
    """The shared daemon, checked after each test: same process, still answering."""
    pid = daemon.proc.pid
    yield daemon
    assert daemon.proc.poll() is None, f"photodupd died: {daemon.output()[-3000:]}"
    with SyncClient(daemon.socket_path, timeout=30) as client:
        client.connect()
        assert client.request("status")["pid"] == pid


def status(daemon: DaemonProcess) -> dict[str, Any]:
    with SyncClient(daemon.socket_path, timeout=60) as client:
        client.connect()
        return dict(client.request("status"))


def greeted(daemon: DaemonProcess, timeout: float = 30.0) -> RawConnection:
    conn = RawConnection(daemon.socket_path, timeout)
    conn.hello()
    return conn


def features(daemon: DaemonProcess, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with SyncClient(daemon.socket_path, timeout=120) as client:
        client.connect()
        return list(client.request("features", items=items)["items"])


def outcome(item: dict[str, Any]) -> str:
    return "ok" if item["ok"] else str(item["error"]["code"])


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 60.0,
    what: str = "condition",
    daemon: DaemonProcess | None = None,
) -> None:
    """Poll a real signal from the daemon (its status), never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = status(daemon) if daemon is not None else ""
            raise AssertionError(f"timed out waiting for {what} {detail}")
        time.sleep(0.02)


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's high-water mark of ``pid`` (Linux clear_refs 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


GOOD = hostile.good_image()


# ====================================================================== frames (rule 18)


@pytest.mark.parametrize("greeted_first", [True, False], ids=["after-hello", "before-hello"])
@pytest.mark.parametrize("kind", sorted(hostile.HOSTILE_FRAMES))
def test_hostile_frame_gets_an_error_then_a_close_while_others_are_served(
    alive: ScriptedDaemon, kind: str, greeted_first: bool
) -> None:
    attack = hostile.HOSTILE_FRAMES[kind]
    with greeted(alive) as bystander:
        attacker = RawConnection(alive.socket_path)
        if greeted_first:
            attacker.hello()
        attacker.send(attack.payload)
        reply = attacker.read_doc()
        assert reply == {
            "id": None,
            "ok": False,
            "error": {
                "code": attack.code.value,
                "message": reply["error"]["message"],
                "retryable": False,
            },
        }
        assert attacker.closed_by_peer()
        attacker.close()
        assert bystander.ping()


def test_memory_stays_bounded_under_repeated_hostile_frames(alive: ScriptedDaemon) -> None:
    pid = alive.proc.pid

    def one_round() -> int:
        for attack in hostile.HOSTILE_FRAMES.values():
            with greeted(alive) as attacker:
                attacker.send(attack.payload)
                assert attacker.read_doc()["error"]["code"] == attack.code
                assert attacker.closed_by_peer()
        return len(hostile.HOSTILE_FRAMES)

    one_round()  # warm-up: allocator arenas and buffers reach their working size
    baseline = status(alive)
    before, bad_before = rss(pid), baseline["bad_frames"]
    sent = sum(one_round() for _ in range(8))
    after = status(alive)
    growth = rss(pid) - before
    assert after["bad_frames"] - bad_before == sent
    assert growth < 32 * 2**20, f"daemon RSS grew {growth / 2**20:.1f} MiB over {sent} frames"
    wait_until(
        lambda: status(alive)["connections"] == baseline["connections"],
        what="the attackers' connections to close",
    )


@pytest.mark.skipif(not reset_peak_rss(os.getpid()), reason="needs Linux clear_refs")
def test_a_frame_of_empty_containers_is_refused_with_bounded_memory(
    alive: ScriptedDaemon,
) -> None:
    """BUG (protocol.unpack): 4 MB of one-byte empty arrays, every limit respected, becomes
    ~70x its size in Python objects; a full 64 MiB frame would cost ~4.6 GB."""
    pid = alive.proc.pid
    baseline = rss(pid)
    assert reset_peak_rss(pid)
    with greeted(alive) as attacker:
        attacker.send(hostile.amplifying_frame(4))
        reply = attacker.read_doc()
    growth = peak_rss(pid) - baseline
    verdict = f"one 4 MB frame: peak RSS +{growth >> 20} MiB, reply {reply}"
    assert growth < 64 * 2**20, verdict
    assert reply["ok"] is False and reply["error"]["code"] == ErrorCode.BAD_FRAME, verdict


def test_a_frame_of_empty_containers_does_not_stall_other_clients(alive: ScriptedDaemon) -> None:
    """BUG (server.py unpacks on the event loop): while 8 MB of empty arrays are turned into
    Python objects, no other client is answered; a 64 MiB frame stalls everyone ~40 s."""
    frame = hostile.amplifying_frame(8)
    with greeted(alive) as bystander, greeted(alive) as attacker:
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def attack() -> None:
            try:
                outcome["sent"] = attacker.send(frame)
                outcome["reply"] = attacker.read_doc()
            except Exception as exc:  # checked below: a dead attack would measure nothing
                outcome["error"] = exc
            finally:
                done.set()

        thread = threading.Thread(target=attack)
        thread.start()
        worst, pings = 0.0, 0
        while True:
            during = not done.is_set()  # sent before the attacker had its answer
            started = time.monotonic()
            assert bystander.ping()
            if during:
                worst, pings = max(worst, time.monotonic() - started), pings + 1
            if done.is_set():
                break
        thread.join()
    assert "error" not in outcome, f"the attack itself failed: {outcome['error']!r}"
    assert outcome["sent"] is True
    assert outcome["reply"]["error"]["code"] == ErrorCode.BAD_FRAME, outcome["reply"]
    assert pings >= 1, "no ping went out while the frame was with the daemon: nothing measured"
    assert worst < 1.5, f"a bystander's ping waited {worst:.1f} s behind one frame"


# ------------------------------------------------------------- wrong types in every field

MISSING = object()  # the field is left out altogether

_not_int = st.one_of(
    st.text(max_size=6),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=6),
    st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
    st.integers(-(2**63), -1),
    st.integers(2**63, 2**64 - 1),
    st.just(MISSING),
)
_not_str = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=6),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    st.just(MISSING),
)
_not_str_or_empty = st.one_of(_not_str, st.just(""))
_not_list = st.one_of(
    st.text(max_size=6),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=6),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
    st.just([]),
    st.just(MISSING),
)
_valid_item = st.sampled_from([{"path": "/nowhere/a.jpg"}, {"path": b"/nowhere/\xff.jpg"}])
_int64 = st.integers(-(2**63), 2**64 - 1)  # everything msgpack can carry
_wrong_path = st.one_of(
    _int64,
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), _int64, max_size=1),
)
_wrong_data = st.one_of(
    st.text(max_size=6),
    _int64,
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(st.text(max_size=3), _int64, max_size=1),
    # Not b"": empty data is of the right type, and fails its item only (not_an_image, as an
    # empty file would: tests/unit/test_protocol.py), never the request.
)
_wrong_item = st.one_of(
    _not_list.filter(lambda v: v is not MISSING and not isinstance(v, dict)),
    st.builds(lambda v: {"path": v}, _wrong_path),
    st.builds(lambda v: {"data": v}, _wrong_data),
    st.just({"path": "/a.jpg", "data": b"\xff\xd8"}),  # both
    st.just({}),  # neither
    st.just({"path": None, "data": None}),
    st.just({"name": "/a.jpg"}),
)


@st.composite
def _wrong_items(draw: st.DrawFn) -> Any:
    shape = draw(st.sampled_from(["not a list", "one bad item", "too many"]))
    if shape == "not a list":
        return draw(_not_list)
    if shape == "too many":
        return [{"path": f"/nowhere/{i}.jpg"} for i in range(protocol.MAX_ITEMS + 1)]
    items = draw(st.lists(_valid_item, max_size=4))
    items.insert(draw(st.integers(0, len(items))), draw(_wrong_item))
    return items


def _document(request_id: Any, op: Any, **fields: Any) -> dict[str, Any]:
    doc = {"id": request_id, "op": op, **fields}
    return {key: value for key, value in doc.items() if value is not MISSING}


#: Ops with fields; shutdown is never sent (it is valid with any fields and would stop us).
_SAFE_OPS = ["ping", "status", "models", "features", "load", "pull", "hello"]


@st.composite
def wrong_requests(draw: st.DrawFn) -> tuple[dict[str, Any], int | None]:
    """A request with exactly one field of the wrong type, and the id its reply must carry."""
    request_id = draw(st.integers(0, 2**63 - 1))
    where = draw(st.sampled_from(["id", "op", "items", "load.model", "load.weights", "pull"]))
    if where == "id":
        return _document(draw(_not_int), draw(st.sampled_from(_SAFE_OPS))), None
    if where == "op":
        return _document(request_id, draw(_not_str)), None
    if where == "items":
        return _document(request_id, "features", items=draw(_wrong_items())), request_id
    if where == "load.model":
        return _document(request_id, "load", model=draw(_not_str_or_empty)), request_id
    if where == "load.weights":
        weights = draw(_not_str.filter(lambda v: v is not None and v is not MISSING))
        return _document(request_id, "load", model="builtin", weights=weights), request_id
    return _document(request_id, "pull", model=draw(_not_str_or_empty)), request_id


class Session:
    """One greeted connection reused across examples: an error must leave it usable."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.conn: RawConnection | None = None

    def get(self) -> RawConnection:
        if self.conn is None:
            self.conn = greeted(self.daemon)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@pytest.fixture(scope="module")
def session(daemon: ScriptedDaemon) -> Iterator[Session]:
    shared = Session(daemon)
    yield shared
    shared.close()


def check_wrong_request(session: Session, document: dict[str, Any], reply_id: int | None) -> None:
    conn = session.get()
    conn.send(protocol.pack(document))
    reply = conn.read_doc()
    assert reply["id"] == reply_id, (document, reply)
    assert reply["ok"] is False and reply["error"]["code"] == ErrorCode.BAD_REQUEST, (
        document,
        reply,
    )
    assert reply["error"]["retryable"] is False
    assert conn.ping(), "a wrong field must not cost the connection"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=wrong_requests())
def test_wrong_types_in_every_field_are_bad_requests(
    alive: ScriptedDaemon, session: Session, case: tuple[dict[str, Any], int | None]
) -> None:
    check_wrong_request(session, *case)


@pytest.mark.slow
@settings(
    max_examples=4000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=wrong_requests())
def test_wrong_types_in_every_field_long_run(
    alive: ScriptedDaemon, session: Session, case: tuple[dict[str, Any], int | None]
) -> None:
    check_wrong_request(session, *case)


WRONG_VERSIONS = {
    "2": 2,
    "0": 0,
    "-1": -1,
    "str": "1",
    "bin": b"\x01",
    "float 1.0": 1.0,
    "bool True": True,
    "nil": None,
    "array": [1],
    "map": {"v": 1},
    "missing": MISSING,
}


@pytest.mark.parametrize("version", WRONG_VERSIONS.values(), ids=WRONG_VERSIONS.keys())
def test_hello_with_a_wrong_protocol_field_is_refused_and_closed(
    alive: ScriptedDaemon, version: Any
) -> None:
    with RawConnection(alive.socket_path) as conn:
        conn.send(protocol.pack(_document(1, "hello", protocol=version, client="x")))
        reply = conn.read_doc()
        assert reply["ok"] is False, f"protocol={version!r} was accepted as version 1"
        assert reply["error"]["code"] == ErrorCode.UNSUPPORTED_PROTOCOL
        assert conn.closed_by_peer()


# ---------------------------------------------------------- random documents and streams

_SCRIPTED_COMMANDS = (b"hang", b"segv", b"exit", b"raise", b"pid", b"alloc:")
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20).filter(lambda b: not b.startswith(_SCRIPTED_COMMANDS)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.one_of(
    st.sampled_from(["id", "op", "items", "path", "data", "model", "weights", "protocol"]),
    st.text(max_size=8),
)


@st.composite
def random_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(st.dictionaries(_keys, _values, max_size=6))
    if draw(st.booleans()):
        document["id"] = draw(st.integers(0, 2**63 - 1))
    if draw(st.booleans()):
        document["op"] = draw(st.sampled_from(["ping", "status", "models", "features", "hello"]))
    if document.get("op") == "features" and draw(st.booleans()):
        document["items"] = draw(
            st.lists(st.dictionaries(st.sampled_from(["path", "data"]), _values), max_size=4)
        )
    # Never a request that would act: stop the daemon, switch models, download.
    assume(document.get("op") not in ("shutdown", "load", "pull"))
    return document


def check_random_document(session: Session, document: dict[str, Any]) -> None:
    conn = session.get()
    conn.send(protocol.pack(document))
    reply = conn.read_doc()
    request_id = document.get("id")
    valid_id = isinstance(request_id, int) and not isinstance(request_id, bool)
    assert reply["id"] in ((request_id, None) if valid_id else (None,))
    assert isinstance(reply["ok"], bool)
    if reply["ok"]:
        assert "result" in reply
    else:
        assert reply["error"]["code"] in {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_OP}, reply
    assert conn.ping()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=random_documents())
def test_random_request_documents_get_one_well_formed_reply(
    alive: ScriptedDaemon, session: Session, document: dict[str, Any]
) -> None:
    check_random_document(session, document)


def _seed_streams() -> list[bytes]:
    hello = protocol.pack(protocol.request(0, "hello", **protocol.hello("fuzz")))
    requests = [
        protocol.pack(protocol.request(1, "ping")),
        protocol.pack(protocol.request(2, "status")),
        protocol.pack(protocol.request(3, "features", items=[{"path": "/nowhere/x.jpg"}])),
        protocol.pack(protocol.request(4, "features", items=[{"data": b"\xff\xd8\xff\xe0"}])),
    ]
    return [hello + r for r in requests] + [hello + b"".join(requests)]


SEED_STREAMS = _seed_streams()


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_STREAMS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "length"]))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xC1, 0xDF, 0xDD]))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif kind == "cut":
            del data[position:]
        else:  # rewrite the first length prefix after hello
            offset = len(SEED_STREAMS[0]) - len(protocol.pack(protocol.request(1, "ping")))
            if len(data) >= offset + 4:
                data[offset : offset + 4] = hostile.U32.pack(draw(st.integers(0, 2**32 - 1)))
    stream = bytes(data)
    assume(not any(word in stream for word in (b"shutdown", b"load", b"pull")))
    return stream


def check_stream(daemon: DaemonProcess, stream: bytes) -> None:
    """Send ``stream`` then end our side: every byte the daemon writes back must be whole,
    well-formed frames, the connection must end, and the daemon must still answer."""
    with RawConnection(daemon.socket_path, timeout=60) as conn:
        conn.send(stream)
        with contextlib.suppress(OSError):  # the daemon may have closed already
            conn.sock.shutdown(socket.SHUT_WR)
        for document in split_frames(conn.read_until_closed()):
            assert isinstance(document.get("ok"), bool) or document.get("op") == "progress"
    with RawConnection(daemon.socket_path) as probe:
        probe.hello()
        assert probe.ping()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=mutated_streams())
def test_fuzzed_byte_streams_never_kill_or_hang_the_daemon(
    alive: ScriptedDaemon, stream: bytes
) -> None:
    check_stream(alive, stream)


@pytest.mark.slow
@settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=mutated_streams())
def test_fuzzed_byte_streams_long_run(alive: ScriptedDaemon, stream: bytes) -> None:
    check_stream(alive, stream)


# ====================================================================== images (rules 21-22)


def test_decompression_bombs_are_cheap_per_item_errors(alive: ScriptedDaemon) -> None:
    bombs = hostile.decompression_bombs()
    before = status(alive)["decoder"]
    items = features(
        alive, [{"data": GOOD}] + [{"data": data} for data, _ in bombs.values()] + [{"data": GOOD}]
    )
    assert outcome(items[0]) == outcome(items[-1]) == "ok"
    for (name, (_data, allowed)), item in zip(bombs.items(), items[1:-1], strict=True):
        if not allowed:
            assert item["ok"], (name, item)
            continue
        assert outcome(item) in allowed, (name, item)
        if name.endswith("MAX_IMAGE_PIXELS"):
            assert "pixels" in item["error"]["message"], (name, item)  # refused by the limit
    after = status(alive)["decoder"]
    # No bomb got as far as the memory cap or the timeout: no worker had to be replaced.
    assert (after["timeouts"], after["crashes"], after["restarts"]) == (
        before["timeouts"],
        before["crashes"],
        before["restarts"],
    )


def test_formats_outside_the_allow_list_are_per_item_errors(alive: ScriptedDaemon) -> None:
    names = sorted(hostile.UNSUPPORTED_CONTAINERS)
    items = features(
        alive,
        [{"data": hostile.UNSUPPORTED_CONTAINERS[name]()} for name in names] + [{"data": GOOD}],
    )
    assert outcome(items[-1]) == "ok"
    assert {name: outcome(item) for name, item in zip(names, items, strict=False)} == {
        name: hostile.unsupported_code(name).value for name in names
    }


def test_truncated_files_and_malformed_exif_end_to_end(
    alive: ScriptedDaemon, tmp_path: Path
) -> None:
    cut = hostile.truncated_images()
    paths = []
    for fmt, data in cut.items():  # by path, as a scan sends them
        path = tmp_path / f"cut.{fmt.lower()}"
        path.write_bytes(data)
        paths.append(path)
    exif = hostile.malformed_exif_jpegs()
    items = features(
        alive, [{"path": str(p)} for p in paths] + [{"data": data} for data in exif.values()]
    )
    assert [outcome(i) for i in items[: len(cut)]] == [ErrorCode.TRUNCATED.value] * len(cut)
    for name, item in zip(exif, items[len(cut) :], strict=True):
        assert item["ok"], (name, item)
        assert (item["width"], item["height"]) == (160, 120) and item["taken"] is None


def timed_good_batch(daemon: DaemonProcess, count: int = 8) -> float:
    started = time.monotonic()
    items = features(daemon, [{"data": hostile.good_image(seed)} for seed in range(count)])
    assert all(item["ok"] for item in items)
    return time.monotonic() - started


def test_hanging_and_crashing_decoders_are_replaced_and_throughput_recovers(
    alive: ScriptedDaemon,
) -> None:
    timed_good_batch(alive)  # warm
    baseline = timed_good_batch(alive)
    before = status(alive)["decoder"]
    commands = [b"hang", b"segv", b"exit", b"raise"]
    sent: list[dict[str, Any]] = []
    for command in commands:
        sent += [{"data": GOOD}, {"data": command}]
    sent.append({"data": GOOD})
    items = features(alive, sent)
    assert [outcome(i) for i in items] == [
        "ok",
        ErrorCode.TIMEOUT,
        "ok",
        ErrorCode.DECODER_CRASHED,
        "ok",
        ErrorCode.DECODER_CRASHED,
        "ok",
        ErrorCode.DECODER_CRASHED,  # an exception in the decoder: the worker itself survives
        "ok",
    ]
    # The failed item is answered first, its replacement worker starts just after.
    wait_until(
        lambda: status(alive)["decoder"]["restarts"] - before["restarts"] == 3,  # hang, segv, exit
        what="three replacement decoders",
    )
    after = status(alive)["decoder"]
    assert after["timeouts"] - before["timeouts"] == 1
    assert after["crashes"] - before["crashes"] == 2
    # The pool is back at full strength with new processes; the old ones are gone.
    assert len(after["pids"]) == WORKERS and after["busy"] == 0
    for pid in set(before["pids"]) - set(after["pids"]):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    again = timed_good_batch(alive)
    assert again < 3 * baseline + 2.0, f"good items took {again:.1f} s, {baseline:.1f} s before"


def test_a_storm_of_crashes_leaves_a_full_pool(alive: ScriptedDaemon) -> None:
    storm = [{"data": command} for command in [b"segv", b"exit"] * 6]
    before = status(alive)["decoder"]["restarts"]
    items = features(alive, storm + [{"data": GOOD}] * 2)
    assert [outcome(i) for i in items[:-2]] == [ErrorCode.DECODER_CRASHED.value] * len(storm)
    assert all(i["ok"] for i in items[-2:])
    wait_until(
        lambda: status(alive)["decoder"]["restarts"] - before == len(storm),
        what="a replacement for every crashed decoder",
    )
    decoder = status(alive)["decoder"]
    assert len(decoder["pids"]) == WORKERS
    assert all(psutil.Process(pid).is_running() for pid in decoder["pids"])


# ====================================================================== load and faults


def test_a_full_queue_answers_busy_over_the_wire(alive: ScriptedDaemon) -> None:
    # Two hung items occupy both decoders for DECODE_TIMEOUT; the rest wait behind them.
    fill = [{"data": b"hang"}] * WORKERS + [{"data": GOOD}] * (MAX_QUEUE - WORKERS)
    with greeted(alive, timeout=120) as holder, greeted(alive) as late:
        request_id = holder.next_id()
        holder.send_doc(protocol.request(request_id, "features", items=fill))
        wait_until(lambda: status(alive)["in_flight_items"] == MAX_QUEUE, what="a full queue")
        refused = late.request("features", items=[{"data": GOOD}])
        assert refused["ok"] is False
        assert refused["error"]["code"] == ErrorCode.BUSY and refused["error"]["retryable"]
        assert late.ping(), "busy is per request: the connection stays"
        reply = holder.read_doc()
        assert reply["id"] == request_id
        codes = [outcome(i) for i in reply["result"]["items"]]
        assert codes == [ErrorCode.TIMEOUT] * WORKERS + ["ok"] * (MAX_QUEUE - WORKERS)
        retried = late.request("features", items=[{"data": GOOD}])
        assert retried["ok"] and retried["result"]["items"][0]["ok"]


@pytest.mark.parametrize("when", ["before the reply", "mid reply"])
def test_a_client_vanishing_costs_nothing(alive: ScriptedDaemon, when: str) -> None:
    baseline = status(alive)
    items = [{"data": hostile.good_image(seed, (96, 72))} for seed in range(MAX_QUEUE - 1)]
    if when == "before the reply":
        items = [{"data": b"hang"}, *items[:4]]  # holds the request for DECODE_TIMEOUT
    with greeted(alive, timeout=120) as leaver:
        leaver.send_doc(protocol.request(leaver.next_id(), "features", items=items))
        if when == "mid reply":
            # The reply (15 x 5 kB) is far bigger than what this read takes.
            header = leaver.recv_exactly(protocol.HEADER.size)
            assert protocol.frame_length(header) > 64 * 1024
            leaver.recv_exactly(1024)
        else:
            wait_until(lambda: status(alive)["in_flight_items"] > 0, what="work in flight")
        leaver.reset()
    # Every admitted item still finishes and gives its queue slot back; the connection goes.
    wait_until(
        lambda: (
            (s := status(alive))["in_flight_items"] == 0
            and s["connections"] == baseline["connections"]
        ),
        what="the vanished client's work and connection to be released",
    )
    after = features(alive, [{"data": GOOD}])
    assert after[0]["ok"]


def flood_until_blocked(conn: RawConnection, cap: int = 512 * 2**20) -> int:
    """Pipeline pings on ``conn`` and read nothing, until the daemon stops reading (our
    write times out); returns the bytes it took in.  Fails if ``cap`` bytes go through."""
    burst = protocol.pack(protocol.request(1, "ping")) * 20_000  # ~340 kB
    conn.sock.settimeout(3.0)
    sent = 0
    while sent < cap:
        try:
            conn.sock.sendall(burst)
        except TimeoutError:
            return sent
        sent += len(burst)
    raise AssertionError(f"the daemon took {sent >> 20} MiB without ever pushing back")


def test_a_client_that_stops_reading_does_not_block_others(alive: ScriptedDaemon) -> None:
    baseline = status(alive)
    with greeted(alive) as stuck:
        # The daemon pushes back on this connection (how much it takes in first is the
        # next test's business) while everyone else goes on being served.
        flood_until_blocked(stuck)
        with greeted(alive) as other:
            assert other.ping()
            reply = other.request("features", items=[{"data": GOOD}])
            assert reply["ok"] and reply["result"]["items"][0]["ok"]
    wait_until(
        lambda: status(alive)["connections"] == baseline["connections"],
        what="the stuck connection to be dropped",
    )


def test_a_client_that_stops_reading_is_not_buffered_without_bound(alive: ScriptedDaemon) -> None:
    """BUG (server.py, start_unix_server(limit=MAX_FRAME)): asyncio reads ahead until its
    buffer holds 2 x limit, so each such client parks 128 MiB of unread requests in the
    daemon; 256 connections could park 32 GiB."""
    pid = alive.proc.pid
    baseline = status(alive)
    before = rss(pid)
    with greeted(alive) as first, greeted(alive) as second:
        taken = flood_until_blocked(first) + flood_until_blocked(second)
        growth = rss(pid) - before
    wait_until(
        lambda: status(alive)["connections"] == baseline["connections"],
        what="the flooding connections to be dropped",
    )
    verdict = f"two clients parked {taken >> 20} MiB in the daemon, RSS +{growth >> 20} MiB"
    assert taken < 16 * 2**20, verdict
    assert growth < 32 * 2**20, verdict


def test_two_hundred_clients_at_once(alive: ScriptedDaemon) -> None:
    before = status(alive)

    async def one(index: int) -> bool:
        async with AsyncClient(alive.socket_path, retry_for=60) as client:
            if index % 20 == 0:  # a few real embeddings among the pings
                reply = await client.features([{"data": hostile.good_image(index, (64, 48))}])
                return bool(reply["items"][0]["ok"])
            return bool((await client.request("ping"))["pong"])

    async def crowd() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    assert asyncio.run(crowd()) == [True] * 200
    after = status(alive)
    assert after["connections_total"] - before["connections_total"] >= 200
    assert after["rejected_busy"] == before["rejected_busy"]


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(
    os.getuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_another_uid_is_refused_even_when_the_socket_is_opened_up(alive: ScriptedDaemon) -> None:
    """Rule 15 keeps other users out by mode; rule 16 holds even if someone loosens the modes."""
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n print('EACCES');sys.exit()\n"
        "try:\n s.sendall(bytes.fromhex(sys.argv[2]))\nexcept OSError: pass\n"
        "try:\n data=s.recv(100)\nexcept ConnectionResetError: data=b''\n"
        "print('closed' if data==b'' else repr(data))\n"
    )
    hello = protocol.pack(protocol.request(0, "hello", **protocol.hello("intruder"))).hex()
    path = alive.socket_path

    def as_nobody() -> str:
        run = subprocess.run(
            [*NOBODY, sys.executable, "-c", probe, str(path), hello],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return run.stdout.strip()

    assert as_nobody() == "EACCES"
    before = status(alive)
    opened = [path.parent.parent, path.parent, path]
    modes = [stat.S_IMODE(os.lstat(p).st_mode) for p in opened]
    try:
        for p in opened:
            os.chmod(p, 0o777)
        assert as_nobody() == "closed"
    finally:
        for p, mode in zip(opened, modes, strict=True):
            os.chmod(p, mode)
    after = status(alive)
    assert after["rejected_peers"] - before["rejected_peers"] == 1
    assert after["requests"] - before["requests"] == 2  # the hello and status of `after`


# ---------------------------------------------------------------- daemons of their own


def test_kill_9_mid_request_then_restart_finishes_the_work(tmp_path: Path) -> None:
    folder = short_dir()
    sock = folder / "rt" / "d.sock"
    first = ScriptedDaemon(sock, tmp_path / "first", CONFIG)
    started = tmp_path / "decoding"
    os.mkfifo(started)
    restarted: DaemonProcess | None = None
    try:
        first.wait_hello(timeout=120)
        first.wait_state("ready", timeout=120)
        workers = status(first)["decoder"]["pids"]
        # The first item tells us (through the FIFO) that the request is being worked on.
        items = [{"data": b"hang:" + os.fsencode(started)}] + [{"data": GOOD}] * 6

        async def scenario() -> tuple[dict[str, Any], int]:
            nonlocal restarted
            client = AsyncClient(sock, retry_for=180)
            await client.connect()
            pending = asyncio.create_task(client.features(items))
            signal_read = await asyncio.to_thread(started.read_bytes)
            assert signal_read == b"!"
            first.kill()  # SIGKILL with the request in flight
            # The production daemon takes over the stale socket; its real decoder sees
            # b"hang:..." as what it is, not an image.
            restarted = DaemonProcess(sock, tmp_path / "second", "--model", "builtin")
            try:
                return await pending, client.reconnects
            finally:
                await client.close()

        reply, reconnects = asyncio.run(scenario())
        assert reconnects >= 1
        assert [outcome(i) for i in reply["items"]] == [ErrorCode.NOT_AN_IMAGE] + ["ok"] * 6
        assert restarted is not None and restarted.proc.poll() is None
        # The killed daemon's decoders died with it (PR_SET_PDEATHSIG), none linger.
        _gone, lingering = psutil.wait_procs(
            [psutil.Process(p) for p in workers if psutil.pid_exists(p)], timeout=20
        )
        assert not lingering
    finally:
        first.kill()
        if restarted is not None:
            restarted.terminate()
        shutil.rmtree(folder, ignore_errors=True)


def _make_runtime(kind: str, base: Path) -> Path:
    runtime = base / "rt"
    if kind == "group-readable":
        runtime.mkdir(mode=0o750)
        runtime.chmod(0o750)
    elif kind == "symlink":
        target = base / "elsewhere"
        target.mkdir(mode=0o700)
        runtime.symlink_to(target)
    else:
        runtime.mkdir(mode=0o700)
        os.chown(runtime, 65534, 65534)
    return runtime


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("group-readable", "0750"),
        ("symlink", "symlink"),
        pytest.param(
            "other owner",
            "owned by uid 65534",
            marks=pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown"),
        ),
    ],
)
def test_the_daemon_refuses_an_unsafe_runtime_dir(tmp_path: Path, kind: str, message: str) -> None:
    base = short_dir()
    try:
        runtime = _make_runtime(kind, base)
        before = sorted(p.name for p in runtime.iterdir())
        proc = DaemonProcess(runtime / "d.sock", tmp_path, "--model", "builtin")
        assert proc.proc.wait(60) == 3
        assert "refusing to start" in proc.output() and message in proc.output()
        assert not (runtime / "d.sock").exists() and not (runtime / "d.sock").is_symlink()
        assert sorted(p.name for p in runtime.iterdir()) == before  # not even a lock file
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_every_catalogued_frame_is_refused_by_the_protocol_reader() -> None:
    """Every catalogued frame is refused by the protocol's own reader, not only by the daemon:
    guards the catalogue itself (a frame that unpacks would test nothing)."""
    for name, attack in hostile.HOSTILE_FRAMES.items():
        with pytest.raises(protocol.ProtocolError) as err:
            length = protocol.frame_length(attack.payload[:4])
            assert len(attack.payload) == 4 + length, name
            protocol.unpack(attack.payload[4:])
        assert err.value.code == attack.code, name
    assert msgpack.unpackb(hostile.amplifying_frame(0.01)[4:])["op"] == "ping"

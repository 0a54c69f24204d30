"""Wire protocol v1 between photodup clients and photodupd.

A frame is a 4-byte big-endian unsigned length followed by exactly that many
bytes holding one msgpack map.  This module is torch-free and I/O-free: it
only turns bytes into documents and back, and checks that documents are well
formed.  Both the server and every client use it, so a limit changed here
changes on both sides.

It is the protocol's one place: the ops (:data:`OPS`, one :class:`Op` each,
typed with the shape of its result), those shapes (TypedDicts), the error codes
and the errors that become error replies.  The server dispatches on the op
table and answers in these shapes; clients :meth:`~photodupd.client.SyncClient.call`
an op and read its typed result.  A new op is an :class:`Op` and its result's
shape here, its handler in :mod:`photodupd.server`, and the client that asks.

Requests carry ``{"id": int, "op": str, ...}``.  Replies carry
``{"id", "ok": True, "result": ...}`` or
``{"id", "ok": False, "error": {"code", "message", "retryable"}}``.
Progress notices for long requests carry ``{"id", "op": "progress", ...}``
and are followed by the final reply with the same id.

The first request on a connection must be ``hello``; its reply is the
:class:`Welcome` document (see :func:`welcome_result`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, NotRequired, TypeAlias, TypedDict, TypeVar

import msgpack

PROTOCOL_VERSION: Final = 1

#: Largest frame either side accepts.  Big enough for a request carrying a
#: few large photos as bytes; checked before any allocation.
MAX_FRAME: Final = 64 * 1024 * 1024
#: Most items in one ``features`` request.  Clients split bigger jobs and
#: pipeline them, which keeps replies small and batches full.
MAX_ITEMS: Final = 256
#: Longest string accepted anywhere in a document (paths are < 4096 bytes).
MAX_STR: Final = 64 * 1024
#: Most keys in any map; every map in this protocol has only a handful.
MAX_MAP_LEN: Final = 64
#: Most containers (maps + arrays, and their entries) in one document.  msgpack's
#: limits are per container, so without this a frame of one-byte empty arrays
#: becomes ~70 bytes of Python object each (a 64 MiB frame, gigabytes) and its
#: unpacking stalls the event loop.  The largest legal document (a features
#: reply: 256 items of ~10 keys) needs under 3,000.
MAX_ELEMENTS: Final = 16 * MAX_ITEMS + 1024

HEADER: Final = struct.Struct(">I")


class ErrorCode(enum.StrEnum):
    """Every error code the daemon sends; the README has the same table."""

    # Connection-level: the connection is closed after this reply.
    BAD_FRAME = "bad_frame"  # not a msgpack map, bad limits, ext types ...
    FRAME_TOO_LARGE = "frame_too_large"  # length prefix above MAX_FRAME
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"  # hello with another version
    HELLO_REQUIRED = "hello_required"  # first request was not hello, or none came in time
    # Request-level: the connection stays open.
    BAD_REQUEST = "bad_request"  # missing or mistyped field
    UNKNOWN_OP = "unknown_op"
    BUSY = "busy"  # queue full or too many connections; retry later
    TOO_MANY_IN_FLIGHT = "too_many_in_flight"  # per-connection cap reached
    SHUTTING_DOWN = "shutting_down"  # daemon is draining
    MODEL_UNAVAILABLE = "model_unavailable"  # weights missing or load failed
    DOWNLOAD_FAILED = "download_failed"  # models pull could not fetch
    INTERNAL = "internal"  # a bug; the message says what, never a traceback
    # Item-level (inside a features reply): the rest of the batch is fine.
    BAD_PATH = "bad_path"  # an empty path or one with a NUL byte: it can name no file
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    UNREADABLE = "unreadable"  # I/O error, a directory, a device ...
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"  # an image, but not allow-listed
    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"  # pixel count or file size above the limits
    TIMEOUT = "timeout"  # the decoder took too long and was replaced
    DECODER_CRASHED = "decoder_crashed"  # the decoder process died


#: Errors after which the same request may succeed if sent again later.
RETRYABLE: Final = frozenset(
    {ErrorCode.BUSY, ErrorCode.TOO_MANY_IN_FLIGHT, ErrorCode.SHUTTING_DOWN}
)


class CodedError(Exception):
    """A failure the daemon answers with an error reply: a protocol code and a message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProtocolError(CodedError):
    """A frame or document that breaks the protocol."""


class ServiceError(CodedError):
    """A well-formed request the daemon cannot serve: busy, no model, stopping ..."""


class RemoteError(Exception):
    """An error reply from the daemon, raised on the client side."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.BAD_FRAME, f"msgpack ext type {code} is not allowed")


def pack(document: Mapping[str, Any]) -> bytes:
    """Serialise one document into a complete frame (header + body)."""
    body = msgpack.packb(document, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(body)} bytes exceeds {MAX_FRAME}"
        )
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """Length announced by a 4-byte header; refuses lengths above the cap before allocating."""
    if len(header) != HEADER.size:
        raise ProtocolError(ErrorCode.BAD_FRAME, "short frame header")
    (length,) = HEADER.unpack(header)
    if length == 0:
        raise ProtocolError(ErrorCode.BAD_FRAME, "empty frame")
    if length > MAX_FRAME:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds {MAX_FRAME}"
        )
    return length


def unpack(body: bytes) -> dict[str, Any]:
    """Decode one frame body into a document with every limit applied.

    The body is already bounded by MAX_FRAME (the reader checked the length
    prefix before reading it).  Limits are set so that no field can announce
    more than the frame holds,
    ints are refused as map keys (the "2M int keys" attack), ext types are
    refused and invalid UTF-8 in a str is an error rather than mojibake.
    """
    if len(body) > MAX_FRAME:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(body)} bytes exceeds {MAX_FRAME}"
        )
    budget = [MAX_ELEMENTS]

    def count(container: Any) -> Any:
        budget[0] -= 1 + len(container)
        if budget[0] < 0:
            raise ProtocolError(
                ErrorCode.BAD_FRAME, f"more than {MAX_ELEMENTS} elements in one frame"
            )
        return container

    try:
        document = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
            list_hook=count,
            object_hook=count,
            max_str_len=MAX_STR,
            max_bin_len=MAX_FRAME,
            max_array_len=max(MAX_ITEMS, 4096),
            max_map_len=MAX_MAP_LEN,
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except (ValueError, msgpack.UnpackException, RecursionError) as exc:
        # msgpack raises ValueError for limit breaches and bad UTF-8,
        # ExtraData for trailing bytes, StackError for deep nesting.
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"malformed msgpack: {type(exc).__name__}"
        ) from None
    if not isinstance(document, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a frame must hold one msgpack map")
    return document


# --------------------------------------------------------------------------
# Result shapes: what each op's reply carries as ``result``


class ModelState(enum.StrEnum):
    """The model's state, as ``status`` and the welcome's model report it."""

    LOADING = "loading"
    READY = "ready"
    UNLOADED = "unloaded"  # unloaded when idle; it reloads on the next request
    FAILED = "failed"


class ModelIdentity(TypedDict):
    """Which model made an embedding: embeddings of two identities never compare."""

    id: str | None  # None until the first model is loaded
    dim: int | None


class ModelInfo(ModelIdentity):
    """A model being served: the ``load`` result."""

    name: str | None  # what it was resolved as: "builtin", "clip:ViT-B-32" ...
    device: str | None
    why: str  # why this model: "auto: CLIP weights found in the local cache"
    #: Why this device ("auto: no CUDA or MPS device: the CPU"); absent before a load.
    device_why: NotRequired[str]
    #: The model's input (imaging.PreprocessSpec): a client that makes ``pixels`` items
    #: resizes to ``input_resize`` and crops ``input_size``.  Absent before the first load.
    input_size: NotRequired[int]
    input_resize: NotRequired[int]


class ActiveModel(ModelInfo):
    """The model being served and its state: the welcome's and ``models``' ``active``."""

    state: str  # a ModelState


class Welcome(TypedDict):
    """The ``hello`` result."""

    protocol: int
    server_version: str
    model: ActiveModel
    max_frame: int
    max_items: int
    #: Seconds after which the daemon closes a connection with nothing in flight.
    idle_timeout: NotRequired[float]
    #: Whether the daemon's decoders read RAW camera files (rawpy installed where it runs).
    #: Absent from older daemons: a client then treats RAW files as unreadable there.
    decodes_raw: NotRequired[bool]


class Pong(TypedDict):
    pong: bool
    time: float


class ModelStatus(TypedDict):
    """The model's part of ``status``.  Flat: ``model`` is the model's id here."""

    state: str  # a ModelState
    model: str | None
    dim: int | None
    model_name: str | None
    why: str
    device: str | None
    images_served: int
    batches: int
    mean_batch: float
    largest_batch: int
    loads: int
    unloads: int
    memory_trims: int
    recent_images_per_s: float
    load_seconds: float | None
    last_error: str | None
    queue_depth: int
    device_why: NotRequired[str]  # as in ModelInfo
    input_size: NotRequired[int]
    input_resize: NotRequired[int]


class ServiceStatus(ModelStatus):
    """The inference service's part of ``status``: its settings and its queue."""

    threads: int
    model_streams: int
    decode_workers: int
    batch_size: int
    idle_unload: float
    errors: int  # items answered with an error
    in_flight_items: int
    max_queue: int
    decoder: dict[str, Any] | None  # the decoder pool's counters


class ServerStatus(TypedDict):
    """The server's part of ``status``: the process and its connections."""

    version: str
    pid: int
    uptime: float
    #: Seconds until an idle exit if no request comes (None: ``idle_exit`` is 0, never).
    idle_exit_in: float | None
    socket: str | None
    connections: int
    control_connections: int
    connections_total: int
    requests: int
    request_errors: int
    bad_frames: int
    rejected_peers: int
    rejected_busy: int
    hello_timeouts: int
    idle_timeouts: int
    in_flight_requests: int
    rss: int | None
    draining: bool


class MinuteStats(TypedDict):
    """One minute of the daemon's history (:mod:`photodupd.history`)."""

    start: int  # the minute's first second (Unix time)
    seconds: float  # how much of it the daemon was up and it has run (60 once it is over)
    images: int  # images embedded by features requests that finished in it
    images_per_s: float  # images / seconds
    requests: int  # requests that finished in it, but status and ping (monitoring)
    errors: int  # failed items and error replies
    p50_ms: float | None  # latency of its features requests; None without any
    p99_ms: float | None
    rss: int | None  # the largest resident memory seen in it, bytes; None if never sampled


class Latency(TypedDict):
    """Latency of ``features`` requests: percentiles over the last few minutes, and totals
    since the start (a Prometheus summary's ``_count`` and ``_sum``)."""

    window_s: float
    count: int  # requests in the window
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    total_count: int
    total_ms: float


class MonitorStatus(TypedDict):
    """The server's record of finished requests: ``status``' monitoring part."""

    history: list[MinuteStats]  # the last hour, one entry per minute, oldest first
    features_latency: Latency


class Status(ServiceStatus, ServerStatus, MonitorStatus):
    """The ``status`` result."""


class ModelRow(TypedDict):
    """One model ``models`` lists."""

    name: str
    id: str
    dim: int | None
    available: bool  # its weights are on this computer
    weights: str | None
    description: str
    active: bool  # the one being served


class Models(TypedDict):
    """The ``models`` result."""

    models: list[ModelRow]
    active: ActiveModel


class ItemOk(TypedDict):
    """One photo of a ``features`` reply, embedded."""

    ok: Literal[True]
    embedding: bytes  # float32 little-endian, L2-normalised
    phash: int
    width: int
    height: int
    format: str
    taken: str | None
    camera: str | None
    exif_fields: int
    #: The pixel checks' thumbnail (photodupd.pixelthumb's packed form), when the request
    #: asked for ``thumbs`` and the item was a file (path or data), not ``pixels``.
    thumb: NotRequired[bytes]


class ItemErrorBody(TypedDict):
    code: str  # an ErrorCode
    message: str


class ItemFailed(TypedDict):
    """One photo of a ``features`` reply that failed; the other items are not affected."""

    ok: Literal[False]
    error: ItemErrorBody


ItemResult: TypeAlias = ItemOk | ItemFailed


class Timing(TypedDict):
    """Where a ``features`` request's time went (what the request log shows)."""

    #: Longest an item of the request waited between its decode and its forward pass.
    wait_ms: float
    #: The request's share of forward-pass time (each pass divided among its items).
    model_ms: float


class Features(TypedDict):
    """The ``features`` result: one item per item asked for, in order."""

    model: ModelIdentity
    items: list[ItemResult]
    timing: Timing


class ClassScore(TypedDict):
    index: int  # an ImageNet class (0-999)
    score: float  # its softmax probability


class Probed(TypedDict):
    """The ``probe`` result: what the model makes of one image (``photodup-ctl doctor``).

    ``classes`` is the top ImageNet classes for a model with a classifier head (the
    built-in model) and None for one without (CLIP's image tower)."""

    model: ModelIdentity
    classes: list[ClassScore] | None


class Pulled(TypedDict):
    """The ``pull`` result."""

    model: str
    path: str
    bytes: int


class Stopping(TypedDict):
    """The ``shutdown`` result."""

    stopping: bool


# --------------------------------------------------------------------------
# Ops

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Op(Generic[R]):
    """One op of the protocol; ``R`` is the shape of its result."""

    name: str
    #: Repeating it is harmless: a client re-sends it after a reconnect.
    idempotent: bool
    #: Served on a reserved control slot, when every ordinary connection slot is taken
    #: (``photodup-ctl status`` and ``stop`` always get through).
    control: bool


HELLO: Final[Op[Welcome]] = Op("hello", idempotent=True, control=True)
PING: Final[Op[Pong]] = Op("ping", idempotent=True, control=True)
STATUS: Final[Op[Status]] = Op("status", idempotent=True, control=True)
MODELS: Final[Op[Models]] = Op("models", idempotent=True, control=False)
FEATURES: Final[Op[Features]] = Op("features", idempotent=True, control=False)
LOAD: Final[Op[ModelInfo]] = Op("load", idempotent=False, control=False)
PULL: Final[Op[Pulled]] = Op("pull", idempotent=False, control=False)
SHUTDOWN: Final[Op[Stopping]] = Op("shutdown", idempotent=False, control=True)
#: ``data``: one image's bytes, decoded as ``features`` does, then classified.
PROBE: Final[Op[Probed]] = Op("probe", idempotent=True, control=False)

#: Every op, by name: the server serves exactly these.
OPS: Final[Mapping[str, Op[Any]]] = MappingProxyType(
    {op.name: op for op in (HELLO, PING, STATUS, MODELS, FEATURES, LOAD, PULL, SHUTDOWN, PROBE)}
)
#: Ops whose repetition is harmless; only these are retried after a reconnect.
IDEMPOTENT_OPS: Final = frozenset(name for name, op in OPS.items() if op.idempotent)
#: Ops served on a control slot.
CONTROL_OPS: Final = frozenset(name for name, op in OPS.items() if op.control)


# --------------------------------------------------------------------------
# Documents


def request(request_id: int, op: str, **fields: Any) -> dict[str, Any]:
    return {"id": request_id, "op": op, **fields}


def ok_reply(request_id: int, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


class ErrorBody(TypedDict):
    code: str  # an ErrorCode
    message: str
    retryable: bool


def error_body(code: ErrorCode | str, message: str) -> ErrorBody:
    code = ErrorCode(code)
    return {"code": code.value, "message": message, "retryable": code in RETRYABLE}


def error_reply(request_id: int | None, code: ErrorCode | str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error_body(code, message)}


def progress_notice(request_id: int, **fields: Any) -> dict[str, Any]:
    return {"id": request_id, "op": "progress", **fields}


def hello(client: str) -> dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "client": client}


def welcome_result(
    server_version: str,
    model: ActiveModel,
    idle_timeout: float | None = None,
    *,
    decodes_raw: bool = False,
) -> Welcome:
    """The reply to hello.  ``idle_timeout`` (seconds) tells a client when the daemon closes a
    connection that has nothing in flight, so it can reconnect before sending rather than
    send into a connection being closed; ``decodes_raw`` whether to send RAW files at all."""
    welcome: Welcome = {
        "protocol": PROTOCOL_VERSION,
        "server_version": server_version,
        "model": model.copy(),
        "max_frame": MAX_FRAME,
        "max_items": MAX_ITEMS,
        "decodes_raw": decodes_raw,
    }
    if idle_timeout is not None:
        welcome["idle_timeout"] = idle_timeout
    return welcome


@dataclass(frozen=True, slots=True)
class Request:
    """A request that passed shape checks; ``fields`` holds the op's own keys."""

    id: int
    op: str
    fields: dict[str, Any]


def parse_request(document: dict[str, Any]) -> Request:
    """Check the envelope of a client document; op-specific fields are checked by the op."""
    request_id = document.get("id")
    if (
        not isinstance(request_id, int)
        or isinstance(request_id, bool)
        or not 0 <= request_id < 2**63
    ):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'id' must be a non-negative integer")
    op = document.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'op' must be a string")
    fields = {k: v for k, v in document.items() if k not in ("id", "op")}
    return Request(request_id, op, fields)


#: Largest side of a ``pixels`` item: the model input of any model photodup knows is far
#: smaller (224-336), and this keeps one item's pixels under 3 MiB.
MAX_PIXELS_SIDE: Final = 1024


@dataclass(frozen=True, slots=True)
class FeatureItem:
    """One image to embed: a path (str, or bytes for non-UTF-8 names), raw file bytes, or the
    model's input already made by the client (``pixels``: see :mod:`photodupd.pixelcodec`,
    ``side`` x ``side`` RGB, which must be the model's input size)."""

    path: str | bytes | None = None
    data: bytes | None = None
    pixels: bytes | None = None
    side: int = 0

    def describe(self) -> str:
        if self.path is not None:
            return repr(self.path)
        if self.pixels is not None:
            return f"<{self.side}x{self.side} pixels, {len(self.pixels)} bytes>"
        return f"<{len(self.data or b'')} bytes>"


@dataclass(frozen=True, slots=True)
class ItemError:
    """One item's failure, answered in its place in the reply; the other items are served.

    The parser makes these for values no file or image can have (an empty path, a NUL in
    a path, empty data); the daemon for files that cannot be read or decoded, and for a
    model that failed on the item."""

    code: ErrorCode
    message: str

    @classmethod
    def of(cls, code: ErrorCode | str, message: str) -> ItemError:
        """The error for ``code``; a code the protocol does not know still answers the item
        (as ``internal``, the unknown code in the message)."""
        try:
            return cls(ErrorCode(code), message)
        except ValueError:
            return cls(ErrorCode.INTERNAL, f"{code}: {message}")

    def reply(self) -> ItemFailed:
        return {"ok": False, "error": {"code": self.code.value, "message": self.message}}


def parse_feature_items(fields: Mapping[str, Any]) -> list[FeatureItem | ItemError]:
    """Validate the ``items`` of a features request.

    A wrongly shaped request (not a list, an item not a map, a field of the wrong type) is
    a client bug and fails the request with ``bad_request``.  A well-typed value that can
    name no image is that item's error (:class:`ItemError`); the other items are served.
    """
    items = fields.get("items")
    if not isinstance(items, list) or not items:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'items' must be a non-empty list")
    if len(items) > MAX_ITEMS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"at most {MAX_ITEMS} items per request")
    return [_parse_item(index, item) for index, item in enumerate(items)]


def parse_thumbs(fields: Mapping[str, Any]) -> bool:
    """The opt-in ``thumbs`` flag of a features request: each embedded file item's reply
    then carries its ``thumb``.  Absent means no."""
    thumbs = fields.get("thumbs", False)
    if not isinstance(thumbs, bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'thumbs' must be true or false")
    return thumbs


def parse_probe_item(fields: Mapping[str, Any]) -> FeatureItem:
    """The image of a ``probe`` request: its ``data`` (non-empty bytes)."""
    data = fields.get("data")
    if not isinstance(data, bytes) or not data:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'data' must be an image's bytes")
    return FeatureItem(data=data)


def _parse_item(index: int, item: Any) -> FeatureItem | ItemError:
    if not isinstance(item, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"item {index} must be a map")
    path, data, pixels = item.get("path"), item.get("data"), item.get("pixels")
    if sum(value is not None for value in (path, data, pixels)) != 1:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"item {index} needs exactly one of 'path', 'data' or 'pixels'"
        )
    if pixels is not None:
        return _parse_pixels(index, pixels, item.get("side"))
    if path is not None:
        if not isinstance(path, str | bytes):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"item {index}: 'path' must be a str or bin")
        if not path:
            return ItemError(ErrorCode.BAD_PATH, "empty path")
        if b"\0" in _as_bytes(path):
            return ItemError(ErrorCode.BAD_PATH, "a path cannot contain a NUL byte")
        return FeatureItem(path=path)
    if not isinstance(data, bytes):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"item {index}: 'data' must be bin")
    if not data:
        # What the decoder says of an empty file, without a trip to a decoder process.
        return ItemError(ErrorCode.NOT_AN_IMAGE, "empty data")
    return FeatureItem(data=data)


def _parse_pixels(index: int, pixels: Any, side: Any) -> FeatureItem | ItemError:
    if not isinstance(pixels, bytes):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"item {index}: 'pixels' must be bin")
    if type(side) is not int or not 1 <= side <= MAX_PIXELS_SIDE:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"item {index}: 'side' must be an int 1..{MAX_PIXELS_SIDE}"
        )
    if not pixels:
        return ItemError(ErrorCode.NOT_AN_IMAGE, "empty pixels")
    return FeatureItem(pixels=pixels, side=side)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def path_for_wire(path: str | bytes) -> str | bytes:
    """A filesystem path as the protocol carries it: str when valid UTF-8, else bin.

    Python spells undecodable file names with surrogate escapes, which msgpack
    cannot encode as str; sending the raw bytes keeps any name working.
    """
    if isinstance(path, bytes):
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            return path
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")
    return path

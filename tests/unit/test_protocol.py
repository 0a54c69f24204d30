"""Frame and document rules of protocol v1 (RELIABILITY rule 18).

Every refusal is checked for its code, which decides what the daemon does next: after a
frame-level one (``bad_frame``, ``frame_too_large``) it closes the connection, after a
request-level one (``bad_request``) the connection stays."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from photodupd import protocol
from photodupd.protocol import ErrorCode, ProtocolError


def body_of(frame: bytes) -> bytes:
    length = protocol.frame_length(frame[:4])
    assert len(frame) == 4 + length
    return frame[4:]


def test_round_trip_keeps_types() -> None:
    doc = {"id": 7, "op": "features", "items": [{"path": "a b.jpg"}, {"data": b"\x00\xff"}]}
    assert protocol.unpack(body_of(protocol.pack(doc))) == doc


def test_length_prefix_is_big_endian() -> None:
    frame = protocol.pack({"id": 1, "op": "ping"})
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4


def test_frame_claiming_4_gib_is_refused_before_reading_it() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.frame_length(struct.pack(">I", 0xFFFFFFFF))
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE


def test_empty_frame_is_refused() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.frame_length(b"\x00\x00\x00\x00")
    assert (err.value.code, err.value.message) == (ErrorCode.BAD_FRAME, "empty frame")


def test_bin32_header_claiming_4_gb_is_refused() -> None:
    body = b"\x81\xa4data" + b"\xc6" + struct.pack(">I", 0xFFFFFFF0) + b"xx"
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(body)
    assert err.value.code is ErrorCode.BAD_FRAME


def test_str32_header_claiming_4_gb_is_refused() -> None:
    body = b"\x81\xa4data" + b"\xdb" + struct.pack(">I", 0xFFFFFFF0) + b"xx"
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(body)
    assert err.value.code is ErrorCode.BAD_FRAME


def test_map_of_two_million_int_keys_is_refused() -> None:
    # map32 header announcing 2M entries, then int keys: refused at once.
    body = b"\xdf" + struct.pack(">I", 2_000_000) + b"\x01\x02" * 1000
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(body)
    assert err.value.code is ErrorCode.BAD_FRAME


def test_int_keys_are_refused_even_in_small_maps() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(msgpack.packb({1: 2}))
    assert err.value.code is ErrorCode.BAD_FRAME


def test_deep_nesting_is_refused() -> None:
    body = b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(body)
    assert err.value.code is ErrorCode.BAD_FRAME


def test_ext_types_are_refused() -> None:
    body = msgpack.packb({"id": 1, "x": msgpack.ExtType(5, b"abc")})
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(body)
    assert err.value.code is ErrorCode.BAD_FRAME


def test_invalid_utf8_in_str_is_refused() -> None:
    body = b"\x81\xa1a\xa2\xff\xfe"
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(body)
    assert err.value.code is ErrorCode.BAD_FRAME


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(msgpack.packb({"id": 1}) + b"\x00")
    assert err.value.code is ErrorCode.BAD_FRAME


def test_a_frame_must_be_a_map() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.unpack(msgpack.packb([1, 2, 3]))
    assert err.value.code is ErrorCode.BAD_FRAME
    assert err.value.message == "a frame must hold one msgpack map"


@pytest.mark.parametrize(
    "document",
    [
        {"op": "ping"},
        {"id": "1", "op": "ping"},
        {"id": -1, "op": "ping"},
        {"id": True, "op": "x"},
        {"id": 1, "op": 5},
    ],
)
def test_bad_envelopes(document: dict) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.parse_request(document)
    assert err.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "items",
    [
        None,
        [],
        [1],
        [{}],
        [{"path": "a", "data": b"x"}],
        [{"path": 5}],
        [{"data": "text"}],
        [{"path": "a"}, {"path": None}],
    ],
)
def test_badly_shaped_feature_items_fail_the_request(items: object) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.parse_feature_items({"items": items})
    assert err.value.code is ErrorCode.BAD_REQUEST  # the request fails, the connection stays


def test_values_that_name_no_image_are_per_item_errors() -> None:
    """An empty path, a NUL in a path (str or bin) or empty data fails that item only: the
    README's "one bad image is a per-item error; it never fails the request"."""
    items = [
        {"path": "/p/a.jpg"},
        {"path": ""},
        {"path": "a\0b"},
        {"path": b""},
        {"path": b"/p/\xff\0.jpg"},
        {"data": b""},
        {"data": b"\xff\xd8"},
    ]
    parsed = protocol.parse_feature_items({"items": items})
    assert parsed[0] == protocol.FeatureItem(path="/p/a.jpg")
    assert parsed[6] == protocol.FeatureItem(data=b"\xff\xd8")
    errors = parsed[1:6]
    assert all(isinstance(e, protocol.ItemError) for e in errors)
    assert [e.code for e in errors] == [ErrorCode.BAD_PATH] * 4 + [ErrorCode.NOT_AN_IMAGE]
    assert errors[0].reply() == {
        "ok": False,
        "error": {"code": "bad_path", "message": errors[0].message},
    }


def test_too_many_items() -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.parse_feature_items({"items": [{"path": "a"}] * (protocol.MAX_ITEMS + 1)})
    assert err.value.code is ErrorCode.BAD_REQUEST
    assert err.value.message == f"at most {protocol.MAX_ITEMS} items per request"


def test_non_utf8_path_travels_as_bin_and_back() -> None:
    raw = b"/photos/caf\xe9.jpg"  # latin-1 name, invalid UTF-8
    import os

    wire = protocol.path_for_wire(os.fsdecode(raw))
    assert wire == raw
    doc = protocol.unpack(
        body_of(protocol.pack({"id": 1, "op": "features", "items": [{"path": wire}]}))
    )
    (item,) = protocol.parse_feature_items(doc)
    assert isinstance(item, protocol.FeatureItem) and item.path == raw
    assert protocol.path_for_wire("ok.jpg") == "ok.jpg"


def test_error_reply_marks_retryable_codes() -> None:
    assert protocol.error_reply(1, ErrorCode.BUSY, "x")["error"]["retryable"] is True
    assert protocol.error_reply(1, ErrorCode.BAD_REQUEST, "x")["error"]["retryable"] is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_unpack_raises_only_protocol_errors(data: bytes) -> None:
    try:
        document = protocol.unpack(data)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_FRAME  # a broken frame: the connection is closed
        return
    assert isinstance(document, dict)
    try:
        protocol.parse_request(document)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST  # a well-formed frame: the connection stays


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_like, max_size=8))
def test_fuzz_round_trip(document: dict) -> None:
    assert protocol.unpack(body_of(protocol.pack(document))) == document

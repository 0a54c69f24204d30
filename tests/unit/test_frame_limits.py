"""MAX_FRAME is a limit, not a forbidden value: exactly MAX_FRAME passes, one byte more fails.

The protocol tests elsewhere only try absurd lengths (4 GiB), which an off-by-one in any
of the three checks (header, pack, unpack) would pass as well.
"""

from __future__ import annotations

import msgpack
import pytest

from photodupd import protocol
from photodupd.protocol import HEADER, MAX_FRAME, ErrorCode, ProtocolError


def document_of_body_size(size: int) -> dict[str, bytes]:
    """A one-key map whose msgpack body is exactly ``size`` bytes."""
    probe = 1 << 17  # big enough for the bin32 header every size here uses
    overhead = len(msgpack.packb({"d": bytes(probe)}, use_bin_type=True)) - probe
    document = {"d": bytes(size - overhead)}
    assert len(msgpack.packb(document, use_bin_type=True)) == size
    return document


@pytest.mark.parametrize("length", [1, MAX_FRAME - 1, MAX_FRAME])
def test_header_up_to_max_frame_is_accepted(length: int) -> None:
    assert protocol.frame_length(HEADER.pack(length)) == length


@pytest.mark.parametrize("length", [MAX_FRAME + 1, MAX_FRAME + 4096])
def test_header_above_max_frame_is_refused_as_too_large(length: int) -> None:
    with pytest.raises(ProtocolError) as err:
        protocol.frame_length(HEADER.pack(length))
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE


def test_a_body_of_exactly_max_frame_packs_and_unpacks() -> None:
    document = document_of_body_size(MAX_FRAME)
    frame = protocol.pack(document)
    assert protocol.frame_length(frame[: HEADER.size]) == MAX_FRAME
    assert protocol.unpack(frame[HEADER.size :]) == document


def test_a_body_one_byte_over_max_frame_is_refused_both_ways() -> None:
    document = document_of_body_size(MAX_FRAME + 1)
    with pytest.raises(ProtocolError) as packed:
        protocol.pack(document)
    assert packed.value.code is ErrorCode.FRAME_TOO_LARGE
    body = msgpack.packb(document, use_bin_type=True)
    with pytest.raises(ProtocolError) as unpacked:
        protocol.unpack(body)
    assert unpacked.value.code is ErrorCode.FRAME_TOO_LARGE

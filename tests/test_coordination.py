"""The inter-domain notices: exact round trips, compact sizes, clear rejections."""

import pytest

from controllers.coordination import (
    ENTRY,
    HEADER,
    VERSION,
    Evidence,
    MessageError,
    MessageType,
    Notice,
    Stream,
    decode_notice,
    encode_notice,
)


def test_a_ban_notice_round_trips_and_costs_a_12_byte_header_plus_7_bytes_an_entry():
    notice = Notice(MessageType.BAN, origin=2, seq=17, round=9,
                    entries=(Evidence(0x0203, Stream.UPDATE, 0.75, 2, 3),))
    data = encode_notice(notice)
    assert len(data) == HEADER.size + ENTRY.size == 12 + 7
    decoded = decode_notice(data)
    assert decoded.entries[0].score == pytest.approx(0.75, abs=1e-4)
    assert decoded == Notice(MessageType.BAN, 2, 17, 9, (Evidence(0x0203, Stream.UPDATE,
                                                                  decoded.entries[0].score, 2, 3),))


@pytest.mark.parametrize("data, message", [
    (b"SC", "shorter than the 12-byte header"),
    (b"XX" + bytes(10), "bad magic"),
    (HEADER.pack(b"SC", 9, 1, 1, 0, 0, 0), "unsupported version 9"),
    (HEADER.pack(b"SC", VERSION, 7, 1, 0, 0, 0), "unknown message type 7"),
    (HEADER.pack(b"SC", VERSION, 1, 1, 0, 0, 2) + bytes(7), "2 entries need 26"),
    (HEADER.pack(b"SC", VERSION, 1, 1, 0, 0, 1) + ENTRY.pack(1, 9, 0, 1, 1), "unknown stream 9"),
])
def test_malformed_notices_are_rejected_with_a_reason(data, message):
    with pytest.raises(MessageError, match=message):
        decode_notice(data)


def test_link_notices_round_trip_in_two_bytes_a_link():
    notice = Notice(MessageType.LINK_DOWN, origin=1, seq=3, round=0, links=((1, 2),))
    data = encode_notice(notice)
    assert len(data) == HEADER.size + 2 and decode_notice(data) == notice

"""The inter-domain notices: exact round trips, compact sizes, clear rejections."""

import pytest

from controllers.coordination import (
    ENTRY,
    HEADER,
    TAG_BYTES,
    Evidence,
    MessageError,
    MessageType,
    Notice,
    NoticeChannel,
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
    (HEADER.pack(b"SC", 1, 7, 1, 0, 0, 0), "unknown message type 7"),
    (HEADER.pack(b"SC", 1, 1, 1, 0, 0, 2) + bytes(7), "2 entries need 26"),
    (HEADER.pack(b"SC", 1, 1, 1, 0, 0, 1) + ENTRY.pack(1, 9, 0, 1, 1), "unknown stream 9"),
])
def test_malformed_notices_are_rejected_with_a_reason(data, message):
    with pytest.raises(MessageError, match=message):
        decode_notice(data)


def test_link_notices_round_trip_in_two_bytes_a_link():
    notice = Notice(MessageType.LINK_DOWN, origin=1, seq=3, round=0, links=((1, 2),))
    data = encode_notice(notice)
    assert len(data) == HEADER.size + 2 and decode_notice(data) == notice


def keyed_channels():
    keys = {(1, 2): b"a" * 32, (1, 3): b"b" * 32, (2, 3): b"c" * 32}
    return {d: NoticeChannel(d, {e: keys[tuple(sorted((d, e)))] for e in (1, 2, 3) if e != d}) for d in (1, 2, 3)}


BAN = Notice(MessageType.BAN, 0, 0, 7, (Evidence(0x0102, Stream.UPDATE, 0.9, 3, 4),))


def test_only_the_origin_can_make_a_notice_its_receiver_accepts_and_only_once():
    channels = keyed_channels()
    copies = channels[1].outgoing(BAN)
    assert set(copies) == {2, 3} and len(copies[2]) == HEADER.size + ENTRY.size + TAG_BYTES
    accepted = channels[2].incoming(copies[2])
    assert (accepted.origin, accepted.seq, accepted.entries[0].node_key) == (1, 1, 0x0102)
    with pytest.raises(MessageError, match="replayed: seq 1 from domain 1"):
        channels[2].incoming(copies[2])
    with pytest.raises(MessageError, match="tag does not verify"):
        channels[2].incoming(copies[3])  # the copy tagged for domain 3, sent to domain 2
    # Domain 3 holds a key of domain 1's, but only the one for the pair 1-3: it cannot speak
    # as domain 1 to domain 2.
    forged = NoticeChannel(1, {2: channels[3].keys[1]}).outgoing(BAN)[2]
    with pytest.raises(MessageError, match="forged or altered"):
        channels[2].incoming(forged)
    altered = bytearray(channels[1].outgoing(BAN)[2])
    altered[HEADER.size] ^= 1  # another node's key
    with pytest.raises(MessageError, match="forged or altered"):
        channels[2].incoming(bytes(altered))
    with pytest.raises(MessageError, match="not a peer"):
        channels[2].incoming(NoticeChannel(9, {2: b"z" * 32}).outgoing(BAN)[2])


def test_a_restored_channel_neither_reuses_its_numbers_nor_accepts_old_notices():
    channels = keyed_channels()
    old = channels[1].outgoing(BAN)[2]
    channels[2].incoming(old)
    restarted_2 = NoticeChannel.restored(2, channels[2].keys, channels[2].state())
    with pytest.raises(MessageError, match="replayed"):
        restarted_2.incoming(old)
    restarted_1 = NoticeChannel.restored(1, channels[1].keys, channels[1].state())
    assert restarted_2.incoming(restarted_1.outgoing(BAN)[2]).seq == channels[1].seq + 1

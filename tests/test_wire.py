import struct

import numpy as np
import pytest

from agents.wire import (
    DEFAULT_MAX_PAYLOAD,
    DTYPE_CODES,
    HEADER_FIXED,
    MAGIC,
    MAX_TENSORS,
    PREFIX,
    VERSION,
    FrameError,
    FrameReader,
    ModelFrame,
    decode,
    encode,
)

SHAPES = ((64, 32), (32,), (10, 32), (10,))


def model_frame(seed=0, sender="d2h3", round_=7):
    rng = np.random.default_rng(seed)
    return ModelFrame(sender, round_, 120, tuple(rng.normal(size=s).astype(np.float32) for s in SHAPES))


def test_round_trip_is_exact_and_compact():
    frame = model_frame()
    data = encode(frame)
    back = decode(data, expected_shapes=SHAPES)
    assert (back.sender, back.round, back.samples, back.shapes) == ("d2h3", 7, 120, SHAPES)
    for a, b in zip(frame.tensors, back.tensors):
        np.testing.assert_array_equal(a, b)
    payload = sum(int(np.prod(s)) for s in SHAPES) * 4
    assert len(data) - payload < 64  # the header is a few dozen bytes


def test_float16_and_float64_travel_too():
    frame = model_frame()
    for dtype, tolerance in (("<f2", 1e-2), ("<f8", 0)):
        back = decode(encode(frame, dtype))
        np.testing.assert_allclose(back.tensors[0], frame.tensors[0], atol=tolerance, rtol=tolerance)


def test_stream_reader_reassembles_frames_split_anywhere():
    frames = [model_frame(seed=i, round_=i) for i in range(3)]
    stream = b"".join(encode(f) for f in frames)
    for chunk in (1, 7, 1000, len(stream)):
        reader = FrameReader(expected_shapes=SHAPES)
        got = []
        for i in range(0, len(stream), chunk):
            got += reader.feed(stream[i:i + chunk])
        assert [f.round for f in got] == [0, 1, 2] and reader.pending_bytes == 0


def corrupt(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def payload_start(data: bytes) -> int:
    return PREFIX.size + struct.unpack(">H", data[6:8])[0]


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: corrupt(d, 0, b"XXXX"), "bad magic"),
    (lambda d: corrupt(d, 4, b"\x09"), "unsupported frame version 9"),
    (lambda d: corrupt(d, 8, struct.pack(">Q", DEFAULT_MAX_PAYLOAD + 1)), "exceeds the limit"),
    (lambda d: corrupt(d, 6, struct.pack(">H", 60000)), "header of 60000 bytes exceeds"),
    (lambda d: d[:-4], "frame is"),
    (lambda d: d + b"\x00", "frame is"),
    (lambda d: d[:10], "shorter than the 16-byte prefix"),
    (lambda d: corrupt(d, payload_start(d), np.float32(np.nan).tobytes()), "NaN or Inf"),
    (lambda d: corrupt(d, payload_start(d), np.float32(np.inf).tobytes()), "NaN or Inf"),
    (lambda d: corrupt(d, PREFIX.size + 1, b"\xff\xfe"), "not valid UTF-8"),
])
def test_malformed_frames_are_rejected_with_a_reason(mutate, reason):
    with pytest.raises(FrameError, match=reason):
        decode(mutate(encode(model_frame())))


def test_shape_mismatch_and_lying_sizes_are_rejected():
    data = encode(model_frame())
    with pytest.raises(FrameError, match="do not match the model"):
        decode(data, expected_shapes=((64, 32), (32,), (10, 32), (11,)))
    # A header that claims a bigger first tensor than the payload carries.
    lying = corrupt(data, PREFIX.size + 1 + 4 + 4 + 4 + 1 + 2 + 1, struct.pack(">I", 65))
    with pytest.raises(FrameError, match="payload is .* bytes but the shapes need"):
        decode(lying)


def handmade_frame(shapes, payload=b"", dtype="<f4", sender=b"d2h3") -> bytes:
    """A frame built field by field, as an attacker would, past every check of encode()."""
    header = (struct.pack(">B", len(sender)) + sender
              + HEADER_FIXED.pack(7, 120, DTYPE_CODES[np.dtype(dtype)], len(shapes))
              + b"".join(struct.pack(f">B{len(s)}I", len(s), *s) for s in shapes))
    return PREFIX.pack(MAGIC, VERSION, 0, len(header), len(payload)) + header + payload


def test_shapes_whose_sizes_wrap_around_64_bits_are_refused_not_a_crash():
    """Four dimensions of 65,536 hold 2**64 values, 0 in 64-bit arithmetic: sized so, the empty
    payload matched, and reshaping it raised a bare ValueError past every FrameError handler
    (the inspection service's and the agents' receivers')."""
    data = handmade_frame([(65536,) * 4])
    with pytest.raises(FrameError, match="payload is 0 bytes but the shapes need"):
        decode(data)
    with pytest.raises(FrameError, match="payload is 0 bytes"):
        FrameReader().feed(data)


def test_an_empty_tensor_is_refused_whatever_its_other_dimensions():
    """numpy cannot shape nothing into (0, 2**32-1, 2**32-1, 2**32-1): "array is too big"."""
    for shape in ((0,), (0, 2**32 - 1, 2**32 - 1, 2**32 - 1)):
        with pytest.raises(FrameError, match="tensor 1 holds no values"):
            decode(handmade_frame([(2,), shape], np.zeros(2, "<f4").tobytes()))


def test_values_beyond_float32_are_refused_not_turned_into_inf():
    """The model is float32: a float64 of 1e300 passed a float64 finiteness check and became Inf."""
    for value in (1e300, -1e39):
        with pytest.raises(FrameError, match="NaN or Inf \\(as float32\\)"):
            decode(handmade_frame([(2,)], np.array([1.0, value], "<f8").tobytes(), dtype="<f8"))
    back = decode(handmade_frame([(2,)], np.array([1.0, 3e38], "<f8").tobytes(), dtype="<f8"))
    assert back.tensors[0].dtype == np.float32 and np.isfinite(back.tensors[0]).all()


def test_reader_stops_a_poisoned_stream_without_buffering_a_huge_claim():
    reader = FrameReader(max_payload=1024)
    with pytest.raises(FrameError, match="exceeds the limit of 1024"):
        reader.feed(encode(model_frame()))
    assert reader.pending_bytes == 0
    with pytest.raises(FrameError, match="already rejected"):
        reader.feed(b"more")


def test_encoder_refuses_what_the_decoder_would_refuse():
    with pytest.raises(FrameError, match="sender id"):
        encode(ModelFrame("", 0, 0, ()))
    with pytest.raises(FrameError, match="tensors exceed"):
        encode(ModelFrame("a", 0, 0, tuple(np.zeros(1) for _ in range(MAX_TENSORS + 1))))
    with pytest.raises(FrameError, match="cannot be sent"):
        encode(model_frame(), dtype="<i4")
    with pytest.raises(FrameError, match="tensor 1 holds no values"):
        encode(ModelFrame("a", 0, 0, (np.zeros(1), np.zeros((3, 0)))))


def test_a_tagged_frame_verifies_only_under_its_senders_key_and_readers_without_keys_skip_the_tag():
    from agents.wire import TAG_BYTES, tag

    frame = ModelFrame("d1h2", 3, 10, (np.ones((2, 2), dtype=np.float32),))
    body = encode(frame, tagged=True)
    sealed = tag(body, b"k" * 32)
    assert len(sealed) == len(body) + TAG_BYTES
    assert decode(sealed, keys={"d1h2": b"k" * 32}).sender == "d1h2"
    assert decode(sealed).round == 3  # the inspection service reads it without keys
    with pytest.raises(FrameError, match="forged or altered"):
        decode(sealed, keys={"d1h2": b"j" * 32})
    with pytest.raises(FrameError, match="no key shared with 'd1h2'"):
        decode(sealed, keys={"d1h3": b"k" * 32})
    with pytest.raises(FrameError, match="not authenticated"):
        decode(encode(frame), keys={"d1h2": b"k" * 32})
    with pytest.raises(FrameError, match="unknown flags"):
        decode(body[:5] + b"\x80" + body[6:])

"""The inspection service's pure parts, and scoring a defense against the ground truth."""

import numpy as np

from agents.wire import ModelFrame, encode
from controllers.features import fedavg_references
from controllers.inspector import RoundCollector, StreamAssembler, parse_tcp
from sdfl.scoring import ban_intervals, round_ends, score_detection

SHAPES = ((3, 2), (2,))


def frame_bytes(sender, round_, value):
    return encode(ModelFrame(sender, round_, 10, tuple(np.full(s, value, dtype=np.float32) for s in SHAPES)))


def test_streams_are_reassembled_in_order_despite_reordering_and_retransmission():
    data = frame_bytes("d1h1", 1, 0.5) + frame_bytes("d1h1", 2, 0.25)
    key = ("10.1.0.1", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assert assembler.feed(key, 999, b"", syn=True) == []
    segments = [(1000 + i, data[i:i + 40]) for i in range(0, len(data), 40)]
    order = [0, 2, 1, 1, 3] + list(range(4, len(segments)))  # 2 before 1, 1 twice
    frames = []
    for i in order:
        frames += assembler.feed(key, *segments[i])
    assert [(f.sender, f.round, float(f.tensors[0][0, 0])) for f in frames] == [("d1h1", 1, 0.5), ("d1h1", 2, 0.25)]
    assert assembler.rejections == []


def test_a_stream_that_is_not_model_frames_is_given_up_with_a_reason():
    assembler = StreamAssembler()
    key = ("10.1.0.3", 5, "10.1.0.2", 7000)
    assembler.feed(key, 0, b"", syn=True)
    assert assembler.feed(key, 1, b"GET / HTTP/1.1\r\n\r\n") == []
    assert assembler.feed(key, 19, frame_bytes("d1h3", 1, 1.0)) == []  # the stream stays rejected
    assert len(assembler.rejections) == 1 and "bad magic" in assembler.rejections[0]


def test_a_round_completes_when_every_local_sender_is_in_or_after_the_wait():
    collector = RoundCollector(["d1h1", "d1h2"], wait_s=1.5)
    collector.add(10.0, "d1h1", "d1h2", 1, np.ones(3), 10)
    collector.add(10.1, "d1h1", "d2h1", 1, np.zeros(3), 10)  # the same model to another: first copy kept
    collector.add(10.2, "d2h1", "d1h1", 1, np.full(3, 2.0), 30)  # a remote sender, received by d1h1
    assert collector.complete(10.3) == []
    collector.add(10.4, "d1h2", "d1h1", 1, np.ones(3), 10)
    assert collector.complete(10.4) == [1]
    assert sorted(collector.local_models(1)) == ["d1h1", "d1h2"]
    assert collector.received[1] == {"d1h2": {"d1h1"}, "d2h1": {"d1h1"}, "d1h1": {"d2h1", "d1h2"}}
    collector.add(11.0, "d2h2", "d1h2", 1, np.ones(3), 10)  # late copy of a finished round: still recorded
    assert "d2h2" in collector.received[1]["d1h2"]
    collector.add(12.0, "d1h1", "d1h2", 2, np.ones(3), 10)
    assert collector.complete(13.0) == []
    assert collector.complete(13.6) == [2]


def test_fedavg_references_are_where_each_node_starts_its_next_round():
    previous = {"a": (np.zeros(2), 10), "b": (np.ones(2), 30), "c": (np.full(2, 5.0), 10)}
    references = fedavg_references(previous, {"a": {"b"}, "b": {"a", "c"}}, ["a", "b", "d"])
    np.testing.assert_allclose(references["a"], [0.75, 0.75])  # (0 x 10 + 1 x 30) / 40
    np.testing.assert_allclose(references["b"], [1.6, 1.6])  # (0 x 10 + 1 x 30 + 5 x 10) / 50
    assert "d" not in references  # sent nothing last round: no starting point known


def test_mirrored_packets_are_parsed_without_ethernet_padding():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    packet = Ether() / IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=4, dport=7000, seq=9, flags="PA") / b"ab"
    assert parse_tcp(bytes(packet) + bytes(10)) == ("10.1.0.1", 4, "10.1.0.2", 7000, 9, False, b"ab")


def test_detection_is_scored_over_node_rounds_after_the_warm_up():
    nodes = ["a", "b", "c"]
    ends = round_ends([{"node": n, "round": r, "time": 10.0 * r + i} for r in range(1, 7)
                       for i, n in enumerate(nodes)], 6)
    assert ends == [12.0, 22.0, 32.0, 42.0, 52.0, 62.0]
    records = [{"type": "ban", "time": 35.0, "node": "a", "domain": 1, "origin": 1, "stream": "update",
                "score": 0.9, "evidence": [2, 3]},
               {"type": "ban", "time": 36.0, "node": "a", "domain": 2, "origin": 1, "stream": "update",
                "score": 0.9, "evidence": [2, 3]},
               {"type": "ban", "time": 50.0, "node": "c", "domain": 1, "origin": 1, "stream": "flow",
                "score": 0.7, "evidence": [2, 3]},
               {"type": "unban", "time": 53.0, "node": "c", "domain": 1}]
    intervals = ban_intervals(records)
    assert intervals == {"a": [(35.0, float("inf"))], "c": [(50.0, 53.0)]}
    truth = {("a", r): ["sign-flip"] for r in range(3, 7)}
    score = score_detection(truth, intervals, ends, nodes, {"a"}, 2, [r for r in records if r["type"] == "ban"])
    # a attacks rounds 3-6, banned from round 4 on: 3 TP, 1 FN; c banned in rounds 5 and 6: 2 FP.
    assert (score["precision"], score["recall"]) == (0.6, 0.75)
    assert score["false_ban_rate"] == 2 / 8 and score["honest_nodes_ever_banned"] == ["c"]
    assert score["time_to_ban_rounds_median"] == 1
    assert [b["node"] for b in score["bans"]] == ["a", "c"]  # the follow-up ban in domain 2 is no new decision
    assert score["by_kind"]["sign-flip"]["attackers_banned"] == ["a"]


def test_a_lost_mirrored_segment_costs_its_frame_only():
    data = frame_bytes("d1h1", 1, 0.5) + frame_bytes("d1h1", 2, 0.25) + frame_bytes("d1h1", 3, 0.125)
    key = ("10.1.0.1", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 999, b"", syn=True)
    segments = [(1000 + i, data[i:i + 2]) for i in range(0, len(data), 2)]
    frames = []
    for seq, payload in segments[:3] + segments[4:]:  # the 4th segment never reached the mirror
        frames += assembler.feed(key, seq, payload)
    assert [f.round for f in frames] == [2, 3]
    assert "resynchronising" in assembler.rejections[0]

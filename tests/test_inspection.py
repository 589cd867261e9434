"""The inspection service's pure parts, and scoring a defense against the ground truth."""

import socket
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.aggregation import Contribution, make_aggregator
from agents.wire import MAGIC, ModelFrame, encode
from controllers.inspector import (BURST, MAX_OUT_OF_ORDER, ROUND_LEAD, RoundCollector, StartRule, StreamAssembler,
                                  read_burst, start_references)
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
    assert assembler.unreadable == [(key, assembler.rejections[0].split(": ", 1)[1])]  # read whole: its sender's


def test_only_a_stream_read_whole_is_its_senders_fault():
    """Joined mid-stream (no SYN seen) or past a lost segment, bytes that fail to parse may be
    the mirror's doing: never held against the sender, and the stream is read on."""
    assembler = StreamAssembler()
    midway = ("10.1.0.3", 5, "10.1.0.2", 7000)
    assert assembler.feed(midway, 500, b"rest of some frame") == []
    lossy = ("10.1.0.1", 6, "10.1.0.2", 7000)
    assembler.feed(lossy, 0, b"", syn=True)
    assembler.feed(lossy, 1, frame_bytes("d1h1", 1, 0.5)[:10])
    for i in range(MAX_OUT_OF_ORDER + 1):  # a gap, then bytes that only look like a frame's start
        assembler.feed(lossy, 100 + 20 * i, (MAGIC + bytes(16)) if i == 0 else bytes(20))
    assert len(assembler.rejections) >= 2 and assembler.unreadable == []
    after = 100 + 20 * (MAX_OUT_OF_ORDER + 1)
    assert [f.round for f in assembler.feed(lossy, after, frame_bytes("d1h1", 2, 0.5))] == [2]
    assert [f.round for f in assembler.feed(midway, 518, frame_bytes("d1h3", 2, 0.5))] == [2]


def test_a_gap_the_mirror_never_fills_is_skipped_after_a_wait_not_after_rounds():
    """The receiver got the bytes the mirror lost, so nothing resends them: a stream that carries
    one frame a round must not hold its next frames behind that gap until it has held enough."""
    from controllers.inspector import GAP_WAIT_S

    key = ("10.1.0.1", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 999, b"", syn=True)
    frames, seq = [], 1000
    for round_, now in ((1, 10.0), (2, 10.0 + GAP_WAIT_S), (3, 10.0 + 2 * GAP_WAIT_S)):
        data = frame_bytes("d1h1", round_, 0.5)
        for at in range(0, len(data), 20):
            if (round_, at) != (2, 20):  # one segment of round 2's frame never reached the mirror
                frames += assembler.feed(key, seq + at, data[at:at + 20], now=now)
        seq += len(data)
    assert len(range(0, len(data), 20)) < MAX_OUT_OF_ORDER  # the count alone would hold round 3 too
    assert [f.round for f in frames] == [1, 3]
    assert "lost 20 mirrored bytes" in assembler.rejections[0] and assembler.unreadable == []


def test_a_retransmission_that_fills_the_gap_within_the_wait_loses_nothing():
    from controllers.inspector import GAP_WAIT_S

    key = ("10.1.0.1", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 999, b"", syn=True)
    data = frame_bytes("d1h1", 1, 0.5) + frame_bytes("d1h1", 2, 0.5)
    segments = [(1000 + at, data[at:at + 20]) for at in range(0, len(data), 20)]
    frames = []
    for i, (seq, payload) in enumerate(segments[1:]):
        frames += assembler.feed(key, seq, payload, now=10.0 + 0.01 * i)
    frames += assembler.feed(key, *segments[0], now=10.0 + GAP_WAIT_S / 2)  # resent within the wait
    assert [f.round for f in frames] == [1, 2] and assembler.rejections == []


def test_a_round_completes_when_every_local_sender_is_in_or_after_the_wait():
    collector = RoundCollector(["d1h1", "d1h2"], wait_s=1.5, stale_s=5.0, started=10.0)
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
    assert collector.complete(13.6) == []  # half the senders are no majority: round 2 is not reached
    assert collector.complete(15.5) == []  # d1h2 went silent at 10.4: stale from 15.4, round 2 reached now
    assert collector.complete(17.0) == [2]  # and complete a wait later, without it


def test_a_minority_sender_can_neither_drag_the_round_ahead_nor_hold_it_back():
    senders = ["d1h1", "d1h2", "d1h3"]
    collector = RoundCollector(senders, wait_s=1.0, stale_s=5.0, started=0.0)
    assert not collector.add(0.1, "d1h3", None, 4_000_000_000, np.ones(3), 10)  # far ahead: ignored
    assert collector.add(0.2, "d1h3", None, ROUND_LEAD, np.ones(3), 10)  # within the lead: kept, moves nothing
    assert collector.complete(0.5) == [] and collector.current(0.5) == 0
    for t, round_ in ((1.0, 1), (2.0, 2)):
        for node in senders[:2]:
            collector.add(t, node, None, round_, np.ones(3), 10)
    assert collector.complete(2.0) == []  # d1h3 sent no round 1 or 2: the rounds wait for it
    assert collector.complete(3.1) == [1, 2]  # the honest majority sets the pace
    collector.add(3.2, "d1h3", None, 1, np.ones(3), 10)  # and a laggard cannot rewind it
    assert collector.current(3.2) == 2 and collector.done_up_to == 2


def test_a_majority_whose_frames_the_mirror_lost_for_rounds_is_followed_again():
    """Frames of rounds 3-6 lost: the next ones lie beyond the lead, yet they tell how far their
    senders got, and the domain's round follows its honest majority again."""
    senders = ["d1h1", "d1h2", "d1h3"]
    collector = RoundCollector(senders, wait_s=1.0, stale_s=5.0, started=0.0)
    for t, round_ in ((1.0, 1), (2.0, 2)):
        for node in senders:
            collector.add(t, node, None, round_, np.ones(3), 10)
    assert collector.complete(2.0) == [1, 2]
    for node in senders:
        collector.add(3.0, node, None, 2 + ROUND_LEAD + 2, np.ones(3), 10)
    for node in senders:
        collector.add(3.5, node, None, 2 + ROUND_LEAD + 3, np.ones(3), 10)
    assert collector.current(3.5) == 2 + ROUND_LEAD + 3
    assert collector.complete(3.5) == [] and collector.complete(4.6) == [2 + ROUND_LEAD + 2, 2 + ROUND_LEAD + 3]


def test_fedavg_references_are_where_each_node_starts_its_next_round():
    previous = {"a": (np.zeros(2), 10), "b": (np.ones(2), 30), "c": (np.full(2, 5.0), 10)}
    references = start_references(previous, {"a": {"b"}, "b": {"a", "c"}}, ["a", "b", "d"], StartRule().aggregate())
    np.testing.assert_allclose(references["a"], [0.75, 0.75])  # (0 x 10 + 1 x 30) / 40
    # b's 30 is capped at twice the median count of its inputs (10), as its own FedAvg caps it:
    np.testing.assert_allclose(references["b"], [1.75, 1.75])  # (0 x 10 + 1 x 20 + 5 x 10) / 40
    assert "d" not in references  # sent nothing last round: no starting point known


def test_a_clipping_node_is_measured_from_where_its_own_rule_started_it():
    """Under centered clipping a node barely moves towards a far-off input; measured from the
    FedAvg mean, its honest step would look like a leap back (README: the false bans of
    FU-HST + centered clipping)."""
    rng = np.random.default_rng(0)
    previous = {f"n{i}": (rng.normal(size=6), 10) for i in range(4)} | {"far": (np.full(6, 50.0), 10)}
    received = {"n0": {"n1", "n2", "n3", "far"}}
    rule = StartRule("centered-clipping", f=1)
    reference = start_references(previous, received, ["n0"], rule.aggregate())["n0"]
    own, others = Contribution("n0", *previous["n0"]), [Contribution(n, *previous[n]) for n in sorted(received["n0"])]
    np.testing.assert_allclose(reference, make_aggregator("centered-clipping", 1)(own, others))
    fedavg = start_references(previous, received, ["n0"], StartRule().aggregate())["n0"]
    assert np.linalg.norm(reference - previous["n0"][0]) < np.linalg.norm(fedavg - previous["n0"][0]) / 3


def test_a_rule_nobody_can_replay_is_measured_from_the_fedavg_start_and_a_wrong_one_is_refused():
    previous = {"a": (np.zeros(2), 10), "b": (np.ones(2), 30)}
    fedavg = start_references(previous, {"a": {"b"}}, ["a"], StartRule().aggregate())["a"]
    for rule in (StartRule("wfagg", 1), StartRule("centered-clipping", 1, "bucketing")):
        np.testing.assert_allclose(start_references(previous, {"a": {"b"}}, ["a"], rule.aggregate())["a"], fedavg)
    assert StartRule.from_json(StartRule("median", 2, "nnm").to_json()) == StartRule("median", 2, "nnm")
    with pytest.raises(ValueError, match="unknown aggregator 'mean'"):
        StartRule("mean")
    with pytest.raises(ValueError, match="unknown pre-aggregation"):
        StartRule.from_json('{"aggregator": "median", "f": 1, "pre": "shuffle"}')


@pytest.mark.parametrize("rule, why", [('{"aggregator": "mean", "f": 1, "pre": "none"}', "unknown aggregator 'mean'"),
                                       ('{"aggregator": "median"}', "'f'"), ("median", "Expecting value")])
def test_the_inspection_service_refuses_a_rule_it_cannot_replay_naming_it(rule, why, capsys):
    from controllers.inspector import main

    with pytest.raises(SystemExit) as stop:
        main(["--network", "network.json", "--domain", "1", "--out", ".", "--keys", "keys.json", "--bounds", "{}",
              "--rule", rule])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--rule: " in err and why in err


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
    score = score_detection(truth, records, ends, nodes, {"a"}, warmup_rounds=2)
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


def test_honest_retransmissions_cut_anew_or_held_out_of_order_read_as_the_stream():
    """Linux may resend bytes re-cut (two segments in one, with new bytes after) and a held
    segment may overlap the one that fills its gap: all of it is the same stream."""
    data = frame_bytes("d1h1", 1, 0.5) + frame_bytes("d1h1", 2, 0.25)
    key = ("10.1.0.1", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 999, b"", syn=True)
    frames = assembler.feed(key, 1000, data[:30])
    frames += assembler.feed(key, 1000 + 50, data[50:90])  # ahead
    frames += assembler.feed(key, 1000 + 20, data[20:60])  # old, the gap, and bytes held ahead
    frames += assembler.feed(key, 1000 + 10, data[10:100])  # old, then new past what was read
    frames += assembler.feed(key, 1000 + 100, data[100:])
    assert [f.round for f in frames] == [1, 2] and assembler.conflicts == []
    assert assembler.rejections == []


@pytest.mark.parametrize("order", ["chaff first", "real first", "both held ahead"])
def test_two_versions_of_the_same_stream_bytes_are_a_conflict_against_the_sender(order):
    """The insertion attack: segments the receiver drops (a bad checksum, an old timestamp) carry
    an honest frame past the mirror, and the same sequence numbers carry the real one."""
    chaff, real = frame_bytes("d1h3", 5, 0.5), frame_bytes("d1h3", 5, -4.0)
    key = ("10.1.0.3", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 999, b"", syn=True)
    first, second = (chaff, real) if order != "real first" else (real, chaff)
    if order == "both held ahead":
        assembler.feed(key, 1010, first[10:])
        assembler.feed(key, 1010, second[10:])
        assert [f.round for f in assembler.feed(key, 1000, first[:10])] == [5]  # the gap filled: the first held
    else:
        assembler.feed(key, 1000, first)
        assembler.feed(key, 1000, second)
    assert len(assembler.conflicts) == 1 and assembler.conflicts[0][0] == key
    assert "two different versions" in assembler.conflicts[0][1] and assembler.unreadable == []
    # Read on, no blind spot: the next frame is read, and the next insertion is evidence again.
    after = 1000 + len(real)
    assert [f.round for f in assembler.feed(key, after, frame_bytes("d1h3", 6, 0.5))] == [6]
    assembler.feed(key, after, frame_bytes("d1h3", 6, -4.0))
    assert len(assembler.conflicts) == 2


def stream_of(frames_bytes, start, size=40):
    data = b"".join(frames_bytes)
    return [((start + i) % 2**32, data[i:i + size]) for i in range(0, len(data), size)]


def test_a_forged_syn_does_not_move_a_stream_but_a_new_connection_on_the_same_ports_does():
    key = ("10.1.0.3", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 999, b"", syn=True)
    frames = []
    for seq, payload in stream_of([frame_bytes("d1h3", 1, 0.5)], 1000):
        frames += assembler.feed(key, seq, payload)
    assembler.feed(key, 2**31, b"", syn=True)  # forged: the sender's bytes go on where they were
    for seq, payload in stream_of([frame_bytes("d1h3", 2, 0.25)], 1000 + len(frame_bytes("d1h3", 1, 0.5))):
        frames += assembler.feed(key, seq, payload)
    assembler.feed(key, 5_000_000, b"", syn=True)  # a new connection from the same port
    for seq, payload in stream_of([frame_bytes("d1h3", 3, 0.125)], 5_000_001):
        frames += assembler.feed(key, seq, payload)
    assert [f.round for f in frames] == [1, 2, 3] and assembler.conflicts == []


def test_a_stream_whose_bytes_keep_coming_from_behind_what_it_read_is_found_again():
    """Forged bytes far ahead (or a forged SYN the sender's own bytes never follow) leave the
    mirror reading what the receiver never took; the sender's real segments then all come from
    before what it read, and after a few the stream starts again from the earliest of them."""
    from controllers.inspector import MAX_UNCHECKED, RECHECK_BYTES

    key = ("10.1.0.3", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 999, b"", syn=True)
    forged = [frame_bytes("d1h3", 1, 0.5)] * (RECHECK_BYTES // len(frame_bytes("d1h3", 1, 0.5)) + 100)
    frames = []
    for seq, payload in stream_of(forged, 1000, size=1400):
        frames += assembler.feed(key, seq, payload)
    real = stream_of([frame_bytes("d1h3", r, -4.0) for r in range(1, 5)], 1000, size=20)
    assert len(real) > MAX_UNCHECKED + 1
    for seq, payload in real:
        frames += assembler.feed(key, seq, payload)
    assert [(f.round, float(f.tensors[0][0, 0])) for f in frames[-4:]] == [(r, -4.0) for r in range(1, 5)]
    assert any("behind what it read" in r for r in assembler.rejections)


def test_a_conflict_is_evidence_even_in_a_stream_joined_midway():
    key = ("10.1.0.3", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    data = frame_bytes("d1h3", 4, 0.5)
    assert len(assembler.feed(key, 500, data)) == 1  # no SYN seen: joined midway
    assembler.feed(key, 505, b"XXXX")
    assert [k for k, _ in assembler.conflicts] == [key]


def test_a_retransmission_from_further_back_than_is_kept_is_not_judged():
    from controllers.inspector import RECHECK_BYTES

    key = ("10.1.0.1", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, 2**32 - 1, b"", syn=True)  # the sequence numbers wrap on the way
    frames, seq, sent = [], 0, 0
    while sent <= RECHECK_BYTES + 1000:
        data = frame_bytes("d1h1", 1 + len(frames), 0.5)
        frames += assembler.feed(key, seq, data)
        seq, sent = (seq + len(data)) % 2**32, sent + len(data)
    assert assembler.feed(key, 0, b"X" * 10) == [] and assembler.conflicts == []  # too old to check
    assert assembler.feed(key, seq - 10, b"X" * 10) == [] and len(assembler.conflicts) == 1  # recent: checked


def _description():
    from topologies.layout import make_layout

    return make_layout(2, 3, "line").to_description("user", monitor=True)


def _segment(src, dst, seq, payload, sport=40000, flags="PA"):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    return bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=7000, seq=seq, flags=flags) / payload)


def test_a_local_sender_whose_whole_stream_is_no_model_frames_is_reported_for_it():
    """The garbage attack: weights of Inf that every receiver's decoder rejects, so no model to
    judge, and random bytes; each stream read from its SYN is a violation of its sender's."""
    from controllers.inspector import DomainInspection, FrameBounds
    from controllers.reports import ReportChannel

    key = bytes(32)
    inspection = DomainInspection(_description(), 1, FrameBounds(SHAPES, last_round=10, max_samples=100),
                                  wait_s=1.0, baseline_rounds=2, channel=ReportChannel(key), started=0.0)
    infinite = encode(ModelFrame("d1h3", 1, 10, tuple(np.full(s, np.inf, np.float32) for s in SHAPES)))
    for i, (src, payload) in enumerate([("10.1.0.3", infinite), ("10.1.0.2", bytes(range(200))),
                                        ("10.2.0.1", bytes(range(200)))]):  # the last: not this domain's
        inspection.segment(0.5, _segment(src, "10.1.0.1", 99, b"", sport=43000 + i, flags="S"))
        inspection.segment(0.5, _segment(src, "10.1.0.1", 100, payload, sport=43000 + i))
    for node, ip in (("d1h1", "10.1.0.1"), ("d1h2", "10.1.0.2"), ("d1h3", "10.1.0.3")):
        inspection.segment(1.0, _segment(ip, "10.2.0.1", 1, frame_bytes(node, 1, 0.5), sport=42000))
    [report] = [ReportChannel(key, seq=0).open(sealed) for sealed in inspection.reports(1.0)]
    assert sorted(report.violations) == ["d1h2", "d1h3"]
    assert "NaN or Inf" in report.violations["d1h3"][0] and "bad magic" in report.violations["d1h2"][0]
    assert all(why.startswith("sent bytes that are no model frame") for v in report.violations.values() for why in v)


def test_an_insertion_attack_is_reported_against_its_sender():
    from controllers.inspector import DomainInspection, FrameBounds
    from controllers.reports import ReportChannel

    key = bytes(32)
    inspection = DomainInspection(_description(), 1, FrameBounds(SHAPES, last_round=10, max_samples=100),
                                  wait_s=1.0, baseline_rounds=2, channel=ReportChannel(key), started=0.0)
    inspection.segment(0.5, _segment("10.1.0.3", "10.1.0.1", 99, b"", flags="S"))
    inspection.segment(0.5, _segment("10.1.0.3", "10.1.0.1", 100, frame_bytes("d1h3", 1, 0.5)))
    inspection.segment(0.5, _segment("10.1.0.3", "10.1.0.1", 100, frame_bytes("d1h3", 1, -4.0)))
    report = ReportChannel(key, seq=0).open(inspection.reports(0.6)[0])
    assert list(report.violations) == ["d1h3"] and "two different versions" in report.violations["d1h3"][0]


def test_hostile_frames_are_evidence_against_their_sender_and_never_stop_the_inspection():
    from controllers.inspector import DomainInspection, FrameBounds
    from controllers.reports import ReportChannel

    key = bytes(32)
    bounds = FrameBounds(SHAPES, last_round=10, max_samples=100)
    inspection = DomainInspection(_description(), 1, bounds, wait_s=1.0, baseline_rounds=2,
                                  channel=ReportChannel(key), started=0.0)
    hostile = [
        encode(ModelFrame("d1h3", 1, 10, ())),  # no tensors, to an address that is no host
        encode(ModelFrame("d1h3", 4_000_000_000, 10, tuple(np.ones(s, np.float32) for s in SHAPES))),
        encode(ModelFrame("d1h1", 2, 10, tuple(np.ones(s, np.float32) for s in SHAPES))),  # not its name
        encode(ModelFrame("d1h3", 2, 10**9, tuple(np.ones(s, np.float32) for s in SHAPES))),
    ]
    for i, data in enumerate(hostile):
        inspection.segment(0.5, _segment("10.1.0.3", "10.1.0.99", 1, data, sport=41000 + i))
    inspection.segment(0.5, b"\x00" * 10)  # not even Ethernet: counted, not raised
    for node, ip in (("d1h1", "10.1.0.1"), ("d1h2", "10.1.0.2"), ("d1h3", "10.1.0.3")):
        inspection.segment(1.0, _segment(ip, "10.2.0.1", 1, frame_bytes(node, 1, 0.5), sport=42000))
    [sealed] = inspection.reports(1.0)
    report = ReportChannel(key, seq=0).open(sealed)
    assert report.round == 1 and sorted(report.features) == []  # round 1 has no start to measure from
    assert list(report.violations) == ["d1h3"] and len(report.violations["d1h3"]) == 4
    assert [why.split()[0] for why in report.violations["d1h3"]] == ["0", "round", "names", "claims"]
    assert inspection.counts.unparsed == 1 and inspection.counts.violations == 4
    assert inspection.collector.done_up_to == 1  # the honest round went through


def test_a_report_says_which_models_each_measured_sender_started_its_round_from():
    """What the controller tells an echo of a since-banned sender's model by (controllers.defense)."""
    from controllers.inspector import DomainInspection, FrameBounds
    from controllers.reports import ReportChannel

    key = bytes(32)
    inspection = DomainInspection(_description(), 1, FrameBounds(SHAPES, last_round=10, max_samples=100),
                                  wait_s=1.0, baseline_rounds=2, channel=ReportChannel(key), started=0.0)
    received_in_round_1 = {"d1h1": ["d1h2"], "d1h2": ["d1h1", "d1h3", "d2h1"], "d1h3": ["d1h2"]}
    for round_ in (1, 2):
        for receiver, senders in received_in_round_1.items():
            for sender in senders:
                tensors = tuple(np.full(s, 0.1 * round_, np.float32) for s in SHAPES)
                inspection.frame(float(round_), sender, receiver, ModelFrame(sender, round_, 10, tensors))
    channel = ReportChannel(key, seq=0)
    first, report = [channel.open(sealed) for sealed in inspection.reports(2.0)]
    assert (first.round, first.inputs) == (1, {})  # round 1 has no start to measure from
    assert report.round == 2 and sorted(report.features) == ["d1h1", "d1h2", "d1h3"]
    assert report.inputs == received_in_round_1  # the models of round 1 each one was seen to receive


def test_a_wake_up_reads_the_queued_burst_at_once_and_no_more_than_a_burst():
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with reader, writer:
        reader.setblocking(False)
        assert read_burst(reader, 0.05) == []  # nothing queued: the wait times out
        for i in range(BURST + 3):
            writer.send(b"frame %d" % i)
        first = read_burst(reader, 0.05)
        assert len(first) == BURST and first[0] == b"frame 0"
        started = time.monotonic()
        assert read_burst(reader, 5.0) == [b"frame %d" % i for i in range(BURST, BURST + 3)]
        assert time.monotonic() - started < 5.0  # the queue's end ends the burst, not the wait


def test_what_arrives_while_the_reader_gathers_comes_in_the_same_burst():
    """One wake-up per burst, not per segment: the datapath trickles a round's frames in."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with reader, writer:
        reader.setblocking(False)
        writer.send(b"first")
        pauses = []

        def trickle(seconds):
            pauses.append(seconds)
            writer.send(b"second")
            writer.send(b"third")

        assert read_burst(reader, 0.05, gather_s=0.005, sleep=trickle) == [b"first", b"second", b"third"]
        assert pauses == [0.005]
        assert read_burst(reader, 0.05, sleep=trickle) == []  # no frame, no gathering


def test_violations_are_reported_at_once_even_while_no_round_completes():
    """A round short of a sender (the garbage sender's own models never decode) may wait
    long: the evidence against that sender does not wait with it."""
    from controllers.inspector import DomainInspection, FrameBounds
    from controllers.reports import ReportChannel

    key = bytes(32)
    inspection = DomainInspection(_description(), 1, FrameBounds(SHAPES, last_round=10, max_samples=100),
                                  wait_s=30.0, baseline_rounds=2, channel=ReportChannel(key), started=0.0)
    inspection.frame(1.0, "d1h1", "d1h2", ModelFrame("d1h1", 1, 10, tuple(np.ones(s, np.float32) for s in SHAPES)))
    inspection.unreadable(1.0, "d1h3", "payload holds NaN or Inf")
    [report] = [ReportChannel(key, seq=0).open(sealed) for sealed in inspection.reports(1.5)]
    assert (report.round, report.features) == (0, {}) and list(report.violations) == ["d1h3"]
    assert inspection.reports(2.0) == []  # reported once


def test_the_mirror_filter_is_tcpdumps_compilation_of_its_expression():
    import shutil
    import subprocess

    from controllers.inspector import MIRROR_FILTER, MIRROR_FILTER_EXPRESSION

    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (scripts/install.sh installs it)")
    compiled = subprocess.run(["tcpdump", "-dd", "-y", "EN10MB", MIRROR_FILTER_EXPRESSION], capture_output=True,
                              text=True, check=True).stdout
    ops = [tuple(int(field, 0) for field in line.strip(" {},").split(",")) for line in compiled.splitlines()]
    assert tuple(ops) == MIRROR_FILTER


@pytest.mark.mininet
def test_the_mirror_socket_takes_segments_that_open_a_stream_or_carry_bytes_and_nothing_else():
    """On the loopback device, as the monitor port: a receiver's ACK, a FIN and a UDP datagram
    never reach the service; a SYN and a data segment do."""
    import struct as struct_

    from controllers.inspector import ETH_P_ALL, attach_mirror_filter, read_burst

    def segment(flags, payload, port):
        ip = struct_.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0,
                          socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
        tcp = struct_.pack("!HHIIBBHHH", port, 7, 1, 0, 5 << 4, flags, 0, 0, 0)
        return bytes(12) + b"\x08\x00" + ip + tcp + payload

    udp_ip = struct_.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 0, 0, 64, 17, 0, bytes(4), bytes(4))
    udp = bytes(12) + b"\x08\x00" + udp_ip + bytes(16)
    sent = {"ack": segment(0x10, b"", 61001), "fin": segment(0x11, b"", 61002), "udp": udp,
            "syn": segment(0x02, b"", 61003), "data": segment(0x18, b"model bytes", 61004)}
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as mirror, \
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as host:
        attach_mirror_filter(mirror)
        mirror.bind(("lo", 0))
        mirror.setblocking(False)
        host.bind(("lo", 0))
        for frame in sent.values():
            host.send(frame)
        received, deadline = [], time.monotonic() + 2.0
        while time.monotonic() < deadline and len([f for f in received if f in sent.values()]) < 2:
            received += read_burst(mirror, 0.1)
    assert sorted(name for name, frame in sent.items() if frame in received) == ["data", "syn"]


@pytest.mark.mininet
def test_an_insertion_the_receivers_kernel_drops_is_caught_on_the_wire(scratch_network):
    """The attack end to end on real kernels: a sender injects its connection's next bytes with a
    bad TCP checksum (an honest-looking frame), then sends its real frame through the socket. The
    receiver's kernel drops the first and takes the second; the mirror saw both, and the
    assembler names the conflict instead of reading the honest-looking frame as the sender's."""
    import subprocess
    import sys

    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from controllers.inspector import ETH_P_ALL
    from controllers.packets import parse_tcp_segment

    namespace, outside, inside, port = "sdfl-insertion", "insout0", "insin0", 7312
    ip = scratch_network.host(namespace, outside, inside, "10.250.1.1", "10.250.1.2")
    subprocess.run(["ethtool", "-K", outside, "tx", "off"], check=True, capture_output=True)
    chaff, real = frame_bytes("d1h3", 5, 0.5), frame_bytes("d1h3", 5, -4.0)
    assert len(chaff) == len(real)
    receiver = None
    try:
        inside_mac = subprocess.run(ip + ["-o", "link", "show", inside], check=True, capture_output=True,
                                    text=True).stdout.split("link/ether ")[1].split()[0]
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c",
             "import socket, sys\n"
             f"s = socket.create_server(('10.250.1.2', {port}))\nprint('ready', flush=True)\n"
             f"c, _ = s.accept()\nc.settimeout(10)\ndata = b''\nwhile len(data) < {len(real)}:\n"
             "    data += c.recv(65536)\nsys.stdout.write(data.hex())"], stdout=subprocess.PIPE, text=True)
        assert receiver.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as mirror:
            mirror.bind((outside, 0))
            mirror.settimeout(2)
            sender = socket.create_connection(("10.250.1.2", port), timeout=5)
            sport = sender.getsockname()[1]
            mirrored, isn, their_isn = [], None, None
            while isn is None or their_isn is None:
                packet = mirror.recv(65535)
                mirrored.append(packet)
                segment = parse_tcp_segment(packet)
                if segment is not None and segment.syn and segment.sport == sport:
                    isn = segment.seq
                elif segment is not None and segment.syn and segment.dport == sport:
                    their_isn = segment.seq
            forged = (Ether(dst=inside_mac) / IP(src="10.250.1.1", dst="10.250.1.2")
                      / TCP(sport=sport, dport=port, seq=isn + 1, ack=their_isn + 1, flags="PA", chksum=0xDEAD) / chaff)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as injector:
                injector.bind((outside, 0))
                injector.send(bytes(forged))
            sender.sendall(real)
            taken = bytes.fromhex(receiver.communicate(timeout=15)[0])
            sender.close()
            try:
                while True:
                    mirrored.append(mirror.recv(65535))
            except TimeoutError:
                pass
    finally:
        if receiver is not None and receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert taken == real  # the receiver's kernel dropped the forged segment
    assembler, frames = StreamAssembler(), []
    for packet in mirrored:
        segment = parse_tcp_segment(packet)
        if segment is not None and segment.sport == sport:
            frames += assembler.feed((segment.src, segment.sport, segment.dst, segment.dport), segment.seq,
                                     segment.payload, segment.syn)
    assert [float(f.tensors[0][0, 0]) for f in frames] == [0.5]  # the mirror read the forged frame first ...
    assert assembler.conflicts  # ... and then the real one over it: named, not missed


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_any_honest_delivery_of_a_stream_reads_every_frame_and_finds_no_conflict(data):
    """Whatever an honest TCP does to a stream on its way (segments cut anywhere, reordered within
    what the assembler holds, resent whole or re-cut with new bytes after), the mirror reads the
    sender's frames, in order, and never sees two versions of a byte: no honest sender is ever
    reported for a conflict."""
    frames = [frame_bytes("d1h1", r, r / 8) for r in range(1, data.draw(st.integers(1, 5)) + 1)]
    stream = b"".join(frames)
    isn = data.draw(st.integers(0, 2**32 - 1))  # sequence numbers may wrap on the way
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=20)))
    segments = [(a, b) for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    order = list(range(len(segments)))
    for i in range(len(order) - 1):  # neighbours swapped: reordering within a few segments
        if data.draw(st.booleans()):
            order[i], order[i + 1] = order[i + 1], order[i]
    deliveries = []
    for i in order:
        deliveries.append(segments[i])
        if data.draw(st.integers(0, 3)) == 0:  # resent: the same bytes, or a range re-cut around them
            a = data.draw(st.integers(0, segments[i][0]))
            b = data.draw(st.integers(segments[i][1], len(stream)))
            deliveries.append((a, b))
    key = ("10.1.0.1", 40000, "10.1.0.2", 7000)
    assembler = StreamAssembler()
    assembler.feed(key, isn, b"", syn=True)
    got = []
    for a, b in deliveries:
        got += assembler.feed(key, (isn + 1 + a) % 2**32, stream[a:b])
    assert assembler.conflicts == [] and assembler.unreadable == []
    assert [f.round for f in got] == list(range(1, len(frames) + 1))


def test_an_inspection_port_the_kernel_cannot_coalesce_is_reported_and_read_segment_by_segment():
    """Coalescing (veth GRO) only saves the inspection reads: a kernel without it gets the port
    and a note saying so; a port that cannot be made at all stops the run with the command."""
    import subprocess

    from topologies.builder import CapabilityError, attach_monitors, coalescing_commands
    from topologies.layout import make_layout

    description = make_layout(2, 2).to_description(monitor=True)
    ran = []

    def no_gro(domain, argv):
        ran.append(argv)
        failed = argv[:3] == ["ethtool", "-K", "d1s1-mon"] and "gro" in argv
        return subprocess.CompletedProcess(argv, 1 if failed else 0, "", "Operation not supported" if failed else "")

    notes = attach_monitors(description, no_gro)
    assert len(notes) == 1 and "domain 1" in notes[0] and "Operation not supported" in notes[0]
    assert coalescing_commands("d2s1-mon")[1] in ran  # domain 2 coalesces

    def no_veth(domain, argv):
        return subprocess.CompletedProcess(argv, 2 if "veth" in argv else 0, "", "unknown type veth")

    with pytest.raises(CapabilityError, match="domain 1's inspection port: ip link add .* unknown type veth"):
        attach_monitors(description, no_veth)


@pytest.mark.mininet
def test_the_inspection_port_coalesces_a_streams_segments_but_never_a_forged_one(scratch_network):
    """The inspection port as :func:`attach_monitors` makes it (a veth, GRO on the end the service
    reads): a frame sent as in-order segments reaches the reader in fewer packets that read as
    the frame; a segment with a bad checksum (an insertion) is merged with nothing, and the
    assembler names the conflict as it does without coalescing."""
    import subprocess

    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from controllers.inspector import ETH_P_ALL, attach_mirror_filter, read_burst
    from controllers.packets import parse_tcp_segment
    from topologies.builder import coalescing_commands

    switch_end, inspection_end = "sdflgro0", "sdflgro1"
    honest = encode(ModelFrame("d1h1", 3, 10, (np.full((40, 50), 0.5, dtype=np.float32),)))
    forged = encode(ModelFrame("d1h1", 3, 10, (np.full((40, 50), -4.0, dtype=np.float32),)))
    isn, mss = 1000, 1400

    def segments(sport, ip_id, checksum=None, data=honest):
        """A SYN, then ``data`` in order as a TCP would send it (DF, incrementing IP ids)."""
        def packet(n, seq, flags, payload=b""):
            return bytes(Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
                         / IP(src="10.1.0.1", dst="10.1.0.2", id=ip_id + n, flags="DF")
                         / TCP(sport=sport, dport=7000, seq=seq, ack=1, flags=flags, window=65535,
                               chksum=checksum) / payload)
        return [packet(0, isn, "S")] + [packet(1 + i // mss, isn + 1 + i, "A", data[i:i + mss])
                                        for i in range(0, len(data), mss)]

    read_stream, insertion = segments(40001, 100), segments(40002, 200)
    bad_checksum = segments(40002, 300, checksum=0xDEAD, data=forged)[1]  # the receiver's TCP drops it
    scratch_network.claim(links=[switch_end])
    subprocess.run(["ip", "link", "add", switch_end, "type", "veth", "peer", "name", inspection_end],
                   check=True, capture_output=True)
    for command in [["ethtool", "-K", switch_end, "tx", "off"], ["ip", "link", "set", switch_end, "up"],
                    ["ip", "link", "set", inspection_end, "up"], *coalescing_commands(inspection_end)]:
        subprocess.run(command, check=True, capture_output=True)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as mirror, \
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as switch:
        attach_mirror_filter(mirror)
        mirror.bind((inspection_end, 0))
        mirror.setblocking(False)
        switch.bind((switch_end, 0))
        for packet in [*read_stream, insertion[0], bad_checksum, *insertion[1:]]:
            switch.send(packet)
        received, burst = [], read_burst(mirror, 2.0)
        while burst:
            received += burst
            burst = read_burst(mirror, 0.5)
    by_stream = {}
    for packet in received:
        segment = parse_tcp_segment(packet)
        by_stream.setdefault(segment.sport, []).append(segment)
    assembler, frames = StreamAssembler(), {}
    for sport, stream in by_stream.items():
        for segment in stream:
            frames.setdefault(sport, []).extend(assembler.feed(
                (segment.src, segment.sport, segment.dst, segment.dport), segment.seq, segment.payload, segment.syn))
    assert len(by_stream[40001]) < len(read_stream)  # coalesced ...
    assert [encode(f) for f in frames[40001]] == [honest]  # ... and read as the frame
    assert any(s.payload == forged[:mss] for s in by_stream[40002])  # the forged segment on its own
    assert [key[1] for key, _ in assembler.conflicts] == [40002]


@pytest.mark.mininet
def test_sdfl_check_probes_coalescing_on_a_veth_it_removes():
    """``sdfl check``'s probe: this machine's kernel coalesces on a veth (the test above needs it
    too), and the throw-away pair is gone afterwards."""
    from topologies.builder import coalescing_available

    assert coalescing_available()
    assert not [name for _, name in socket.if_nameindex() if name.startswith("sdflp")]


def _packet_socket(bound: str, process: str, send_buffer: int) -> str:
    """A line of ``ss -0 -m -p``."""
    return (f"p_raw 0      0      {bound}      *     users:((\"{process}\",pid=7,fd=80)) "
            f"skmem:(r0,rb212992,t0,tb{send_buffer},f0,w0,o0,bl0,d0)")


SS_PACKET_SOCKETS = "\n".join([
    "Netid Recv-Q Send-Q Local Address:Port Peer Address:PortProcess",
    _packet_socket("[ETH_P_ALL]:d1s1-eth1", "ovs-vswitchd", 212992),  # a port's receiving socket
    _packet_socket("[0]:*", "tcpdump", 1000),
    _packet_socket("[0]:*", "ovs-vswitchd", 4194304),
])


def test_the_datapaths_send_buffer_is_that_of_its_unbound_packet_socket_else_the_default_it_will_get(monkeypatch):
    """ovs-vswitchd receives on a socket per port and sends through one bound to no protocol."""
    import subprocess

    from topologies import builder

    listing = SS_PACKET_SOCKETS
    monkeypatch.setattr(builder.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, listing, ""))
    assert builder.datapath_send_buffer() == 4194304
    listing = SS_PACKET_SOCKETS.splitlines()[0]
    assert builder.datapath_send_buffer() == int(open("/proc/sys/net/core/wmem_default").read())


@pytest.mark.parametrize("buffer, status", [(212992, "warn"), (16 * 1024 * 1024, "ok")])
def test_sdfl_check_warns_of_a_send_buffer_the_mirrors_bursts_overflow_and_says_how_to_grow_it(
        monkeypatch, buffer, status):
    from sdfl import environment
    from topologies import builder

    monkeypatch.setattr(builder, "kernel_datapath_available", lambda: False)
    monkeypatch.setattr(builder, "datapath_send_buffer", lambda: buffer)
    monkeypatch.setattr(builder, "coalescing_available", lambda: True)
    check = next(c for c in environment.check_ovs() if c.name == "OVS send buffer")
    assert check.status == status and f"{buffer:,} bytes" in check.detail
    assert ("net.core.wmem_default=16777216" in check.fix and "ovs-ctl restart" in check.fix) == (status == "warn")


def test_a_host_opening_streams_without_end_forgets_its_own_oldest_and_nobody_elses():
    """A SYN flood with fresh source ports, each a half-open stream: what it costs is bounded, and
    its own stream in use, like an honest host's, is still read."""
    from controllers.inspector import MAX_STREAMS_PER_SOURCE

    assembler = StreamAssembler()
    honest, attacker = ("10.1.0.1", 40000, "10.1.0.2", 7000), ("10.1.0.3", 40000, "10.1.0.2", 7000)
    data = {key: frame_bytes(key[0][-1], 1, 0.5) for key in (honest, attacker)}
    frames = []
    for key in (honest, attacker):
        assembler.feed(key, 999, b"", syn=True)
        frames += assembler.feed(key, 1000, data[key][:20])
    for port in range(1024, 1024 + 20 * MAX_STREAMS_PER_SOURCE):
        assembler.feed(("10.1.0.3", port, "10.1.0.2", 7000), port * 7, b"", syn=True)
        if port % 16 == 0:  # the flooder's own model stream stays in use meanwhile
            assembler.feed(attacker, 1000 + 20, data[attacker][20:20])
    for key in (honest, attacker):
        frames += assembler.feed(key, 1020, data[key][20:])
    assert sorted(f.sender for f in frames) == ["1", "3"]
    assert sum(k[0] == "10.1.0.3" for k in assembler.streams) == MAX_STREAMS_PER_SOURCE

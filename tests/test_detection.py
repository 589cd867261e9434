"""FU-HST's pure parts: feature extraction and the decision core, on a fake clock, no switch."""

import numpy as np
import pytest

from controllers.coordination import MessageType, Stream
from controllers.defense import Ban, DefenseConfig, DomainDefense, Log, Send, Unban
from controllers.detector import MAX_BAR, STRONG_SHARE, STRONG_WEIGHT, Evidence, StreamDetector, ThresholdStream
from controllers.features import (
    FLOW_FEATURES,
    HONEST_UPDATE_SPREAD,
    UPDATE_FEATURES,
    UpdateFeatures,
    beyond_honest_spread,
    excess_over_normal,
    flow_features,
    log_scaled,
)
from controllers.halfspace import BatchHalfSpaceTrees
from topologies.layout import make_layout

ZERO = {"packets": 0, "bytes": 0, "reply_packets": 0, "reply_bytes": 0, "flows_total": 0, "distinct_dsts": 0,
        "distinct_dst_ports": 0, "packet_ins": 0, "dropped_packets": 0, "overflow_packets": 0, "arp_packets": 0}


def counters(**values):
    return {**ZERO, **values}


def test_flow_features_are_rates_between_polls_scaled_into_the_unit_interval():
    before = counters(packets=100, bytes=100_000, flows_total=3, packet_ins=3)
    after = counters(packets=300, bytes=300_000, flows_total=5, packet_ins=5, distinct_dsts=2, distinct_dst_ports=2)
    features = flow_features(before, after, seconds=2.0)
    assert set(features) == set(FLOW_FEATURES) and all(0.0 <= v <= 1.0 for v in features.values())
    assert features["packet_rate"] == pytest.approx(log_scaled(100, FLOW_FEATURES["packet_rate"]))
    assert features["byte_rate"] == pytest.approx(log_scaled(100_000, FLOW_FEATURES["byte_rate"]))
    assert features["new_flow_rate"] == pytest.approx(log_scaled(1, FLOW_FEATURES["new_flow_rate"]))
    flood = flow_features(before, counters(packets=10**7, bytes=10**10), seconds=1.0)
    assert flood["packet_rate"] == 1.0 and flood["byte_rate"] == 1.0
    assert flow_features(after, before, 1.0)["packet_rate"] == 0.0  # counters reset: not negative
    with pytest.raises(ValueError, match="apart in time"):
        flow_features(before, after, 0.0)


def test_an_arp_flood_is_packets_its_sender_initiated():
    flood = flow_features(counters(), counters(arp_packets=100_000), seconds=1.0)
    assert flood["packet_rate"] == 1.0


def test_a_hosts_replies_are_not_counted_as_its_own_traffic():
    """The victim of a scan answers every probe with a reset: that is not scanning."""
    before = counters(packets=100, bytes=10_000)
    answering = flow_features(before, counters(packets=3200, bytes=200_000, reply_packets=3000, reply_bytes=180_000),
                              seconds=1.0)
    quiet = flow_features(before, counters(packets=200, bytes=20_000), seconds=1.0)
    assert answering["packet_rate"] == quiet["packet_rate"] and answering["byte_rate"] == quiet["byte_rate"]


def federation(rounds, flipper_scale=None, attack_from=3, seed=0):
    """Four senders of one domain stepping along a shared direction; from ``attack_from`` on
    d1h4 publishes ``start - scale x update``. Returns the last round's update features."""
    rng = np.random.default_rng(seed)
    tracker = UpdateFeatures(baseline_rounds=2)
    model = rng.normal(0, 1, 200)
    direction = rng.normal(0, 0.05, 200)
    names = ["d1h1", "d1h2", "d1h3", "d1h4"]
    features = None
    for round_ in range(1, rounds + 1):
        start = model.copy()
        models = {n: start + direction + rng.normal(0, 0.01, 200) for n in names}
        if flipper_scale is not None and round_ >= attack_from:
            models["d1h4"] = start - flipper_scale * (models["d1h4"] - start)
        features = tracker.round_features(models, {n: start for n in names})
        model = np.median(np.stack(list(models.values())), axis=0)
    return features


def test_update_features_single_out_a_sign_flipper_without_its_word():
    features = federation(3, flipper_scale=4.0)
    assert set(features) == {"d1h1", "d1h2", "d1h3", "d1h4"}
    assert all(set(f) == set(UPDATE_FEATURES) and all(0.0 <= v <= 1.0 for v in f.values()) for f in features.values())
    honest, flipper = features["d1h1"], features["d1h4"]
    assert all(value < 0.05 for value in honest.values())  # normal sits at the zero corner
    assert flipper["off_norm"] == pytest.approx(np.log(2) / np.log(10), abs=0.05)  # 4x its usual size, 2x past the band
    assert flipper["off_home"] > 0.9  # it went against where it has always gone; the others did not


def test_a_mild_flip_is_off_home_though_its_size_is_usual():
    honest, flipper = (federation(4, flipper_scale=0.5)[n] for n in ("d1h1", "d1h4"))
    assert flipper["off_home"] > 0.9 > 0.05 > honest["off_home"]
    assert flipper["off_norm"] < 0.01  # half its usual size is within the usual band


def test_flippers_are_off_home_even_when_half_of_a_domains_senders_flip():
    rng = np.random.default_rng(5)
    tracker = UpdateFeatures(baseline_rounds=2)
    start, names = np.zeros(100), ["d1h1", "d1h2", "d1h3", "d1h4"]
    homes = {n: rng.normal(0, 1, 100) + 2 * np.ones(100) for n in names}  # non-IID, with a shared part
    for round_ in range(1, 5):
        flip = {n: -1 if round_ >= 3 and n in ("d1h3", "d1h4") else 1 for n in names}
        models = {n: start + flip[n] * (homes[n] + rng.normal(0, 0.3, 100)) for n in names}
        features = tracker.round_features(models, {n: start for n in names})
    assert min(features[n]["off_home"] for n in ("d1h3", "d1h4")) > 0.8
    assert max(features[n]["off_home"] for n in ("d1h1", "d1h2")) < 0.05


def test_a_flip_of_an_update_orthogonal_to_the_consensus_is_still_off_home():
    """A non-IID node's honest update can be orthogonal to where the federation goes; flipping it
    changes nothing against the consensus, but it now points away from the node's own past."""
    rng = np.random.default_rng(4)
    tracker = UpdateFeatures(baseline_rounds=2)
    shared, own = np.zeros(100), np.zeros(100)
    shared[:50], own[50:] = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    start, names = np.zeros(100), ["d1h1", "d1h2", "d1h3", "d1h4"]
    for round_ in range(1, 6):
        models = {n: start + shared + rng.normal(0, 0.1, 100) for n in names[:3]}
        models["d1h4"] = start + (1 if round_ < 3 else -1) * (own + rng.normal(0, 0.1, 100))
        features = tracker.round_features(models, {n: start for n in names})
    assert features["d1h4"]["off_home"] > 0.45 and all(features[n]["off_home"] < 0.05 for n in names[:3])


def test_a_senders_usual_size_is_its_own_and_an_attack_never_becomes_usual():
    tracker = UpdateFeatures(baseline_rounds=2)
    start = np.zeros(50)
    unit = np.ones(50) / np.sqrt(50)
    sizes = {"d1h1": 1.0, "d1h2": 1.0, "d1h3": 1.0, "d1h4": 0.2}  # d1h4's shard makes small updates
    for _ in range(2):
        features = tracker.round_features({n: start + s * unit for n, s in sizes.items()}, {n: start for n in sizes})
    assert features["d1h4"]["off_norm"] == 0.0
    features = tracker.round_features({n: start + s * unit * (1.8 if n == "d1h4" else 1) for n, s in sizes.items()},
                                      {n: start for n in sizes})
    assert features["d1h4"]["off_norm"] == 0.0  # honest sizes drift by up to 2x over a run
    for _ in range(5):  # d1h4 now sends five times its usual size, round after round
        features = tracker.round_features({n: start + s * unit * (5 if n == "d1h4" else 1) for n, s in sizes.items()},
                                          {n: start for n in sizes})
        assert features["d1h4"]["off_norm"] == pytest.approx(np.log(5 / 2) / np.log(10))


def normal_point(rng):
    return {"a": 0.2 + 0.05 * rng.random(), "b": 0.7 + 0.05 * rng.random()}


def test_warm_up_learns_then_a_calibrated_threshold_flags_what_is_far_from_normal():
    rng = np.random.default_rng(1)
    detector = StreamDetector(("a", "b"), window_size=10, seed=3)
    verdicts = [detector.observe(normal_point(rng), warming_up=True) for _ in range(40)]
    assert all(v.warming_up and not v.anomalous and v.threshold is None for v in verdicts)
    normal = [detector.observe(normal_point(rng), warming_up=False) for _ in range(100)]
    assert detector.threshold is not None and all(v.threshold == detector.threshold for v in normal)
    assert sum(v.anomalous for v in normal) <= 3
    far = detector.observe({"a": 0.95, "b": 0.05}, warming_up=False)
    assert far.anomalous and far.score > detector.threshold


def test_the_detector_never_learns_from_what_it_flags():
    rng = np.random.default_rng(2)
    detector = StreamDetector(("a", "b"), window_size=10, seed=3)
    for i in range(60):
        detector.observe(normal_point(rng), warming_up=i < 40)
    learned = detector.learned
    attack = {"a": 0.95, "b": 0.05}
    verdicts = [detector.observe(attack, warming_up=False) for _ in range(200)]
    assert all(v.anomalous for v in verdicts)  # still anomalous after 200 tries: not learned
    assert detector.learned == learned


@pytest.mark.parametrize(("n_trees", "height", "window_size"), [(50, 6, 8), (25, 8, 20), (3, 2, 4), (1, 1, 1)])
def test_the_batched_trees_score_exactly_as_rivers_half_space_trees(n_trees, height, window_size):
    """Same trees, same masses, same scores as river's HalfSpaceTrees fed one observation at a
    time: batches of 0-5 rows scored before any is learned, some rows left unlearned, windows
    that fill mid-batch, and values outside [0, 1] and NaN taking river's branch."""
    from river import anomaly

    keys = ("b", "a", "c")
    for seed in range(3):
        reference = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size,
                                           limits={k: (0.0, 1.0) for k in keys}, seed=seed)
        batched = BatchHalfSpaceTrees(keys, n_trees, height, window_size, seed)
        rng = np.random.default_rng(seed)
        for _ in range(120):
            rows = rng.random((int(rng.integers(0, 6)), len(keys))) * rng.choice([0.4, 1.0, 1.5])
            if rows.size and rng.random() < 0.1:
                rows[0, int(rng.integers(len(keys)))] = np.nan
            points = [dict(zip(keys, row)) for row in rows]
            paths = batched.walk(rows)
            assert batched.score(paths) == [reference.score_one(x) for x in points]
            learn = list(rng.random(len(points)) < 0.8)
            batched.learn(paths[:, learn])
            for x, learnt in zip(points, learn):
                if learnt:
                    reference.learn_one(x)


def test_same_seed_same_scores():
    def scores(seed):
        rng = np.random.default_rng(5)
        detector = StreamDetector(("a", "b"), window_size=10, seed=seed)
        return [detector.observe(normal_point(rng), warming_up=i < 30).score for i in range(60)]
    assert scores(1) == scores(1)


def test_a_warm_up_too_short_to_calibrate_goes_on_until_it_can():
    """HST scores nothing until its first window is full: a threshold needs scores after it."""
    rng = np.random.default_rng(4)
    detector = StreamDetector(("a",), window_size=10, min_calibration=4)
    verdicts = [detector.observe({"a": rng.random()}, warming_up=i < 3) for i in range(20)]
    assert [v.warming_up for v in verdicts] == [True] * 14 + [False] * 6
    assert detector.threshold is not None


def test_threshold_baseline_uses_bands_fixed_after_warm_up():
    rng = np.random.default_rng(3)
    baseline = ThresholdStream(("a", "b"), k=4.0)
    assert all(baseline.observe(normal_point(rng), warming_up=True).warming_up for _ in range(30))
    assert not baseline.observe({"a": 0.22, "b": 0.72}, warming_up=False).anomalous
    verdict = baseline.observe({"a": 0.95, "b": 0.72}, warming_up=False)
    assert verdict.anomalous and verdict.score > 4


def test_m_of_n_evidence_weighs_each_verdict_by_its_strength():
    evidence = Evidence(m=2, n=3)
    assert [evidence.add("x", a) for a in (1.0, 0.0, 0.0, 1.0, 0.0, 1.0)] == [
        False, False, False, False, False, True]
    assert evidence.count("x") == (2, 3)
    evidence.forget("x")
    assert evidence.count("x") == (0, 0)
    assert not any(evidence.add("y", 0.4) for _ in range(10))  # faint echoes never add up to a ban
    assert evidence.add("z", 0.5) is False and evidence.add("z", 1.0) is False and evidence.add("z", 0.5) is True
    with pytest.raises(ValueError, match="1 <= m <= n"):
        Evidence(m=4, n=3)


def warmed_up(margin):
    """A detector that learned 40 normal points, and the generator that made them."""
    rng = np.random.default_rng(1)
    detector = StreamDetector(("a", "b"), window_size=10, margin=margin, seed=3)
    for _ in range(40):
        detector.observe(normal_point(rng), warming_up=True)
    return detector, rng


def test_a_score_just_over_the_bar_is_weak_evidence():
    detector, rng = warmed_up(margin=0.2)
    near = detector.observe({"a": 0.32, "b": 0.7}, warming_up=False)
    assert near.anomalous and 0.0 < near.strength < 1.0
    assert near.strength == pytest.approx((near.score - near.threshold) / 0.2)
    assert detector.observe(normal_point(rng), warming_up=False).strength == 0.0


def test_an_unmistakable_verdict_weighs_more_so_two_of_them_ban():
    detector, _ = warmed_up(margin=0.1)
    far = detector.observe({"a": 0.95, "b": 0.05}, warming_up=False)
    assert far.score - far.threshold >= STRONG_SHARE * (1 - far.threshold) and far.strength == STRONG_WEIGHT
    evidence = Evidence(3, 4)
    assert not evidence.add("d1h2", far.strength) and evidence.add("d1h2", far.strength)
    mild = Evidence(3, 4)
    assert not any(mild.add("d1h3", 1.0) for _ in range(2))  # two clear but ordinary verdicts: not yet


NETWORK = make_layout(2, 4, "line").to_description()
NORMAL_UPDATE = {"off_norm": 0.05, "off_home": 0.02}
FLIPPED_UPDATE = {"off_norm": 0.6, "off_home": 0.9}


def test_one_update_turned_away_from_home_beyond_the_bar_bans_after_the_warm_up_only():
    rng = np.random.default_rng(1)
    defense = DomainDefense(1, NETWORK, DefenseConfig(warmup_rounds=6, window_size=8, ban_bar=0.45))
    turned = {**NORMAL_UPDATE, "off_home": 0.5}  # nothing else odd about it
    for round_ in range(2, 7):  # warm-up: learnt, never judged, whatever it looks like
        features = {n: jitter(NORMAL_UPDATE, rng) for n in defense.local}
        assert acting(defense.on_round(round_, round_, {**features, "d1h2": turned})) == []
    just_under = {**NORMAL_UPDATE, "off_home": 0.44}
    actions = defense.on_round(7, 7, {"d1h1": just_under, "d1h2": turned, "d1h3": NORMAL_UPDATE,
                                      "d2h1": turned})  # d2h1: not this domain's to ban
    assert [a for a in actions if isinstance(a, Ban)] == [Ban("d1h2")]
    [ban_log] = [a.record for a in actions if isinstance(a, Log) and a.record["type"] == "ban"]
    assert ban_log["round"] == 7 and ban_log["score"] == 0.5 and ban_log["evidence"] == [3, 1]
    [verdict] = [a.record for a in actions if isinstance(a, Log) and a.record.get("violation")]
    assert "off_home 0.50 >= ban_bar 0.45" in verdict["violation"]
    [send] = [a for a in actions if isinstance(a, Send)]
    assert send.notice.type is MessageType.BAN and send.notice.round == 7


def jitter(features, rng):
    return {k: min(1.0, max(0.0, v + rng.normal(0, 0.02))) for k, v in features.items()}


def test_domain_defense_bans_after_m_of_n_tells_the_other_domains_and_logs_why():
    rng = np.random.default_rng(0)
    # the trees' m-of-n path alone (no ban on one update that turned from home: the next test)
    config = DefenseConfig(warmup_rounds=6, window_size=8, ban_after_m=2, ban_after_n=3, ban_bar=0)
    defense = DomainDefense(1, NETWORK, config)
    for round_ in range(2, 7):  # round 1 is never observed: no update to measure
        assert acting(defense.on_round(round_, round_, {n: jitter(NORMAL_UPDATE, rng) for n in defense.local})) == []
    actions = []
    for round_ in (7, 8):
        actions += defense.on_round(round_, round_, {n: FLIPPED_UPDATE if n == "d1h3" else jitter(NORMAL_UPDATE, rng)
                                                     for n in defense.local})
    bans = [a for a in actions if isinstance(a, Ban)]
    assert bans == [Ban("d1h3")] and defense.banned("d1h3")
    [ban_log] = [a.record for a in actions if isinstance(a, Log) and a.record["type"] == "ban"]
    assert ban_log["node"] == "d1h3" and ban_log["round"] == 8 and ban_log["evidence"] == [3.0, 2]
    assert ban_log["features"] == FLIPPED_UPDATE and ban_log["stream"] == "update"
    [send] = [a for a in actions if isinstance(a, Send)]
    notice = send.notice
    assert (notice.type, notice.origin, notice.round) == (MessageType.BAN, 1, 8)
    assert notice.entries[0].node_key == (1 << 8) | 3
    # A banned node is no longer observed, so it teaches the detector nothing.
    assert defense.on_round(9, 9, {"d1h3": FLIPPED_UPDATE}) == []  # not even a score


def test_an_honest_drift_within_the_spread_never_bans_what_lies_beyond_it_does():
    """Warmed up at the zero corner, a domain sees one sender drift to the edge of honest spread
    round after round (README's clean runs: a non-IID node's update turns from home as training
    goes on) and another sit a little beyond it, as Min-Max or mimic colluders do."""
    rng = np.random.default_rng(2)
    defense = DomainDefense(1, NETWORK, DefenseConfig(warmup_rounds=6, window_size=8, ban_bar=0))
    corner = {"off_norm": 0.0, "off_home": 0.0}
    for round_ in range(2, 7):
        defense.on_round(round_, round_, {n: corner for n in defense.local})
    drifting = {k: HONEST_UPDATE_SPREAD[k] for k in UPDATE_FEATURES}
    beyond = {"off_norm": 0.0, "off_home": HONEST_UPDATE_SPREAD["off_home"] + 0.2}
    bans = []
    for round_ in range(7, 17):
        features = {n: jitter(corner, rng) for n in defense.local}
        bans += [a.node for a in defense.on_round(round_, round_, {**features, "d1h1": drifting, "d1h2": beyond})
                 if isinstance(a, Ban)]
    assert bans == ["d1h2"]
    assert beyond_honest_spread({"d1h1": drifting})["d1h1"] == {"off_norm": 0.0, "off_home": 0.0}


def test_an_echo_of_a_banned_senders_poisoned_model_is_judged_by_the_bar_alone():
    """README's optimal ALIE, seed 2: honest d1h2 aggregated banned colluders' models and, for three
    rounds, took steps several times its usual size, less along its home: banned on them, until
    echoes were told apart."""
    defense = DomainDefense(1, NETWORK, DefenseConfig(warmup_rounds=6, window_size=8, ban_bar=0.45))
    corner = {"off_norm": 0.0, "off_home": 0.0}
    everyone = {n: ["d1h1", "d1h2", "d1h3", "d1h4", "d2h1"] for n in defense.local}
    for round_ in range(2, 7):
        assert acting(defense.on_round(round_, round_, {n: corner for n in defense.local}, inputs=everyone)) == []
    turned = {"off_norm": 1.0, "off_home": 0.6}
    recovering = {"off_norm": 0.9, "off_home": 0.3}
    # Round 7: d1h1 turns away and is banned on it; d1h4's equal first size is judged whole.
    actions = defense.on_round(7, 7, {"d1h1": turned, "d1h2": corner, "d1h3": corner, "d1h4": recovering},
                               inputs=everyone)
    assert [a.node for a in actions if isinstance(a, Ban)] == ["d1h1"] and defense.poisoned_from["d1h1"] == 7
    assert [a.record["node"] for a in actions if isinstance(a, Log) and a.record["type"] == "verdict"] == [
        "d1h1", "d1h4"]
    # Rounds 8-10: d1h2 recovers from d1h1's round-7 model; d1h3 aggregated d2h1's, banned by
    # its home from round 8 on, so not a poisoned one; d1h4 aggregated d1h1's too, but its own
    # update drew a verdict before: no echo (a colluder flagged on its first poisoned update).
    inputs = {"d1h2": ["d1h1", "d1h3"], "d1h3": ["d1h2", "d2h1"], "d1h4": ["d1h1"]}
    echoes, bans = [], []
    for round_ in (8, 9, 10):
        actions = defense.on_round(round_, round_, {"d1h2": recovering, "d1h3": corner, "d1h4": recovering},
                                   inputs=inputs if round_ == 8 else {}, poisoned_elsewhere={"d2h1": 8})
        echoes += [(a.record["node"], a.record["round"], a.record["aggregated"], a.record["set_aside"]["off_norm"])
                   for a in actions if isinstance(a, Log) and a.record["type"] == "echo"]
        bans += [a.node for a in actions if isinstance(a, Ban)]
    assert echoes == [("d1h2", r, ["d1h1"], 0.9) for r in (8, 9, 10)] and bans == ["d1h4"]
    # Three rounds after its last poisoned model, d1h2's size is evidence again.
    for round_ in (11, 12, 13):
        bans += [a.node for a in defense.on_round(round_, round_, {"d1h2": recovering, "d1h3": corner},
                                                  inputs={"d1h2": ["d1h3"]}) if isinstance(a, Ban)]
    assert bans == ["d1h4", "d1h2"]


def test_a_report_of_violations_alone_keeps_what_each_node_aggregated():
    """The inspection reports violations at once, numbered by its last complete round: such a
    report carries no inputs and must not erase that round's record of them."""
    defense = DomainDefense(1, NETWORK, DefenseConfig(warmup_rounds=6, window_size=8, ban_bar=0.45))
    corner = {"off_norm": 0.0, "off_home": 0.0}
    for round_ in range(2, 7):
        defense.on_round(round_, round_, {n: corner for n in defense.local})
    defense.on_round(7, 7, {"d1h2": corner}, inputs={"d1h2": ["d2h1"]})
    defense.on_round(7.5, 7, {}, {"d1h3": ["sent bytes that are no model frame: payload holds NaN or Inf"]})
    actions = defense.on_round(8, 8, {"d1h2": {"off_norm": 0.9, "off_home": 0.0}}, poisoned_elsewhere={"d2h1": 6})
    assert [a.record["aggregated"] for a in actions if isinstance(a, Log) and a.record["type"] == "echo"] == [
        ["d2h1"]]


def test_an_echo_turned_from_home_beyond_the_bar_twice_in_a_row_is_banned():
    """Honest nodes' first steps back from optimal IPM's models turned 0.45-0.50 from their
    homes (README); a flipper hiding behind a banned colleague's model keeps turning."""
    defense = DomainDefense(1, NETWORK, DefenseConfig(warmup_rounds=6, window_size=8, ban_bar=0.45))
    corner, turned = {"off_norm": 0.0, "off_home": 0.0}, {"off_norm": 1.0, "off_home": 0.5}
    for round_ in range(2, 7):
        defense.on_round(round_, round_, {n: corner for n in defense.local})
    inputs = {"d1h2": ["d2h1"], "d1h3": ["d1h4"], "d1h4": ["d2h1"]}
    first = defense.on_round(7, 7, {"d1h2": turned, "d1h3": turned, "d1h4": turned}, inputs=inputs,
                             poisoned_elsewhere={"d2h1": 6})
    assert [a.node for a in first if isinstance(a, Ban)] == ["d1h3"]  # no echo: its first turn bans it
    second = defense.on_round(8, 8, {"d1h2": turned, "d1h4": {"off_norm": 0.2, "off_home": 0.1}},
                              poisoned_elsewhere={"d2h1": 6})
    assert [a.node for a in second if isinstance(a, Ban)] == ["d1h2"]  # d1h4 found its way back


def test_bans_with_a_duration_expire_into_probation_and_the_unban_is_announced():
    defense = DomainDefense(1, NETWORK, DefenseConfig(ban_duration_s=30.0))
    defense._ban(100.0, "d1h2", Stream.FLOW, 0.9, 2, 3, 4, {})
    assert defense.expire(120.0) == []
    actions = defense.expire(131.0)
    assert Unban("d1h2") in actions and not defense.banned("d1h2")
    [send] = [a for a in actions if isinstance(a, Send)]
    assert send.notice.type is MessageType.UNBAN


def test_flow_excess_is_a_factor_over_both_the_peers_and_the_normal_level_and_never_below():
    def scaled(packets, bytes_):
        return {"packet_rate": log_scaled(packets, FLOW_FEATURES["packet_rate"]),
                "byte_rate": log_scaled(bytes_, FLOW_FEATURES["byte_rate"])}

    normal = scaled(30, 1e4)
    polled = {"h1": scaled(1000, 1e4), "h2": scaled(100, 1e5), "h3": scaled(100, 1e2)}
    excess = excess_over_normal(polled, normal)
    assert excess["h1"]["packet_rate"] == pytest.approx(0.5, abs=0.01)  # 10 x the peers' median (100/s)
    assert excess["h2"]["byte_rate"] == pytest.approx(0.5, abs=0.01)  # 10 x the normal level (above the median)
    assert excess["h3"] == {"packet_rate": 0.0, "byte_rate": 0.0}  # quieter than normal: nothing
    flood = excess_over_normal({**polled, "h4": scaled(1e6, 1e9)}, normal)["h4"]
    assert flood == {"packet_rate": 1.0, "byte_rate": 1.0}  # beyond EXCESS_CEILING x: all the excess there is
    lone = excess_over_normal({"h1": scaled(20, 5e3), "h2": scaled(0, 0)}, normal)
    assert lone["h1"] == {"packet_rate": 0.0, "byte_rate": 0.0}  # talking while peers are silent
    quiet = {"packet_in_rate": 0.0}
    retrying = excess_over_normal({"h1": {"packet_in_rate": log_scaled(8, FLOW_FEATURES["packet_in_rate"])},
                                   "h2": quiet, "h3": quiet}, quiet)
    assert retrying["h1"]["packet_in_rate"] == 0.0  # reconnecting to a dead peer: what honest hosts do alone


def acting(actions):
    """What a batch made the defense do, beyond logging every score (the report plots them)."""
    return [a for a in actions if not (isinstance(a, Log) and a.record["type"] == "scores")]


def test_every_judged_batch_logs_all_its_scores_for_the_report():
    defense = DomainDefense(1, NETWORK, DefenseConfig(warmup_rounds=2))
    rng = np.random.default_rng(3)
    [log] = defense.on_poll(1.0, flows(rng))
    assert log.record["type"] == "scores" and log.record["stream"] == "flow" and log.record["warming_up"]
    assert sorted(log.record["scores"]) == ["d1h1", "d1h2", "d1h3", "d1h4"]


def flows(rng, **overrides):
    """One poll of honest DFL hosts of domain 1 (absolute flow features), some overridden."""
    base = {"packet_rate": 0.35, "byte_rate": 0.57, "new_flow_rate": 0.1, "distinct_dsts": 0.25,
            "distinct_dst_ports": 0.1, "packet_in_rate": 0.1, "dropped_rate": 0.0, "overflow_rate": 0.0}
    hosts = {f"d1h{i}": {k: max(0.0, v + rng.normal(0, 0.02)) if v else 0.0 for k, v in base.items()}
             for i in range(1, 5)}
    for node, changes in overrides.items():
        hosts[node].update(changes)
    return hosts


def test_a_flooder_is_banned_on_its_second_anomalous_poll_and_its_honest_peers_never():
    rng = np.random.default_rng(7)
    defense = DomainDefense(1, NETWORK, DefenseConfig())
    now = 0.0
    for round_ in range(1, 5):  # warm-up: two polls per round, the round's updates after them
        for _ in range(2):
            now += 1.0
            assert acting(defense.on_poll(now, flows(rng))) == []
        defense.on_round(now, round_, {n: jitter(NORMAL_UPDATE, rng) for n in defense.local})
    flood = {"packet_rate": 0.78, "byte_rate": 0.87}
    first = defense.on_poll(now + 1.0, flows(rng, d1h3=flood))
    assert not any(isinstance(a, Ban) for a in first)  # one poll is no ban
    now += 2.0
    second = defense.on_poll(now, flows(rng, d1h3=flood))
    assert [a for a in second if isinstance(a, Ban)] == [Ban("d1h3")]  # a host's own traffic: no echo
    for _ in range(50):  # the honest hosts go on as before: no verdict against them
        now += 1.0
        assert acting(defense.on_poll(now, flows(rng))) == []


def test_what_moves_every_peer_at_once_is_no_sign_against_one_of_them():
    """Honest updates drift together as training converges: judged against the round's peers,
    a common shift flags no one, while the one sender who moved alone is flagged."""
    rng = np.random.default_rng(6)
    detector = StreamDetector(("a", "b"), window_size=10, margin=0.1, seed=2)
    for _ in range(10):
        detector.observe_batch({i: normal_point(rng) for i in range(4)}, warming_up=True)
    drifted = {i: {"a": 0.6 + 0.02 * rng.random(), "b": 0.3 + 0.02 * rng.random()} for i in range(4)}
    verdicts = detector.observe_batch(drifted, warming_up=False)
    assert not any(v.anomalous for v in verdicts.values())
    assert all(v.score > detector.threshold for v in verdicts.values())  # each alone would be flagged
    alone = detector.observe_batch({0: {"a": 0.95, "b": 0.05}, **{i: normal_point(rng) for i in (1, 2, 3)}},
                                   warming_up=False)
    assert alone[0].anomalous and not any(alone[i].anomalous for i in (1, 2, 3))


def test_the_defense_config_crosses_into_the_controller_whole_and_rejects_unknown_knobs():
    from sdfl.scenario import load_scenario

    config = DefenseConfig.from_scenario(load_scenario(None, ["defense.ban_after=2/5", "defense.margin=0.3", "seed=4"]))
    assert (config.ban_after_m, config.ban_after_n, config.knobs["margin"], config.seed) == (2, 5, 0.3, 4)
    assert DefenseConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match=r"unknown or missing knobs \['sed', 'seed'\]"):
        DefenseConfig.from_json(config.to_json().replace('"seed"', '"sed"'))
    with pytest.raises(ValueError, match=r"fuhst has no knobs \['margn'\]"):
        DefenseConfig.from_json(config.to_json().replace('"margin"', '"margn"'))


def test_an_arp_flood_beyond_the_meter_is_a_violation_and_two_polls_of_it_ban():
    from controllers.features import ARP_FLOOD_PPS, flood_violations

    assert flood_violations(counters(arp_packets=0), counters(arp_packets=10), 1.0) == []  # an honest handful
    [why] = flood_violations(counters(arp_packets=0), counters(arp_packets=18_000), 1.0)
    assert why.startswith("ARP at 18000 packets/s") and ARP_FLOOD_PPS < 18_000
    defense = DomainDefense(1, NETWORK, DefenseConfig())
    first = defense.on_poll(1.0, {}, {"d1h4": [why]})  # warm-up or not: the meter's rate is no learnt normal
    assert not [a for a in first if isinstance(a, Ban)] and not defense.banned("d1h4")
    second = defense.on_poll(2.0, {}, {"d1h4": [why], "d2h1": [why]})  # d2h1 is not this domain's to judge
    assert [a.node for a in second if isinstance(a, Ban)] == ["d1h4"]
    assert any(isinstance(a, Log) and a.record.get("violation") == why and a.record["stream"] == "flow"
               for a in second)


def warmed_up_domain(odd_level: float):
    """A domain of five hosts whose warm-up saw four usual ones near the corner and one odd
    honest host scoring high every round (its shard is unlike the others')."""
    rng = np.random.default_rng(7)
    detector = StreamDetector(("a", "b"), window_size=10, seed=3, quantile=0.5, per_host=True)

    def batch(odd):
        points = {f"h{i}": {"a": 0.05 * rng.random(), "b": 0.05 * rng.random()} for i in range(4)}
        points["odd"] = {"a": odd, "b": odd}
        return points
    for _ in range(12):
        detector.observe_batch(batch(odd_level), warming_up=True)
    return detector, batch


def test_one_odd_host_in_the_warm_up_neither_blinds_the_domain_nor_is_banned_for_being_itself():
    detector, batch = warmed_up_domain(odd_level=0.9)
    usual = detector.observe_batch(batch(0.9), warming_up=False)
    assert not any(v.anomalous for v in usual.values())  # the odd host at its usual level passes
    attacked = batch(0.9)
    attacked["h0"] = {"a": 0.9, "b": 0.9}  # a usual host turning to where only the odd one went
    verdicts = detector.observe_batch(attacked, warming_up=False)
    assert verdicts["h0"].anomalous and not verdicts["odd"].anomalous
    assert verdicts["h0"].threshold < verdicts["odd"].threshold


def test_no_bar_is_calibrated_out_of_a_scores_reach():
    detector, batch = warmed_up_domain(odd_level=1.0)
    verdicts = detector.observe_batch(batch(1.0), warming_up=False)
    assert max(v.threshold for v in verdicts.values()) <= MAX_BAR < 1.0

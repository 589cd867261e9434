"""Model poisoning: one contract for every kind, each kind's own promise, and its effect on DFL."""

import numpy as np
import pytest

from agents.aggregation import make_aggregator
from agents.data import load_digits_dataset, partition, trigger_indices, triggered_test_set, with_trigger
from agents.node import DFLNode, TrainingConfig
from agents.peers import peer_graph
from agents.simulation import simulate
from agents.wire import FrameError, ModelFrame, decode
from attacks.plan import KINDS, POISONING, Attack, malicious_nodes, normalize_entry, resolve_attacks
from attacks.poisoning import (
    PERTURBATIONS,
    SEARCHED_SCALES,
    CollusionBoard,
    DirectoryBoard,
    Poisoner,
    alie,
    alie_z,
    backdoor_samples,
    fang_krum,
    fang_trimmed_mean,
    flat,
    flip_labels,
    min_max,
    min_sum,
    most_damaging,
    perturbation,
    split_like,
    under_the_bar,
)

SHAPES = ((4, 3), (4,), (2, 4), (2,))
SIZE = sum(int(np.prod(s)) for s in SHAPES)
COLLUDERS = ("d1h1", "d2h1", "d3h1")


def attack(kind, **params):
    entry = normalize_entry({"kind": kind, "nodes": list(COLLUDERS), **params}, "attacks.0")
    return Attack(kind, POISONING, COLLUDERS, (1, 2), {k: entry[k] for k in KINDS[kind].fields})


def honest(seed=0):
    """A reference model and a trained frame per colluder (updates of similar direction)."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(0, 0.3, SIZE)
    drift = rng.normal(0, 0.05, SIZE)
    frames = {n: ModelFrame(n, 1, 50, split_like(reference + drift + rng.normal(0, 0.01, SIZE), SHAPES))
              for n in COLLUDERS}
    return reference, frames


def poisoned(kind, seed=0, **params):
    """What each colluder sends in round 1, as bytes, after sharing its honest update."""
    reference, frames = honest()
    board = CollusionBoard()
    the_attack = attack(kind, **params)
    poisoners = {n: Poisoner(n, [the_attack], 12, 10, seed=seed, board=board, collusion_wait_s=0.5)
                 for n in COLLUDERS}
    for n, p in poisoners.items():
        p.share(1, frames[n], reference)
    return reference, frames, {n: p.outgoing(1, frames[n], reference) for n, p in poisoners.items()}


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_sign_flip_sends_exactly_minus_k_times_the_honest_update(scale):
    reference, frames, sent = poisoned("sign-flip", scale=scale)
    for node, data in sent.items():
        update = flat(frames[node]) - reference
        sent_update = flat(decode(data)) - reference
        np.testing.assert_allclose(sent_update, -scale * update, atol=1e-6)


def test_alie_stays_within_z_standard_deviations_of_the_colluders_mean():
    reference, frames, sent = poisoned("alie")
    updates = np.stack([flat(frames[n]) - reference for n in COLLUDERS])
    mean, std = updates.mean(axis=0), updates.std(axis=0)
    z = alie_z(12, 3)
    assert 0 < z < 1  # n = 12, f = 3: s = 4 supporters needed, z = ppf(8 / 12)
    for data in sent.values():
        offset = flat(decode(data)) - reference - mean
        assert np.all(np.abs(offset) <= z * std + 1e-6)
        assert np.all(offset <= 1e-6)  # always on the same side: it is a push, not noise
    np.testing.assert_allclose(alie(updates, 1.5), mean - 1.5 * std)


def test_ipm_sends_minus_epsilon_times_the_colluders_mean_update():
    reference, frames, sent = poisoned("ipm", epsilon=0.5)
    mean = np.stack([flat(frames[n]) - reference for n in COLLUDERS]).mean(axis=0)
    for data in sent.values():
        np.testing.assert_allclose(flat(decode(data)) - reference, -0.5 * mean, atol=1e-6)
        assert float(np.dot(flat(decode(data)) - reference, mean)) < 0


def test_mimic_colluders_all_send_the_first_colluders_honest_update():
    reference, frames, sent = poisoned("mimic")
    target = flat(frames[COLLUDERS[0]]) - reference
    for data in sent.values():
        np.testing.assert_allclose(flat(decode(data)) - reference, target, atol=1e-6)


@pytest.mark.parametrize("direction", PERTURBATIONS)
def test_min_max_goes_as_far_as_the_benign_spread_allows_and_no_farther(direction):
    x = np.random.default_rng(3).normal(0.2, 0.05, size=(5, SIZE))
    sent = min_max(x, perturbation(x, direction))
    spread = max(np.linalg.norm(a - b) for a in x for b in x)
    farthest = max(np.linalg.norm(sent - u) for u in x)
    assert farthest == pytest.approx(spread)  # on the bound: the most damage the spread hides
    assert np.linalg.norm(sent - x.mean(axis=0)) > 0.5 * spread  # and well away from the mean


@pytest.mark.parametrize("direction", PERTURBATIONS)
def test_min_sum_keeps_its_summed_squared_distance_within_the_benign_maximum(direction):
    x = np.random.default_rng(4).normal(0.2, 0.05, size=(5, SIZE))
    sent = min_sum(x, perturbation(x, direction))
    benign = max(sum(np.sum((u - v) ** 2) for v in x) for u in x)
    assert sum(np.sum((sent - u) ** 2) for u in x) == pytest.approx(benign)
    assert not np.allclose(sent, x.mean(axis=0))


def test_min_max_and_min_sum_of_one_colluder_send_its_honest_update():
    x = np.random.default_rng(5).normal(size=(1, SIZE))  # no spread to hide in
    np.testing.assert_allclose(min_max(x, perturbation(x, "unit")), x[0])
    np.testing.assert_allclose(min_sum(x, perturbation(x, "unit")), x[0])


def test_fang_trimmed_mean_sits_three_to_four_std_devs_against_the_benign_direction():
    x = np.random.default_rng(6).normal(0.0, 0.05, size=(4, SIZE))
    mean, std = x.mean(axis=0), x.std(axis=0)
    sent = fang_trimmed_mean(x, np.random.default_rng(0))
    beyond = (sent - mean) * -np.where(mean > 0, 1.0, -1.0) / std  # std-devs against the direction
    assert beyond.min() >= 3.0 - 1e-9 and beyond.max() <= 4.0 + 1e-9


def test_fang_krum_sends_a_reversed_sign_vector_that_krum_picks():
    from agents.aggregation import krum_scores

    x = np.random.default_rng(7).normal(0.1, 0.05, size=(3, SIZE))
    sent = fang_krum(x, f=3)
    scale = np.abs(sent).max()
    np.testing.assert_allclose(sent, -scale * np.sign(x.mean(axis=0)))
    assert int(np.argmin(krum_scores(np.vstack([np.tile(sent, (3, 1)), x]), 3))) < 3  # Krum picks a copy


@pytest.mark.parametrize("kind", ["alie", "ipm"])
def test_an_optimal_attack_does_the_most_damage_its_search_finds_against_the_honest_rule(kind):
    from attacks.agent import stacked_rule
    from sdfl.scenario import load_scenario

    rule = stacked_rule({**load_scenario()["dfl"], "aggregator": "trimmed-mean", "byzantine_f": 3})
    x = np.random.default_rng(8).normal(0.1, 0.05, size=(3, SIZE))
    attack_for = (lambda z: alie(x, z)) if kind == "alie" else (lambda e: -e * x.mean(axis=0))
    sent = most_damaging(x, attack_for, rule, f=3)

    def damage(v):
        return np.linalg.norm(rule(np.vstack([x, np.tile(v, (3, 1))])) - x.mean(axis=0))

    assert all(damage(sent) >= damage(attack_for(scale)) for scale in SEARCHED_SCALES)
    default = attack_for(alie_z(12, 3) if kind == "alie" else 0.5)
    assert damage(sent) > damage(default)  # tuned, it hurts more than the paper's fixed scale


def test_sample_inflation_reverses_its_update_and_declares_every_nodes_samples():
    reference, frames, sent = poisoned("sample-inflation")
    for node, data in sent.items():
        frame = decode(data)
        assert frame.samples == 50 * 12  # as if it held all 12 nodes' data
        np.testing.assert_allclose(flat(frame) - reference, -(flat(frames[node]) - reference), atol=1e-6)
    assert decode(poisoned("sample-inflation", factor=3.0)[2][COLLUDERS[0]]).samples == 150


def test_a_backdoor_trains_on_triggered_copies_labelled_its_target_and_keeps_the_shard():
    x = np.random.default_rng(0).uniform(0, 0.5, (20, 64)).astype(np.float32)
    y = np.arange(20) % 10
    poisoned_x, poisoned_y = backdoor_samples(x, y, target=3, share=0.5, rng=np.random.default_rng(1))
    assert np.array_equal(poisoned_x[:20], x) and np.array_equal(poisoned_y[:20], y)  # the shard, unchanged
    copies, labels = poisoned_x[20:], poisoned_y[20:]
    assert len(copies) == 10 and set(labels) == {3}
    assert np.all(copies[:, trigger_indices(64)] == 1.0)  # the trigger flips the label
    assert sorted(trigger_indices(64)) == [54, 55, 62, 63]  # the bottom-right 2 x 2 of an 8 x 8 image
    untouched = np.setdiff1d(np.arange(64), trigger_indices(64))
    assert any(np.array_equal(c[untouched], row[untouched]) for c in copies[:1] for row in x)
    again = backdoor_samples(x, y, target=3, share=0.5, rng=np.random.default_rng(1))
    assert np.array_equal(again[0], poisoned_x)  # a function of its seed


def test_the_backdoor_probe_holds_every_other_class_triggered():
    dataset = load_digits_dataset(seed=0)
    probe = triggered_test_set(dataset, target=3)
    assert len(probe) == int((dataset.y_test != 3).sum())
    assert np.all(probe[:, trigger_indices(64)] == 1.0)
    assert np.array_equal(with_trigger(dataset.x_test[dataset.y_test != 3]), probe)


def test_a_boosted_backdoor_sends_boost_times_its_update():
    reference, frames, sent = poisoned("backdoor", boost=5.0)
    for node, data in sent.items():
        np.testing.assert_allclose(flat(decode(data)) - reference, 5.0 * (flat(frames[node]) - reference), atol=1e-5)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("budget", [0.02, 0.1, 0.3])
def test_the_adaptive_attack_turns_from_its_own_direction_exactly_as_far_as_its_budget(budget):
    rng = np.random.default_rng(3)
    consensus = rng.normal(0, 1, 200)
    colluders = np.stack([consensus + rng.normal(0, 1.0, 200) for _ in range(3)])
    own = colluders[0]
    sent = under_the_bar(own, colluders, budget, size=1.0)
    mean = colluders.mean(axis=0)
    assert np.linalg.norm(sent) == pytest.approx(np.linalg.norm(own))  # off_norm sees nothing
    assert (1 - _cos(sent, own)) / 2 == pytest.approx(budget)  # off_home at the budget, no further
    assert _cos(sent, mean) < _cos(own, mean)  # it does push against the consensus
    larger = under_the_bar(own, colluders, 2 * budget, size=1.0)
    assert _cos(larger, mean) < _cos(sent, mean)  # the more budget, the more it turns
    np.testing.assert_allclose(under_the_bar(own, colluders, budget, size=2.0), 2 * sent)


def test_gaussian_noise_has_the_asked_spread_and_depends_on_the_seed():
    reference, frames, sent = poisoned("gaussian", sigma=0.5)
    noise = flat(decode(sent["d1h1"])) - flat(frames["d1h1"])
    assert 0.35 < noise.std() < 0.65
    assert poisoned("gaussian", seed=1, sigma=0.5)[2]["d1h1"] != sent["d1h1"]


@pytest.mark.parametrize("mode, message", [("nan", "NaN or Inf"), ("inf", "NaN or Inf"), ("bytes", "bad magic")])
def test_garbage_is_rejected_by_the_wire_decoder_with_a_reason(mode, message):
    _, _, sent = poisoned("garbage", mode=mode)
    with pytest.raises(FrameError, match=message):
        decode(sent["d1h1"], expected_shapes=SHAPES)


def test_huge_garbage_is_finite_and_decodes():
    _, _, sent = poisoned("garbage", mode="huge")
    assert np.all(flat(decode(sent["d1h1"])) == np.float32(1e30))


def test_label_flipping_poisons_the_training_labels_only_in_its_rounds():
    labels = np.array([0, 1, 2, 9, 5])
    assert flip_labels(labels, 10).tolist() == [9, 8, 7, 0, 4]
    poisoner = Poisoner("d1h1", [attack("label-flip")], 12, 10, seed=0)
    x = np.zeros((5, 64), dtype=np.float32)
    assert poisoner.training_data(1, x, labels)[1].tolist() == [9, 8, 7, 0, 4]
    assert poisoner.training_data(3, x, labels) == (x, labels)
    reference, frames = honest()
    assert decode(poisoner.outgoing(1, frames["d1h1"], reference)).tensors[0].tobytes() == \
        frames["d1h1"].tensors[0].tobytes()  # it sends what it honestly trained on bad labels


def test_colluders_meet_on_a_shared_directory_and_a_missing_one_does_not_block(tmp_path):
    one, two = DirectoryBoard(tmp_path / "c"), DirectoryBoard(tmp_path / "c")
    one.post(4, "d1h1", np.arange(3.0))
    two.post(4, "d2h1", np.ones(3))
    found = one.gather(4, ("d1h1", "d2h1"), deadline=0)
    assert [u.tolist() for u in found] == [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    assert len(two.gather(4, ("d1h1", "d2h1", "d3h1"), deadline=0)) == 2
    assert not list((tmp_path / "c").glob(".*"))  # no partial files left behind


def run_digits(aggregator, attacked, rounds=10):
    dataset = load_digits_dataset(0, 0.2)
    names = [f"d{d}h{h}" for d in (1, 2, 3) for h in (1, 2, 3, 4)]
    domain_of = {n: int(n[1]) for n in names}
    neighbours = peer_graph("domain-full+border", names, domain_of, [(1, 2), (2, 3), (1, 3)], 0, 3)
    shards = partition(dataset.y_train, len(names), "iid", 0.5, 0)
    nodes = {n: DFLNode(n, dataset, s, make_aggregator(aggregator, 2), TrainingConfig(), seed=i)
             for i, (n, s) in enumerate(zip(names, shards))}
    attacks = resolve_attacks([normalize_entry({"kind": "sign-flip", "fraction": 0.3, "start_round": 3,
                                                "scale": 4.0}, "a")], names, domain_of, rounds, 0, 7000)
    bad = malicious_nodes(attacks)
    board = CollusionBoard()
    poisoners = {n: Poisoner(n, attacks, 12, 10, seed=0, board=board) for n in bad} if attacked else {}
    results = simulate(nodes, neighbours, rounds, behaviours=poisoners)
    return np.mean([r["accuracy"] for r in results if r["round"] == rounds and r["node"] not in bad])


def test_sign_flippers_break_fedavg_but_not_the_median():
    clean = run_digits("fedavg", attacked=False)
    assert run_digits("fedavg", attacked=True) < clean - 0.3
    assert run_digits("median", attacked=True) > clean - 0.06


def test_an_insertion_sends_its_poison_and_shows_the_wire_its_honest_frame_first_with_the_same_tag():
    from agents.wire import encode

    reference, frames = honest()
    written = []
    poisoner = Poisoner("d1h1", [attack("insertion", scale=4.0)], 12, 10, seed=0, tagged=True,
                        write_ahead=lambda sock, decoy: written.append((sock, decoy)))
    sent = poisoner.outgoing(1, frames["d1h1"], reference)
    honest_bytes = encode(frames["d1h1"], tagged=True)
    assert len(sent) == len(honest_bytes) and sent != honest_bytes  # the poison, as long as the decoy
    tag = b"t" * 16
    poisoner.before_write("connection", sent + tag)
    assert written == [("connection", honest_bytes + tag)]  # the decoy carries the receiver's tag
    poisoner.before_write("connection", b"some other frame" + tag)
    assert len(written) == 1  # only ahead of the poisoned frame
    outside_its_rounds = Poisoner("d1h1", [attack("insertion")], 12, 10, seed=0,
                                  write_ahead=lambda sock, decoy: written.append(decoy))
    data = outside_its_rounds.outgoing(3, frames["d1h1"], reference)
    outside_its_rounds.before_write("connection", data)
    assert len(written) == 1


def test_an_insertion_that_cannot_write_its_decoy_still_sends_its_frame(caplog):
    def no_arp_entry(sock, decoy):
        raise OSError("no ARP entry for 10.1.0.2")

    reference, frames = honest()
    poisoner = Poisoner("d1h1", [attack("insertion")], 12, 10, seed=0, write_ahead=no_arp_entry)
    poisoner.before_write("connection", poisoner.outgoing(1, frames["d1h1"], reference))  # no raise
    assert "no decoy written" in caplog.text and "no ARP entry" in caplog.text


def test_an_insertions_decoy_segments_carry_bad_checksums_and_the_inspection_names_the_sender():
    """The decoy, cut into segments from the connection's next sequence number with wrong TCP
    checksums, and the poisoned frame over the same numbers after it: the mirror's reassembly
    reads the decoy first and names the conflict."""
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether

    from agents.wire import encode
    from attacks.insertion import BAD_CHECKSUM, decoy_segments
    from controllers.inspector import StreamAssembler
    from controllers.packets import parse_tcp_segment

    reference, frames = honest()
    poisoner = Poisoner("d1h1", [attack("insertion", scale=4.0)], 12, 10, seed=0)
    poisoned = poisoner.outgoing(1, frames["d1h1"], reference)
    decoy = encode(frames["d1h1"])
    seq, source, destination = 2**32 - 10, ("10.1.0.1", 40000), ("10.1.0.2", 7000)  # wraps
    segments = decoy_segments(decoy * 40, seq, source, destination, ("02:00:00:00:01:01", "02:00:00:00:01:02"))
    assert len(segments) > 1
    for frame in segments:
        packet = Ether(frame)
        assert packet[TCP].chksum == BAD_CHECKSUM
        del packet[TCP].chksum
        assert Ether(bytes(packet))[TCP].chksum != BAD_CHECKSUM  # the real checksum differs
    key = (*source, *destination)
    assembler = StreamAssembler()
    assembler.feed(key, seq - 1, b"", syn=True)
    read = []
    for frame in decoy_segments(decoy, seq, source, destination, ("02:00:00:00:01:01", "02:00:00:00:01:02")):
        segment = parse_tcp_segment(frame)
        read += assembler.feed(key, segment.seq, segment.payload)
    read += assembler.feed(key, seq, poisoned)
    assert [encode(f) for f in read] == [decoy]
    assert [k for k, _ in assembler.conflicts] == [key]

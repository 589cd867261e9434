"""The contract every attack kind of the registry keeps (river's ``check_estimator`` is the model).

A new kind is one entry of ``POISONING_KINDS``, ``TRAFFIC_KINDS`` or ``CONTROLLER_KINDS``; this
suite runs on it with no edit: its entry resolves with defaults alone, and what it sends has the
right shape, comes from the attacker, and is the same under the same seed. (What a compromised
controller sends is ``tests/test_byzantine.py``'s.)
"""

import numpy as np
import pytest
from scapy.layers.l2 import Ether

from agents.wire import FrameError, ModelFrame, decode
from attacks.controller import CONTROLLER
from attacks.kinds import POISONING, TRAFFIC
from attacks.plan import KINDS, normalize_entry, resolve_attacks
from attacks.poisoning import CollusionBoard, Poisoner, split_like
from attacks.traffic import TrafficSpec, build_packets
from common.description import HostSpec
from common.schema import ScenarioError

SHAPES = ((4, 3), (4,), (2, 4), (2,))
SIZE = sum(int(np.prod(s)) for s in SHAPES)
NODES = [f"d{d}h{h}" for d in (1, 2, 3) for h in (1, 2, 3, 4)]
DOMAIN_OF = {n: int(n[1]) for n in NODES}
HOSTS = {n: HostSpec(n, DOMAIN_OF[n], int(n[3]), f"10.{n[1]}.0.{n[3]}", 16, f"02:00:00:00:0{n[1]}:0{n[3]}",
                     f"d{n[1]}s1", int(n[3])) for n in NODES}
POISONINGS = [k for k, kind in KINDS.items() if kind.category == POISONING]
TRAFFICS = [k for k, kind in KINDS.items() if kind.category == TRAFFIC]
AGENTS_PORT = 7000
MAX_FRAME_BYTES = 1514  # the hosts' 1500-byte MTU plus the Ethernet header


def resolved(kind, seed=0, **keys):
    """The kind's entry with nothing but defaults (``crafted`` must name its packets), resolved."""
    if kind == "crafted":
        keys.setdefault("packets", ["vxlan", "far-round-model-frame"])
    who = {"domain": 3} if KINDS[kind].category == CONTROLLER else {"fraction": 0.25}
    entry = normalize_entry({"kind": kind, **who, "start_round": 2, **keys}, "attacks.0")
    return resolve_attacks([entry], NODES, DOMAIN_OF, rounds=5, seed=seed, dfl_port=AGENTS_PORT)


@pytest.mark.parametrize("kind", KINDS)
def test_the_entry_resolves_from_defaults_and_says_what_it_is(kind):
    [attack] = resolved(kind)
    assert attack.kind == kind and attack.category == KINDS[kind].category and KINDS[kind].help
    assert attack.rounds == (2, 3, 4, 5)
    assert resolved(kind) == [attack]  # the same seed, the same attackers
    if attack.category == CONTROLLER:  # a domain, and the honest hosts of the others it aims at
        assert attack.nodes == () and set(attack.params) == {*KINDS[kind].fields, "targets"}
        assert attack.params["targets"] and all(DOMAIN_OF[n] != 3 for n in attack.params["targets"])
    else:
        assert len(attack.nodes) == 3 and set(attack.params) == set(KINDS[kind].fields)
    with pytest.raises(ScenarioError, match="unknown key 'no_such_key'"):
        normalize_entry({"kind": kind, "fraction": 0.25, "no_such_key": 1}, "attacks.0")


def attack_params(kind):
    return resolved(kind)[0].params


def _round_one(kind, seed):
    """What each attacker sends in round 2, after sharing its honest update with colluders."""
    [attack] = resolved(kind)
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 0.3, SIZE)
    frames = {n: ModelFrame(n, 2, 50, split_like(reference + rng.normal(0, 0.05, SIZE), SHAPES))
              for n in attack.nodes}
    board = CollusionBoard()
    poisoners = {n: Poisoner(n, [attack], len(NODES), 10, seed=seed, board=board, collusion_wait_s=0.5)
                 for n in attack.nodes}
    for n, poisoner in poisoners.items():
        poisoner.share(2, frames[n], reference)
    sent = {n: poisoner.outgoing(2, frames[n], reference) for n, poisoner in poisoners.items()}
    outside = {n: poisoner.outgoing(1, frames[n], reference) for n, poisoner in poisoners.items()}
    labels = {n: poisoner.training_data(2, np.zeros((10, 64), dtype=np.float32), np.arange(10))[1]
              for n, poisoner in poisoners.items()}
    return frames, sent, outside, labels


@pytest.mark.parametrize("kind", POISONINGS)
def test_a_poisoning_keeps_the_frame_or_is_refused_by_the_wire_and_repeats_under_its_seed(kind):
    frames, sent, outside, labels = _round_one(kind, seed=0)
    assert _round_one(kind, seed=0)[1] == sent
    changed = False
    for node, data in sent.items():
        try:
            frame = decode(data, expected_shapes=SHAPES)
        except FrameError:
            changed = True  # what the wire refuses no honest aggregate ever sees
            continue
        declared = KINDS[kind].declares(50, attack_params(kind), len(NODES)) if KINDS[kind].declares else 50
        assert frame.shapes == SHAPES and (frame.sender, frame.round, frame.samples) == (node, 2, declared)
        changed |= not all(np.array_equal(a, b) for a, b in zip(frame.tensors, frames[node].tensors))
        # Outside its rounds the node sends its honest frame, unchanged.
        assert [t.tobytes() for t in decode(outside[node]).tensors] == [t.tobytes() for t in frames[node].tensors]
    changed |= any(not np.array_equal(ls, np.arange(10)) for ls in labels.values())
    assert changed, f"{kind} neither changed the frames it sends nor the labels it trains on"


@pytest.mark.parametrize("kind", TRAFFICS)
def test_a_traffic_attack_sends_from_its_host_in_frames_that_fit_and_repeat_under_its_seed(kind):
    [attack] = resolved(kind)
    node = attack.nodes[0]
    assert attack.params["rate_pps"] > 0 and attack.params["target"] not in attack.nodes
    if KINDS[kind].to_agents_port:
        assert attack.params["dst_port"] == AGENTS_PORT
    spec = TrafficSpec.from_attack(kind, attack.params, HOSTS[node], HOSTS[attack.params["target"]], 3, SHAPES)
    assert TrafficSpec.from_json(spec.to_json()) == spec
    if KINDS[kind].connects:
        assert KINDS[kind].packets is None
        return
    frames = [bytes(p) for p in build_packets(spec)]
    assert frames and frames == [bytes(p) for p in build_packets(spec)]
    assert all(len(f) <= MAX_FRAME_BYTES for f in frames)
    assert {Ether(f).src for f in frames} == {HOSTS[node].mac}  # its own port, its own MAC

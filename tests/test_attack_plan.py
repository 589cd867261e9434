"""[[attacks]] entries: checked, resolved to nodes and rounds with the seed, scheduled in time."""

import pytest

from attacks.plan import (
    Attack,
    TrafficTimeline,
    active_rounds,
    attacking_pairs,
    malicious_nodes,
    normalize_entry,
    resolve_attacks,
)
from sdfl.scenario import load_scenario
from common.schema import ScenarioError

NAMES = [f"d{d}h{h}" for d in (1, 2, 3) for h in (1, 2, 3, 4)]
DOMAIN_OF = {n: int(n[1]) for n in NAMES}


def resolve(*entries, seed=0, rounds=20):
    return resolve_attacks([normalize_entry(e, f"attacks.{i}") for i, e in enumerate(entries)],
                           NAMES, DOMAIN_OF, rounds, seed, dfl_port=7000)


@pytest.mark.parametrize("entry, message", [
    ({"kind": "sign-flap", "fraction": 0.3}, "attacks.0.kind must be one of sign-flip"),
    ({"kind": "sign-flip"}, "exactly one of 'nodes'"),
    ({"kind": "sign-flip", "nodes": ["d1h1"], "fraction": 0.2}, "exactly one of 'nodes'"),
    ({"kind": "sign-flip", "fraction": 0.3, "rate_pps": 5}, "unknown key 'rate_pps' for kind 'sign-flip'"),
    ({"kind": "sign-flip", "fraction": 0.3, "scale": -1}, "attacks.0.scale must be > 0"),
    ({"kind": "udp-flood", "nodes": ["d1h1"], "start_round": 5, "stop_round": 2}, "stop_round 2 is before"),
    ({"kind": "garbage", "fraction": 0.1, "mode": "zeros"}, "attacks.0.mode must be one of nan"),
    ({"kind": "port-scan", "nodes": ["d1h1"], "first_port": 90, "last_port": 80}, "last_port is below"),
    ({"kind": "alie", "nodes": "d1h1"}, "attacks.0.nodes must be list"),
    ({"kind": "crafted", "nodes": ["d1h1"], "packets": ["vxlan", "ping-of-death"]}, "unknown: 'ping-of-death'"),
    ({"kind": "crafted", "nodes": ["d1h1"]}, r"attacks.0.packets must list some of tcp-zero-length-option"),
    ({"kind": "icmp-flood", "nodes": ["d1h1"], "icmp_type": 3}, "attacks.0.icmp_type must be one of"),
])
def test_bad_entries_are_clear_errors(entry, message):
    with pytest.raises(ScenarioError, match=message):
        normalize_entry(entry, "attacks.0")


def test_a_fraction_is_rounded_down_spread_over_domains_and_reproducible():
    [attack] = resolve({"kind": "sign-flip", "fraction": 0.3, "start_round": 3})
    assert len(attack.nodes) == 3 and sorted(DOMAIN_OF[n] for n in attack.nodes) == [1, 2, 3]
    assert attack.rounds == tuple(range(3, 21)) and attack.params == {"scale": 1.0}
    assert resolve({"kind": "sign-flip", "fraction": 0.3})[0].nodes == attack.nodes
    drawn = {resolve({"kind": "sign-flip", "fraction": 0.3}, seed=s)[0].nodes for s in range(8)}
    assert len(drawn) > 1  # the seed chooses
    [small] = resolve({"kind": "gaussian", "fraction": 0.01})
    assert len(small.nodes) == 1  # at least one


def test_later_entries_draw_from_nodes_not_yet_attacking_and_targets_are_honest_remote_nodes():
    flip, alie, flood = resolve({"kind": "sign-flip", "fraction": 0.25},
                                {"kind": "alie", "fraction": 0.25},
                                {"kind": "syn-flood", "nodes": ["d1h3"], "low_rate": True})
    assert not set(flip.nodes) & set(alie.nodes)
    assert flood.params["target"] not in malicious_nodes([flip, alie, flood])
    assert DOMAIN_OF[flood.params["target"]] != 1
    assert flood.params["rate_pps"] == 50.0 and flood.params["dst_port"] == 7000
    with pytest.raises(ScenarioError, match="needs 10 attackers but only 9"):
        resolve({"kind": "sign-flip", "fraction": 0.25}, {"kind": "alie", "fraction": 0.9})


def test_named_nodes_and_targets_must_exist_and_one_node_poisons_one_way_per_round():
    with pytest.raises(ScenarioError, match=r"attacks.0.nodes: \['d9h1'\] are not hosts"):
        resolve({"kind": "sign-flip", "nodes": ["d9h1"]})
    with pytest.raises(ScenarioError, match="target 'd1h9' is not a host"):
        resolve({"kind": "udp-flood", "nodes": ["d1h1"], "target": "d1h9"})
    with pytest.raises(ScenarioError, match="d1h1 would poison with both 'sign-flip' and 'ipm' in round 5"):
        resolve({"kind": "sign-flip", "nodes": ["d1h1"], "stop_round": 5},
                {"kind": "ipm", "nodes": ["d1h1"], "start_round": 5})
    # Poisoning and flooding at once is allowed; so are disjoint poisoning windows.
    resolve({"kind": "sign-flip", "nodes": ["d1h1"], "stop_round": 4},
            {"kind": "ipm", "nodes": ["d1h1"], "start_round": 5},
            {"kind": "udp-flood", "nodes": ["d1h1"]})
    with pytest.raises(ScenarioError, match="start_round 30 is after the last round 20"):
        resolve({"kind": "sign-flip", "nodes": ["d1h1"], "start_round": 30})


def test_intermittent_windows_and_the_ground_truth_pairs():
    assert active_rounds(3, 10, 3, 20) == (3, 6, 9)
    assert active_rounds(18, 0, 1, 20) == (18, 19, 20)
    [attack] = resolve({"kind": "ipm", "nodes": ["d2h2"], "start_round": 2, "stop_round": 6, "every": 2})
    assert attacking_pairs([attack]) == {("d2h2", 2): ["ipm"], ("d2h2", 4): ["ipm"], ("d2h2", 6): ["ipm"]}
    assert Attack.from_record(attack.to_record()) == attack


def test_attacks_in_a_scenario_file_and_by_dotted_overrides(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[[attacks]]\nkind = "sign-flip"\nfraction = 0.3\n\n'
                    '[[attacks]]\nkind = "udp-flood"\nnodes = ["d1h1"]\nstart_round = 5\n')
    scenario = load_scenario(path, ["attacks.0.scale=2", "attacks.1.kind=icmp-flood",
                                    "attacks.2.kind=port-scan", "attacks.2.nodes=['d2h2']"])
    assert [a["kind"] for a in scenario["attacks"]] == ["sign-flip", "icmp-flood", "port-scan"]
    assert scenario["attacks"][0]["scale"] == 2.0 and scenario["attacks"][1]["start_round"] == 5
    assert scenario["attacks"][1]["payload_bytes"] == 1000  # the new kind's defaults
    assert load_scenario(None, ["attacks.0.kind=alie", "attacks.0.fraction=0.2"])["attacks"][0]["z"] == 0.0
    with pytest.raises(ScenarioError, match="'attacks.3' is not an entry .there are 2; use attacks.2"):
        load_scenario(path, ["attacks.3.kind=alie"])
    with pytest.raises(ScenarioError, match="attacks.0.kind must be one of"):
        load_scenario(None, ["attacks.0.fraction=0.3"])
    path.write_text("attacks = 3\n")
    with pytest.raises(ScenarioError, match=r"'attacks' must be a list of tables"):
        load_scenario(path)


def test_traffic_timeline_starts_keeps_and_stops_attackers_on_round_boundaries():
    flood, = resolve({"kind": "udp-flood", "nodes": ["d1h1"], "start_round": 2, "stop_round": 3})
    scan, = resolve({"kind": "port-scan", "nodes": ["d1h2"], "start_round": 2, "stop_round": 6, "every": 2})
    sign, = resolve({"kind": "sign-flip", "nodes": ["d1h4"]})
    timeline = TrafficTimeline([flood, scan, sign])
    assert timeline.advance(1, 10.0) == ([], [], [])
    start, stop, records = timeline.advance(2, 12.0)
    assert start == [(flood, "d1h1"), (scan, "d1h2")] and stop == [] and records == []
    start, stop, records = timeline.advance(3, 14.0)
    assert start == [] and stop == [(scan, "d1h2")]
    assert [(r["node"], r["round"], r["start"], r["stop"]) for r in records] == [
        ("d1h1", 2, 12.0, 14.0), ("d1h2", 2, 12.0, 14.0)]
    start, stop, records = timeline.advance(5, 18.0)  # round 4 passed unseen: the scan never ran in it
    assert (start, stop) == ([], [(flood, "d1h1")])
    assert [(r["node"], r["round"], r["start"], r["stop"]) for r in records] == [("d1h1", 3, 14.0, 18.0)]
    start, stop, records = timeline.advance(6, 19.0)
    assert (start, stop, records) == ([(scan, "d1h2")], [], [])
    stop, records = timeline.finish(20.0)
    assert stop == [(scan, "d1h2")]
    assert [(r["node"], r["round"], r["kind"], r["target"]) for r in records] == [
        ("d1h2", 6, "port-scan", scan.params["target"])]

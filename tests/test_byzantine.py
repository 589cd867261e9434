"""A Byzantine domain among four, without a network: its acts, and every honest domain's answer."""

import pytest

from common.keys import controller_party, inspector_party, run_keys
from controllers.byzantine import ACTS, ByzantinePlan
from controllers.defense import DefenseConfig, Log
from controllers.domain import Datagram, DomainLogic
from controllers.reports import InspectionReport, ReportChannel
from sdfl.scoring import score_byzantine
from topologies.layout import make_layout

IMPOSSIBLE = ["round 4000000000 is not a round of this run (1-20)"]
FLIPPED_REMOTE = {"off_norm": 0.35, "off_home": 0.65}
HONEST_REMOTE = {"off_norm": 0.0, "off_home": 0.1}


class Federation:
    """Four domains' logic, their datagrams delivered until none is left."""

    def __init__(self, graph: str, byzantine: ByzantinePlan | None) -> None:
        layout = make_layout(4, 2, graph)
        self.network = layout.to_description("user", monitor=True)
        self.keys = run_keys(b"federation secret", 4, {})
        self.logic = {d: DomainLogic(self.network, d, keys=self.keys[controller_party(d)], defense=DefenseConfig(),
                                     poll_interval=1.0, byzantine=byzantine if d == 4 else None)
                      for d in range(1, 5)}
        self.at = {self.network.domain(d).coordination.address: d for d in self.logic}
        self.records = {d: [] for d in self.logic}
        self.sealers = {d: ReportChannel(self.keys[inspector_party(d)][controller_party(d)], seq=0) for d in self.logic}
        self.now = 10.0

    def _take(self, domain: int, effects: list) -> list:
        self.records[domain] += [e.record for e in effects if isinstance(e, Log)]
        return [(domain, e) for e in effects if isinstance(e, Datagram)]

    def report(self, domain: int, round_: int, violations: dict, remote: dict | None = None) -> None:
        self.now += 1.0
        report = self.sealers[domain].seal(InspectionReport(round_, {}, violations, remote or {}))
        queue = self._take(domain, self.logic[domain].report(self.now, report,
                                                             self.network.domain(domain).inspection.address))
        while queue:
            sender, datagram = queue.pop(0)
            receiver = self.at[datagram.address]
            self.now += 0.001
            queue += self._take(receiver, self.logic[receiver].notice(
                self.now, datagram.data, self.network.domain(sender).coordination.address))


@pytest.mark.parametrize("graph", ["ring", "mesh"])
def test_a_byzantine_domain_among_four_is_refused_rejected_and_logged_at_every_honest_domain(graph):
    plan = ByzantinePlan(rounds=(3, 4), acts=ACTS, victims=("d2h1", "d3h2"))
    federation = Federation(graph, plan)
    for round_ in (1, 2):  # domain 1 bans its own flooder: a home ban the Byzantine domain will try to lift
        federation.report(1, round_, {"d1h2": IMPOSSIBLE})
    for round_ in (1, 2, 3, 4):  # its own flooder d4h1, caught in rounds 3 and 4, it shields
        federation.report(4, round_, {"d4h1": IMPOSSIBLE} if round_ >= 3 else {})
    assert "d4h1" not in federation.logic[4].banned
    for domain in (1, 2):  # two honest domains saw d4h1's flipped update of round 5 cross their borders
        federation.report(domain, 6, {}, {"d4h1": FLIPPED_REMOTE, "d3h1": HONEST_REMOTE})
    home = {h.name: h.domain for h in federation.network.hosts}
    score = score_byzantine(federation.records, 4, home, malicious={"d1h2", "d4h1"})
    assert set(score["acts"]) == set(ACTS)  # every act happened
    assert score["unanswered"] == []  # ... and met its answer at each of domains 1-3
    assert score["honest_hosts_dropped"] == [] and score["home_bans_lifted"] == []
    assert score["forged_route_changes"] == []
    for d in (1, 2, 3):
        logic = federation.logic[d]
        assert logic.banned == {"d1h2", "d4h1"}  # the home ban stands, the shielded host is dropped by quorum
        assert not logic.core.down_links
        assert logic.ledger.equivocators() == {4}
        assert all(r["why"] for r in federation.records[d] if r["type"] in ("notice_rejected", "decision_refused"))
    chains = [{o: [x.raw for x in c] for o, c in federation.logic[d].ledger.chains.items() if o != 4}
              for d in (1, 2, 3)]
    assert chains[0] == chains[1] == chains[2]  # the honest domains hold one history


def test_without_a_byzantine_domain_nothing_is_refused():
    federation = Federation("ring", None)
    for round_ in (1, 2):
        federation.report(1, round_, {"d1h2": IMPOSSIBLE})
    assert all(federation.logic[d].banned == {"d1h2"} for d in (1, 2, 3, 4))
    assert not any(r["type"] in ("decision_refused", "notice_rejected", "equivocation")
                   for records in federation.records.values() for r in records)


def test_the_scenario_entry_names_a_domain_its_acts_and_needs_fuhst():
    from common.schema import ScenarioError
    from sdfl.runner import byzantine_plans, run_plan
    from sdfl.scenario import load_scenario

    scenario = load_scenario("scenarios/byzantine.toml")
    attacks = run_plan(scenario)[3]
    [plan] = byzantine_plans(attacks).values()
    assert plan.rounds == (4, 7, 10, 13) and plan.acts == ACTS
    assert plan.victims and not set(plan.victims) & {n for a in attacks for n in a.nodes}  # honest hosts
    assert ByzantinePlan.from_json(plan.to_json()) == plan  # as the controller reads it
    entry = '{kind="byzantine-domain", domain=%s%s}'
    for bad, why in ((entry % (9, ""), "domain 9 is not a domain"),
                     (entry % (4, ', nodes=["d1h1"]'), "names its 'domain'"),
                     (entry % (4, ', acts=["dance"]'), "must name acts")):
        with pytest.raises(ScenarioError, match=why):
            run_plan(load_scenario("scenarios/byzantine.toml", overrides=[f"attacks=[{bad}]"]))
    with pytest.raises(ScenarioError, match="set defense.fuhst = true"):
        run_plan(load_scenario("scenarios/byzantine.toml", overrides=["defense.fuhst=false"]))


def test_one_domains_accusation_drops_no_one_a_quorum_does_and_only_past_the_warm_up_and_the_bar():
    federation = Federation("mesh", None)
    federation.report(1, 4, {}, {"d4h1": FLIPPED_REMOTE})  # evidence of round 3: still the warm-up
    assert not [r for r in federation.records[1] if r["type"] == "accusation"]
    federation.report(1, 6, {}, {"d4h1": FLIPPED_REMOTE, "d3h1": HONEST_REMOTE})
    [accusation] = [r for r in federation.records[1] if r["type"] == "accusation"]
    assert accusation["node"] == "d4h1" and accusation["round"] == 5  # the honest sender is below the bar
    assert all("d4h1" not in federation.logic[d].banned for d in (1, 2, 3, 4))  # one accuser: no drop
    federation.report(1, 7, {}, {"d4h1": FLIPPED_REMOTE})
    assert len([r for r in federation.records[1] if r["type"] == "accusation"]) == 1  # accused once
    federation.report(3, 6, {}, {"d4h1": FLIPPED_REMOTE})
    assert all("d4h1" in federation.logic[d].banned for d in (1, 2, 3))  # a quorum of two: dropped
    assert "d4h1" not in federation.logic[4].banned  # its home decides its own port

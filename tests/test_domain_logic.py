"""The domain logic behind the controller app, driven as the app and the simulation drive it."""

import pickle

from common.keys import controller_party, inspector_party, run_keys
from controllers.core import ArpReply, FlowRule, RuleKind
from controllers.defense import DefenseConfig, Log
from controllers.domain import DEFENSE_CHECKPOINT_S, Datagram, DomainLogic, LedgerLine, Persist, StatsRequest, ToSwitch
from controllers.reports import InspectionReport, ReportChannel
from topologies.layout import make_layout

LAYOUT = make_layout(2, 3, "line")
NETWORK = LAYOUT.to_description("user", monitor=True)
KEYS = run_keys(b"test secret", 2, {})
IMPOSSIBLE = ["round 4000000000 is not a round of this run (1-20)"]


def logic(domain, state=None, keys=KEYS, ledger=(), network=NETWORK):
    return DomainLogic(network, domain, keys=keys.get(controller_party(domain), {}), defense=DefenseConfig(),
                       poll_interval=1.0, state=state, ledger=ledger)


def sealer(domain):
    return ReportChannel(KEYS[inspector_party(domain)][controller_party(domain)], seq=0)


def records(effects, kind):
    return [e.record for e in effects if isinstance(e, Log) and e.record["type"] == kind]


def ban_by_reports(d1, seal):
    """Two rounds of impossible frames from d1h2: the strong evidence that bans at once."""
    address = NETWORK.domain(1).inspection.address
    d1.report(10.0, seal.seal(InspectionReport(1, {}, {"d1h2": IMPOSSIBLE})), address)
    return d1.report(11.0, seal.seal(InspectionReport(2, {}, {"d1h2": IMPOSSIBLE})), address)


def test_a_ban_programs_every_switch_tells_every_domain_and_persists():
    d1 = logic(1)
    effects = ban_by_reports(d1, sealer(1))
    drops = [e for e in effects if isinstance(e, ToSwitch) and isinstance(e.message, FlowRule)]
    assert {e.message.kind for e in drops} >= {RuleKind.BAN_PORT} and d1.banned == {"d1h2"}
    assert [e.address for e in effects if isinstance(e, Datagram)] == [NETWORK.domain(2).coordination.address]
    assert records(effects, "ban")[0]["node"] == "d1h2" and isinstance(effects[-1], Persist)
    assert effects[-1].with_defense  # the detector's state goes with the ban its report decided


def test_what_the_detector_learnt_is_saved_every_checkpoint_interval_not_every_round():
    d1, seal, address = logic(1), sealer(1), NETWORK.domain(1).inspection.address
    calm = {"off_norm": 0.0, "off_home": 0.0}
    saved = []
    for round_, now in enumerate((10.0, 12.0, 14.0, 10.0 + DEFENSE_CHECKPOINT_S, 22.0), start=1):
        effects = d1.report(now, seal.seal(InspectionReport(round_, {"d1h1": calm, "d1h2": calm})), address)
        saved.append(any(e.with_defense for e in effects if isinstance(e, Persist)))
    assert saved == [True, False, False, True, False]


def test_the_other_domain_follows_the_signed_ban_and_rejects_its_replay():
    d1, d2 = logic(1), logic(2)
    notice = next(e for e in ban_by_reports(d1, sealer(1)) if isinstance(e, Datagram))
    sender = NETWORK.domain(1).coordination.address
    followed = d2.notice(12.0, notice.data, sender)
    assert d2.banned == {"d1h2"} and records(followed, "ban")[0]["origin"] == 1
    assert [e.record["in_force"] for e in followed if isinstance(e, LedgerLine)] == [True]
    assert not any(isinstance(e, Datagram) for e in followed)  # two domains: no one else to relay to
    assert records(d2.notice(13.0, notice.data, sender), "notice_duplicate")


def test_a_host_that_aggregated_another_domains_banned_senders_poisoned_model_is_an_echo_there():
    d1, d2 = logic(1), logic(2)
    notice = next(e for e in ban_by_reports(d1, sealer(1)) if isinstance(e, Datagram))  # d1h2, rounds 1-2
    d2.notice(12.0, notice.data, NETWORK.domain(1).coordination.address)
    seal, address = sealer(2), NETWORK.domain(2).inspection.address
    recovering = {"off_norm": 0.8, "off_home": 0.0}
    effects = d2.report(13.0, seal.seal(InspectionReport(3, {"d2h1": recovering, "d2h2": recovering}, inputs={
        "d2h1": ["d1h2", "d2h2"], "d2h2": ["d2h1"]})), address)
    assert [(r["node"], r["aggregated"], r["set_aside"]["off_norm"]) for r in records(effects, "echo")] == [
        ("d2h1", ["d1h2"], 0.8)]


def test_a_restarted_domain_keeps_its_bans_and_its_ledger_and_asks_its_peers_for_what_it_missed():
    d1, d2 = logic(1), logic(2)
    notice = next(e for e in ban_by_reports(d1, sealer(1)) if isinstance(e, Datagram))
    effects = d2.notice(12.0, notice.data, ("10.0.0.1", 1))
    persisted = [e for e in effects if isinstance(e, Persist)][-1]
    assert not persisted.with_defense  # a notice changes the bans, not what the detector learnt
    held = tuple(bytes.fromhex(e.record["entry"]) for e in effects if isinstance(e, LedgerLine))
    restarted = logic(2, state=pickle.loads(pickle.dumps(persisted.state)), ledger=held)
    started = restarted.started(14.0, 1)
    assert restarted.banned == {"d1h2"} and records(started, "started")[0]["banned"] == ["d1h2"]
    [ask] = [e for e in started if isinstance(e, Datagram)]
    assert ask.address == NETWORK.domain(1).coordination.address
    assert records(restarted.notice(14.0, notice.data, ("10.0.0.1", 1)), "notice_duplicate")
    assert any(isinstance(e.message, FlowRule) and e.message.kind is RuleKind.BAN_SOURCE
               for e in restarted.switch_connected(NETWORK.domain(2).switches[0].dpid))


def test_forged_reports_and_garbage_packet_ins_are_counted_not_obeyed():
    d1 = logic(1)
    address = NETWORK.domain(1).inspection.address
    forged = ReportChannel(b"not the key", seq=0).seal(InspectionReport(1, {}, {"d1h1": IMPOSSIBLE}))
    for _ in range(2):
        assert records(d1.report(1.0, forged, address), "report_rejected")
    dpid = NETWORK.domain(1).switches[0].dpid
    assert records(d1.packet_in(1.0, dpid, 1, 1, b"\x00" * 5), "packet_in_unparsed")
    assert d1.banned == set() and d1.rejected == {"report_rejected": 2, "packet_in_unparsed": 1}
    assert d1.heartbeat(2.0, 1)[0].record["rejected"] == {"report_rejected": 2, "packet_in_unparsed": 1}


def test_without_keys_nothing_is_accepted_and_nothing_announced():
    lonely = logic(1, keys={})
    assert lonely.ledger is None
    assert records(lonely.notice(1.0, b"x" * 60, ("10.0.0.9", 9)), "notice_rejected")
    assert records(lonely.report(1.0, b"x" * 60, ("10.0.0.9", 9)), "report_rejected")


def test_a_switch_gets_meters_then_rules_and_is_polled_when_due():
    d1 = logic(1)
    dpid = NETWORK.domain(1).switches[0].dpid
    effects = d1.switch_connected(dpid)
    assert isinstance(effects[0].message, tuple) and all(isinstance(e.message, FlowRule) for e in effects[1:])
    assert not d1.owns(0xDEAD)
    assert d1.poll(5.0, [dpid]) == [StatsRequest(dpid, with_microflows=True)]  # the first takes every rule
    d1.stats_requested(5.0, dpid, 7, with_microflows=True)
    assert d1.poll(5.5, [dpid]) == []  # an answer is pending


def test_proxy_arp_answers_for_a_known_host_only():
    from scapy.layers.l2 import ARP, Ether

    d1 = logic(1)
    asker, target = LAYOUT.host("d1h1"), LAYOUT.host("d2h2")
    dpid = NETWORK.domain(1).switches[0].dpid
    frame = bytes(Ether(src=asker.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=asker.mac, psrc=asker.ip,
                                                                     pdst=target.ip))
    replies = d1.packet_in(1.0, dpid, asker.port, 0, frame)
    assert [type(e.message) for e in replies] == [ArpReply] and replies[0].message.mac == target.mac
    stranger = bytes(Ether(src=asker.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=asker.mac, psrc=asker.ip,
                                                                       pdst="10.9.9.9"))
    assert d1.packet_in(1.0, dpid, asker.port, 0, stranger) == []


RING = make_layout(3, 2, "ring").to_description("user", monitor=True)
RING_KEYS = run_keys(b"ring secret", 3, {})


def test_a_decision_is_relayed_once_and_a_byzantine_domains_forgeries_are_refused_and_logged():
    from controllers.coordination import Evidence, MessageType, Notice, Stream
    from controllers.ledger import Ledger
    from common.keys import SIGNING, domain_public_keys

    d1, d3 = (logic(d, keys=RING_KEYS, network=RING) for d in (1, 3))
    byzantine = Ledger(2, RING_KEYS[controller_party(2)][SIGNING], domain_public_keys(RING_KEYS[controller_party(2)]))
    honest_host = Evidence(RING.host("d1h1").key, Stream.UPDATE, 1.0, 3, 4)
    foreign_ban = byzantine.decide(Notice(MessageType.BAN, 0, 0, 5, (honest_host,)), 1.0)
    effects = d3.notice(2.0, foreign_ban.raw, RING.domain(2).coordination.address)
    assert "may not ban d1h1" in records(effects, "decision_refused")[0]["why"] and d3.banned == set()
    relayed = [e for e in effects if isinstance(e, Datagram)]  # to domain 1, which it may have been withheld from
    assert [e.address for e in relayed] == [RING.domain(1).coordination.address]
    d1.notice(2.1, relayed[0].data, RING.domain(3).coordination.address)
    assert d1.ledger.chains[2] == d3.ledger.chains[2]  # the same history at both
    fake_link = byzantine.decide(Notice(MessageType.LINK_DOWN, 0, 0, 5, links=((1, 3),)), 3.0)
    effects = d3.notice(4.0, fake_link.raw, RING.domain(2).coordination.address)
    assert records(effects, "decision_refused") and not records(effects, "link_down")
    other_at_2 = Ledger(2, RING_KEYS[controller_party(2)][SIGNING],
                        domain_public_keys(RING_KEYS[controller_party(2)]))
    other_at_2.decide(Notice(MessageType.SUSPECT, 0, 0, 5, (honest_host,)), 1.0)  # another decision 1
    equivocation = d3.notice(5.0, other_at_2.chains[2][0].raw, RING.domain(2).coordination.address)
    [proof] = records(equivocation, "equivocation")
    assert proof["origin"] == 2 and proof["seq"] == 1 and proof["held"] != proof["other"]


def test_the_accusation_quorum_is_the_scenarios_or_f_plus_one():
    from sdfl.scenario import load_scenario

    assert logic(1, keys=RING_KEYS, network=RING).authority.quorum == 2  # 3 domains: f = 0, never one alone
    config = DefenseConfig.from_scenario(load_scenario(None, overrides=["defense.accusation_quorum=3"]))
    chosen = DomainLogic(RING, 1, keys=RING_KEYS[controller_party(1)], defense=config, poll_interval=1.0)
    assert chosen.authority.quorum == 3

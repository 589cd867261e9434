"""Signed decisions, the ledger's chains, catch-up, equivocation, and who may decide what."""

import pytest

from common.keys import SIGNING, controller_party, domain_public_keys, run_keys
from controllers.coordination import Evidence, MessageError, MessageType, Notice, Stream
from controllers.ledger import (Authority, Duplicate, Equivocation, Ledger, decode_decision, decode_heads,
                                default_quorum)
from topologies.layout import make_layout

NETWORK = make_layout(4, 3, "ring").to_description("user")
KEYS = run_keys(b"ledger test", 4, {})
PUBLIC = domain_public_keys(KEYS[controller_party(1)])


def ledger(domain, entries=()):
    return Ledger(domain, KEYS[controller_party(domain)][SIGNING], PUBLIC, entries)


def key(node):
    return NETWORK.host(node).key


def notice(kind, node=None, links=()):
    entries = (Evidence(key(node), Stream.UPDATE, 0.9, 3, 4),) if node else ()
    return Notice(kind, 0, 0, 7, entries, links)


def test_a_decision_is_signed_numbered_and_chained_and_every_other_domain_accepts_it():
    d1, d2 = ledger(1), ledger(2)
    first = d1.decide(notice(MessageType.BAN, "d1h2"), now=100.0)
    second = d1.decide(notice(MessageType.UNBAN, "d1h2"), now=101.5)
    assert (first.seq, second.seq) == (1, 2) and second.previous == first.digest
    assert decode_decision(first.raw).decided_at == 100.0
    assert d2.receive(first.raw).appended == (first,) and d2.receive(second.raw).appended == (second,)
    assert d2.heads() == {1: 2, 2: 0, 3: 0, 4: 0}


def test_one_altered_byte_anywhere_is_rejected_as_forged_or_malformed():
    raw = ledger(1).decide(notice(MessageType.BAN, "d1h2"), now=1.0).raw
    for index in range(len(raw)):
        altered = bytearray(raw)
        altered[index] ^= 0x01
        with pytest.raises(MessageError):
            ledger(2).receive(bytes(altered))


def test_a_domain_cannot_sign_in_another_domains_name():
    impostor = Ledger(1, KEYS[controller_party(3)][SIGNING], PUBLIC)  # domain 3's key, domain 1's name
    forged = impostor.decide(notice(MessageType.BAN, "d2h1"), now=1.0)
    with pytest.raises(MessageError, match="signature does not verify"):
        ledger(2).receive(forged.raw)


def test_a_replay_is_a_duplicate_and_changes_nothing():
    d1, d2 = ledger(1), ledger(2)
    raw = d1.decide(notice(MessageType.BAN, "d1h2"), now=1.0).raw
    d2.receive(raw)
    with pytest.raises(Duplicate):
        d2.receive(raw)
    assert d2.heads()[1] == 1


def test_two_different_decisions_with_one_number_are_equivocation_with_both_as_proof():
    d2 = ledger(2)
    honest_copy = ledger(1).decide(notice(MessageType.BAN, "d1h2"), now=1.0)
    other_copy = ledger(1).decide(notice(MessageType.BAN, "d1h3"), now=1.0)  # same seq 1, other content
    d2.receive(honest_copy.raw)
    with pytest.raises(Equivocation) as proof:
        d2.receive(other_copy.raw)
    assert {proof.value.held.raw, proof.value.other.raw} == {honest_copy.raw, other_copy.raw}
    assert d2.equivocators() == {1} and d2.chains[1] == [honest_copy]


def test_a_decision_beyond_a_gap_waits_for_it_and_a_catch_up_fills_it():
    d1, d3 = ledger(1), ledger(3)
    decisions = [d1.decide(notice(MessageType.BAN, f"d1h{h}"), now=float(h)) for h in (1, 2, 3)]
    assert d3.receive(decisions[2].raw).gap_in == 1 and d3.head(1) == 0
    request = decode_heads(d3.heads_message(), d1.verifiers)
    assert request.requester == 3 and d1.missing(request) == [d.raw for d in decisions]
    assert d3.receive(decisions[0].raw).appended == (decisions[0],)
    assert d3.receive(decisions[1].raw).appended == (decisions[1], decisions[2])  # the held one follows


def test_a_restarted_controller_catches_up_from_a_peer_and_holds_the_same_history():
    d1, d2 = ledger(1), ledger(2)
    for h in (1, 2):
        d2.receive(d1.decide(notice(MessageType.BAN, f"d1h{h}"), now=float(h)).raw)
    restarted = ledger(3)  # was down for both
    assert restarted.behind(decode_heads(d2.heads_message(), restarted.verifiers))
    for raw in d2.missing(decode_heads(restarted.heads_message(), d2.verifiers)):
        restarted.receive(raw)
    assert restarted.chains[1] == d2.chains[1] == d1.chains[1]
    again = ledger(3, [d.raw for d in restarted.chains[1]])  # and from its own file
    assert again.chains == restarted.chains


def test_a_heads_message_in_another_domains_name_is_rejected():
    forged = Ledger(2, KEYS[controller_party(4)][SIGNING], PUBLIC).heads_message()
    with pytest.raises(MessageError, match="signature does not verify"):
        decode_heads(forged, ledger(1).verifiers)


def in_force(decisions, at=3, quorum=2):
    held = ledger(at)
    for decision in decisions:
        held.receive(decision.raw)
    dropped, down = Authority(NETWORK, at, quorum).in_force(held)
    return {node: drop.by for node, drop in dropped.items()}, down


def test_a_home_ban_is_enforced_everywhere_and_only_its_home_lifts_it():
    d1, d2 = ledger(1), ledger(2)
    ban = d1.decide(notice(MessageType.BAN, "d1h2"), now=1.0)
    assert in_force([ban])[0] == {"d1h2": (1,)}
    foreign_unban = d2.decide(notice(MessageType.UNBAN, "d1h2"), now=2.0)
    assert in_force([ban, foreign_unban])[0] == {"d1h2": (1,)}
    assert in_force([ban, d1.decide(notice(MessageType.UNBAN, "d1h2"), now=3.0)])[0] == {}


def test_a_domain_cannot_ban_another_domains_host_and_one_accusation_drops_no_one():
    d2 = ledger(2)
    foreign_ban = d2.decide(notice(MessageType.BAN, "d1h2"), now=1.0)
    assert "may not ban d1h2" in Authority(NETWORK, 3, 2).refusal(foreign_ban)
    accusation = d2.decide(notice(MessageType.ACCUSE, "d1h3"), now=2.0)
    assert in_force([foreign_ban, accusation])[0] == {}


def test_a_quorum_of_accusations_drops_a_shielded_host_and_its_home_cannot_lift_it():
    d1, d2, d4 = ledger(1), ledger(2), ledger(4)
    accusations = [d2.decide(notice(MessageType.ACCUSE, "d1h1"), now=1.0),
                   d4.decide(notice(MessageType.ACCUSE, "d1h1"), now=1.0)]
    home_unban = d1.decide(notice(MessageType.UNBAN, "d1h1"), now=2.0)
    assert in_force(accusations + [home_unban])[0] == {"d1h1": (2, 4)}
    withdrawn = d4.decide(notice(MessageType.UNBAN, "d1h1"), now=3.0)  # an accuser withdraws its own
    assert in_force(accusations + [withdrawn])[0] == {}


def test_an_equivocating_domains_accusations_stop_counting():
    d2, d4 = ledger(2), ledger(4)
    accusation = d2.decide(notice(MessageType.ACCUSE, "d1h1"), now=1.0)
    second = ledger(4)
    first = d4.decide(notice(MessageType.ACCUSE, "d1h1"), now=1.0)
    other = second.decide(notice(MessageType.ACCUSE, "d1h2"), now=1.0)
    held = ledger(3)
    for decision in (accusation, first):
        held.receive(decision.raw)
    assert Authority(NETWORK, 3, 2).in_force(held)[0]["d1h1"].by == (2, 4)
    with pytest.raises(Equivocation):
        held.receive(other.raw)
    assert Authority(NETWORK, 3, 2).in_force(held)[0] == {}


def test_a_link_state_counts_only_from_the_two_domains_it_joins():
    d1, d3 = ledger(1), ledger(3)
    foreign = d3.decide(notice(MessageType.LINK_DOWN, links=((1, 2),)), now=1.0)
    assert "not an end of" in Authority(NETWORK, 4, 2).refusal(foreign)
    assert in_force([foreign], at=4)[1] == set()
    own = d1.decide(notice(MessageType.LINK_DOWN, links=((1, 2),)), now=2.0)
    assert in_force([foreign, own], at=4)[1] == {(1, 2)}
    back = d1.decide(notice(MessageType.LINK_UP, links=((1, 2),)), now=3.0)
    assert in_force([own, back], at=4)[1] == set()


def test_the_default_quorum_is_f_plus_one_and_never_a_single_domain():
    assert [default_quorum(n) for n in (2, 3, 4, 7, 10)] == [2, 2, 2, 3, 4]

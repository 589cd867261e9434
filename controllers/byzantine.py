"""A Byzantine domain controller: what a compromised domain sends the others (pure, time passed in).

A scenario's ``[[attacks]] kind = "byzantine-domain"`` names a domain whose controller runs its
domain as usual (routing, FU-HST, its own bans) and, once in each of the entry's rounds, when its
inspection service reports that round, commits each of its ``acts`` against the other domains:

``ban-honest``     bans an honest host of another domain (not its host: refused everywhere)
``accuse-honest``  accuses that host (one accuser, below any quorum of two or more)
``unban-foreign``  "lifts" the bans other domains put on their own hosts (held as the withdrawal
                   of an accusation it never made: it lifts nothing)
``link-down``      announces a healthy border link between two other domains down (refused)
``forge``          a ban of that host in its home domain's name, the home's next number and
                   chain link, signed with its own key (the signature does not verify)
``replay``         sends every peer the oldest decision it holds of another domain again
``withhold``       sends a decision to one peer only (the others get it from that peer's relay)
``equivocate``     signs two different decisions under one number, one for each half of its
                   peers; once, in its last round, since every later decision of a forked chain
                   is an equivocation to the half that holds the other branch
``shield``         from its first round on, neither bans nor announces the attackers its own
                   FU-HST catches (the honest domains' accusations must drop them at their
                   borders: :meth:`controllers.domain.DomainLogic.report`)

Each act is a record (ground truth, :data:`common.events.Event.BYZANTINE_ACT`) naming the
decision's origin and number, so the run's scoring can find every honest domain's answer to it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass

from common.description import NetworkDescription
from controllers.coordination import Evidence, MessageType, Notice, Stream
from controllers.ledger import GENESIS, Authority, Decision, Ledger

ACTS = ("ban-honest", "accuse-honest", "unban-foreign", "link-down", "forge", "replay", "withhold", "equivocate",
        "shield")
ROUND_ACTS = ACTS[:-1]
"""The acts committed once in each of the entry's rounds; ``shield`` is a standing one."""
EXPECTED_ANSWER = {"ban-honest": "refused", "accuse-honest": "held", "unban-foreign": "held",
                   "link-down": "refused", "forge": "rejected", "replay": "duplicate", "withhold": "held",
                   "equivocate": "equivocation", "shield": "dropped"}
"""What every honest domain's controller must log for each act: the scoring's check."""
FAKE_SCORE = 0.99


@dataclass(frozen=True)
class ByzantinePlan:
    """The acts, the rounds they happen in, and the honest hosts of other domains they target
    (chosen with the scenario's seed: :func:`attacks.plan.resolve_attacks`)."""

    rounds: tuple[int, ...]
    acts: tuple[str, ...]
    victims: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ByzantinePlan:
        fields = json.loads(text)
        return cls(tuple(fields["rounds"]), tuple(fields["acts"]), tuple(fields["victims"]))


@dataclass(frozen=True)
class Act:
    """One act: the bytes it sends to each peer, the decision it appended to the domain's own
    chain (if any), and its ground-truth record's fields."""

    sends: tuple[tuple[int, bytes], ...]
    appended: Decision | None
    record: dict


class ByzantineController:
    """The acts of ``domain``'s compromised controller, over the ledger it signs with;
    ``links``: the network's border links."""

    def __init__(self, plan: ByzantinePlan, description: NetworkDescription, domain: int, ledger: Ledger,
                 authority: Authority, peers: list[int], links: list[tuple[int, int]]) -> None:
        self.plan = plan
        self.links = [link for link in links if domain not in link]
        self.description = description
        self.domain = domain
        self.ledger = ledger
        self.authority = authority
        self.peers = sorted(peers)
        self._turn = 0

    def acts(self, now: float, round_: int) -> list[Act]:
        """What it does when its domain reports ``round_`` (nothing outside its rounds)."""
        if round_ not in self.plan.rounds or not self.peers:
            return []
        victim = self.plan.victims[self._turn % len(self.plan.victims)] if self.plan.victims else None
        self._turn += 1
        done: list[Act] = []
        for name in (act for act in ROUND_ACTS if act in self.plan.acts):  # equivocation last
            if name == "equivocate" and round_ != max(self.plan.rounds):
                continue
            done += getattr(self, "_" + name.replace("-", "_"))(now, round_, victim)
        return done

    def shields(self, round_: int, node: str) -> bool:
        """Whether it keeps its own host ``node``, just caught in ``round_``, from its ban."""
        return ("shield" in self.plan.acts and round_ >= min(self.plan.rounds)
                and self.description.host(node).domain == self.domain)

    def _evidence(self, node: str) -> Evidence:
        return Evidence(self.description.host(node).key, Stream.UPDATE, FAKE_SCORE, 3, 3)

    def _decide(self, act: str, now: float, round_: int, notice: Notice, to: list[int], **detail) -> Act:
        decision = self.ledger.decide(notice, now)
        return Act(tuple((peer, decision.raw) for peer in to), decision,
                   self._record(act, round_, decision, to, **detail))

    def _record(self, act: str, round_: int, decision: Decision, to: list[int], **detail) -> dict:
        return {"act": act, "round": round_, "origin": decision.origin, "seq": decision.seq, "to": to,
                "kind": decision.notice.type.name.lower(), "expected": EXPECTED_ANSWER[act], **detail}

    def _notice(self, type_: MessageType, round_: int, node: str) -> Notice:
        return Notice(type_, self.domain, 0, round_, (self._evidence(node),))

    def _ban_honest(self, now, round_, victim) -> list[Act]:
        if victim is None:
            return []
        return [self._decide("ban-honest", now, round_, self._notice(MessageType.BAN, round_, victim), self.peers,
                             target=victim)]

    def _accuse_honest(self, now, round_, victim) -> list[Act]:
        if victim is None:
            return []
        return [self._decide("accuse-honest", now, round_, self._notice(MessageType.ACCUSE, round_, victim),
                             self.peers, target=victim)]

    def _unban_foreign(self, now, round_, _victim) -> list[Act]:
        banned_at_home = [node for node, drop in self.authority.in_force(self.ledger)[0].items()
                          if drop.by != (self.domain,) and len(drop.by) == 1
                          and drop.decision.notice.type is MessageType.BAN]
        return [self._decide("unban-foreign", now, round_, self._notice(MessageType.UNBAN, round_, node), self.peers,
                             target=node) for node in banned_at_home]

    def _link_down(self, now, round_, _victim) -> list[Act]:
        if not self.links:
            return []
        link = self.links[self._turn % len(self.links)]
        notice = Notice(MessageType.LINK_DOWN, self.domain, 0, round_, links=(link,))
        return [self._decide("link-down", now, round_, notice, self.peers, link=list(link))]

    def _forge(self, now, round_, victim) -> list[Act]:
        if victim is None:
            return []
        home = self.description.host(victim).domain
        chain = self.ledger.chains[home]
        notice = Notice(MessageType.BAN, home, len(chain) + 1, round_, (self._evidence(victim),))
        forged = self.ledger.sign(notice, now, chain[-1].digest if chain else GENESIS)
        return [Act(tuple((peer, forged.raw) for peer in self.peers), None,
                    self._record("forge", round_, forged, self.peers, target=victim))]

    def _replay(self, now, round_, _victim) -> list[Act]:
        held = [chain[0] for origin, chain in sorted(self.ledger.chains.items()) if origin != self.domain and chain]
        if not held:
            return []
        return [Act(tuple((peer, held[0].raw) for peer in self.peers), None,
                    self._record("replay", round_, held[0], self.peers))]

    def _withhold(self, now, round_, victim) -> list[Act]:
        if victim is None:
            return []
        notice = self._notice(MessageType.SUSPECT, round_, victim)
        return [self._decide("withhold", now, round_, notice, self.peers[:1], target=victim,
                             withheld_from=self.peers[1:])]

    def _equivocate(self, now, round_, victim) -> list[Act]:
        if victim is None:
            return []
        half = max(1, len(self.peers) // 2)
        first, second = self.peers[:half], self.peers[half:]
        one = self.ledger.decide(self._notice(MessageType.SUSPECT, round_, victim), now)
        accusation = dataclasses.replace(self._notice(MessageType.ACCUSE, round_, victim), seq=one.seq)
        other = self.ledger.sign(accusation, now, one.previous)
        return [Act(tuple((peer, one.raw) for peer in first) + tuple((peer, other.raw) for peer in second), one,
                    self._record("equivocate", round_, one, self.peers, target=victim, split=[first, second]))]

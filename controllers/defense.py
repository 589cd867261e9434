"""One domain's FU-HST: observations in, bans, unbans and notices out (pure, time passed in).

The controller app feeds it flow features at every poll and update features at every round the
inspection service decodes, and carries out what it returns: :class:`Ban` and :class:`Unban`
become drop rules, :class:`Send` a signed decision to every other domain, :class:`Log` a line in
the controller's event file (every verdict that flagged, every ban, with score and features: why
was d2h3 banned?). It decides about its own domain's hosts only; what other domains decided, and
whether it is theirs to decide, is the ledger's (:mod:`controllers.ledger`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import statistics
from dataclasses import dataclass


from common.description import NetworkDescription
from common.events import Event, event
from controllers.coordination import Evidence as NoticeEntry
from controllers.coordination import MessageType, Notice, Stream
from controllers.detector import DETECTORS, STRONG_WEIGHT, Evidence
from controllers.features import (FLOW_FEATURES, UPDATE_FEATURES, beyond_honest_spread, excess_over_normal,
                                  measured_warmup_rounds)


ECHO_ROUNDS = 3
"""Rounds after a node aggregated a model since shown poisoned in which its update is an echo:
an honest node recovering from optimal ALIE's models took steps several times its usual size for
three rounds (README, the worst cases on the testbed), and a step that large along the way back
dwarfs the part its own data adds, so it points less along its home direction too."""


@dataclass(frozen=True)
class DefenseConfig:
    """The scenario's ``[defense]`` knobs, as the controller needs them."""

    detector: str = "fuhst"
    ban_after_m: int = 3
    ban_after_n: int = 4
    warmup_rounds: int = 4
    flow_span_s: float = 2.0
    window_size: int = 8
    knobs: dict = dataclasses.field(default_factory=dict)
    """The detector's own knobs (:attr:`controllers.detector.DetectorKind.knobs`); defaults if absent."""
    ban_duration_s: float = 0.0
    seed: int = 0
    round_wait_s: float = 3.0
    accusation_quorum: int = 0
    """Domains whose accusations drop a remote host (0: :func:`controllers.ledger.default_quorum`)."""
    accuse_bar: float = 0.45
    """A remote sender's ``off_home`` at or above which its update is evidence enough to accuse
    it (0: never accuse). Honest remote senders stayed at or below 0.26 in ``sdfl simulate`` of
    paper.toml and its clean run, seeds 0-4; every flipper's first flipped update was 0.47-0.73."""
    ban_bar: float = 0.45
    """A local sender's ``off_home`` at or above which one update bans it (0: never on one
    update). The home domain measures its own senders from their exact starting points: in
    ``sdfl simulate`` of paper.toml's network, seeds 0-4, every attack of the library, honest
    ones stayed at or below 0.37 after the warm-up, every flipper's first flipped update was
    0.68-0.84 (label flip's 0.45-0.60, IPM's 0.61-0.84)."""

    @classmethod
    def from_scenario(cls, scenario: dict) -> DefenseConfig:
        """The config of a scenario; a domain's inspection waits for a round's late senders
        one and a half round periods (nodes keep their own pace, a few seconds apart)."""
        defense = scenario["defense"]
        m, _, n = defense["ban_after"].partition("/")
        same = {f.name: defense[f.name] for f in dataclasses.fields(cls) if f.name in defense}
        knobs = {name: defense[name] for name in DETECTORS[defense["detector"]].knobs}
        return cls(**same, knobs=knobs, ban_after_m=int(m), ban_after_n=int(n), seed=scenario["seed"],
                   round_wait_s=max(1.5, 1.5 * scenario["dfl"]["round_period_s"]))

    def to_json(self) -> str:
        """How it crosses into the controller process (``SDFL_DEFENSE``)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DefenseConfig:
        """The inverse of :meth:`to_json`; an unknown or missing knob is a ValueError naming it."""
        fields = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(fields, dict) or set(fields) != known:
            unexpected = sorted(set(fields) ^ known) if isinstance(fields, dict) else ["(not an object)"]
            raise ValueError(f"defense config: unknown or missing knobs {unexpected}")
        kind = DETECTORS.get(fields["detector"])
        if kind is None:
            raise ValueError(f"defense config: unknown detector {fields['detector']!r}")
        strangers = sorted(set(fields["knobs"]) - set(kind.knobs)) if isinstance(fields["knobs"], dict) else ["?"]
        if strangers:
            raise ValueError(f"defense config: {kind.name} has no knobs {strangers}")
        return cls(**fields)


@dataclass(frozen=True)
class Ban:
    node: str


@dataclass(frozen=True)
class Unban:
    node: str


@dataclass(frozen=True)
class Send:
    """A notice for every other domain (the app's channel numbers, encodes and tags it)."""

    notice: Notice


@dataclass(frozen=True)
class Log:
    record: dict


class DomainDefense:
    def __init__(self, domain: int, description: NetworkDescription, config: DefenseConfig) -> None:
        self.domain = domain
        self.config = config
        self.description = description
        self.local = sorted(h.name for h in description.hosts_in(domain))
        # The update warm-up is short (a few rounds of the domain's senders): a reference window
        # of at most half of it leaves the other half's scores to calibrate the threshold.
        observed_rounds = measured_warmup_rounds(config.warmup_rounds)
        # Bars: a flow verdict is strong evidence alone (a host's own traffic is nobody's echo),
        # so the flow bar lies above every warm-up poll; update verdicts weigh by strength, each
        # host's against its own usual score (controllers.detector.StreamDetector._calibrate).
        self.streams = {Stream.FLOW: self._detector(FLOW_FEATURES, config.window_size, 1, per_host=False),
                        Stream.UPDATE: self._detector(UPDATE_FEATURES, min(config.window_size, max(
                            2, len(self.local) * observed_rounds // 2)), 2, per_host=True)}
        # The last DFL round the domain has seen updates of: both streams learn until the
        # warm-up rounds are over (the flow stream's polls have no round of their own).
        self.round = 0
        self._warmup_flows: collections.deque = collections.deque(maxlen=4096)
        self.normal_flow: dict[str, float] = {}
        self.evidence = {stream: Evidence(config.ban_after_m, config.ban_after_n) for stream in Stream}
        self.banned_until: dict[str, float] = {}
        self.accused: set[str] = set()  # remote senders this domain accused
        # Local senders banned on their updates -> the first round of the evidence: their models
        # from that round on are poisoned. And which models each local sender started from,
        # by the round of those models (the last ECHO_ROUNDS of them).
        self.poisoned_from: dict[str, int] = {}
        self.aggregated: dict[int, dict[str, set[str]]] = {}
        self.turned: dict[str, int] = {}  # local sender -> the last round its update was beyond the bar

    def _detector(self, keys, window_size: int, salt: int, per_host: bool):
        return DETECTORS[self.config.detector].build(keys, window_size, self.config.seed * 7 + salt,
                                                     self.config.knobs, per_host)

    def banned(self, node: str) -> bool:
        return node in self.banned_until

    def on_poll(self, now: float, features: dict[str, dict[str, float]],
                violations: dict[str, list[str]] | None = None) -> list:
        """One poll of the domain's hosts (absolute flow features per host), and the floods the
        switch's meters saw (:func:`controllers.features.flood_violations`): each strong
        evidence, warm-up or not, so two polls of one ban.

        Each host is judged on its excess over its peers in the same poll and over the domain's
        normal level (:func:`controllers.features.excess_over_normal`); that level is the
        median of the warm-up's busy polls. Silent hosts (nothing sent, nothing dropped) are no
        observation: an idle host attacks no one.
        """
        busy = {n: f for n, f in features.items()
                if not self.banned(n) and (f["packet_rate"] > 0 or f["dropped_rate"] > 0)}
        if self.round < self.config.warmup_rounds:
            self._warmup_flows += busy.values()
            self.normal_flow = {k: statistics.median(f[k] for f in self._warmup_flows) for k in FLOW_FEATURES} \
                if self._warmup_flows else {}
        excess = excess_over_normal({n: f for n, f in features.items() if not self.banned(n)}, self.normal_flow)
        return (self._violations(now, Stream.FLOW, violations, None)
                + self._observe(now, Stream.FLOW, {n: excess[n] for n in sorted(busy)}, None))

    def on_round(self, now: float, round_: int, features: dict[str, dict[str, float]],
                 violations: dict[str, list[str]] | None = None,
                 remote: dict[str, dict[str, float]] | None = None,
                 inputs: dict[str, list[str]] | None = None,
                 poisoned_elsewhere: dict[str, int] | None = None) -> list:
        """The update features of one round's senders (the inspection service's report), and
        the frames local senders published that no honest agent could (a round beyond the
        run, tensors not of the model's shapes, a name not its own): each such frame is strong
        evidence, warm-up or not, so two of them ban. ``remote``: other domains' senders'
        features of the round before; one far enough from its home direction after the warm-up
        is accused. ``inputs``: the models of the round before each sender was seen to receive;
        ``poisoned_elsewhere``: remote senders other domains banned on their updates, with the
        first round of that evidence (:meth:`_echoes`)."""
        self.round = max(self.round, round_)
        echoes = {n: culprits for n, culprits in self._echoes(round_, inputs or {}, poisoned_elsewhere or {}).items()
                  if n in features and not self.banned(n) and not self.evidence[Stream.UPDATE].count(n)[0]}
        return (self._violations(now, Stream.UPDATE, violations, round_)
                + self._turned_away(now, round_, features, echoes)
                + [Log(event(Event.ECHO, now, node=node, round=round_, aggregated=culprits,
                             set_aside=features[node]))
                   for node, culprits in sorted(echoes.items())]
                + self._observe(now, Stream.UPDATE, {n: dict.fromkeys(f, 0.0) if n in echoes else f
                                                     for n, f in features.items()}, round_)
                + self._accuse(now, round_ - 1, remote or {}))

    def _echoes(self, round_: int, inputs: dict[str, list[str]],
                poisoned_elsewhere: dict[str, int]) -> dict[str, list[str]]:
        """Local senders whose update of ``round_`` is an echo, with the banned senders whose
        poisoned models they aggregated in the last :data:`ECHO_ROUNDS` rounds. An honest node
        recovering from such a model takes steps as large as the damage it undoes, which point
        less along its home the larger they are: for those rounds its features are no evidence
        for the trees (set aside, and logged); the bar on turning from home bans it on a second
        turned update in a row (:meth:`_turned_away`), the frame violations as ever. Known bans
        only, as of before this round's report: a colluder's first poisoned update is judged
        whole; and a node with evidence of its own in its window (on :meth:`on_round`) is no
        echo: a Gaussian colluder flagged on its first noisy update was covered by its banned
        colleagues' models for four rounds before this (README). What this lets an attacker do:
        a node whose poisoned updates drew no verdict yet, and that aggregated a banned
        colluder's poisoned models (or a Byzantine domain's sacrificed host's), may send updates
        of any size turned from its home by less than the bar, for at most :data:`ECHO_ROUNDS`
        rounds after its last such model, and one turned beyond it."""
        if inputs:  # a report of violations alone says nothing of what was aggregated
            self.aggregated[round_ - 1] = {n: set(senders) for n, senders in inputs.items() if n in self.local}
        for old in [r for r in self.aggregated if r < round_ - ECHO_ROUNDS]:
            del self.aggregated[old]
        poisoned = {**poisoned_elsewhere, **self.poisoned_from}
        echoes: dict[str, set[str]] = {}
        for models_round, by_node in self.aggregated.items():
            for node, senders in by_node.items():
                culprits = {s for s in senders if poisoned.get(s, models_round + 1) <= models_round}
                if culprits:
                    echoes.setdefault(node, set()).update(culprits)
        return {node: sorted(culprits) for node, culprits in echoes.items()}

    def _turned_away(self, now: float, round_: int, features: dict[str, dict[str, float]],
                     echoes: dict[str, list[str]]) -> list:
        """Ban each local sender whose update, after the warm-up, turned from its home direction
        beyond the bar: the earliest evidence there is (a flipper's first poisoned update), and
        unmistakable. What it sent is not learnt as normal: the trees then see it banned.
        An echo's first turned update may be its way back from a poisoned model (honest nodes
        after optimal IPM's models reached 0.45-0.50, README): a second in a row bans it."""
        if not self.config.ban_bar or round_ <= self.config.warmup_rounds:
            return []
        actions: list = []
        for node, measured in sorted(features.items()):
            score = measured["off_home"]
            if node not in self.local or self.banned(node) or score < self.config.ban_bar:
                continue
            turned_before, self.turned[node] = self.turned.get(node) == round_ - 1, round_
            if node in echoes and not turned_before:
                continue
            actions.append(Log(event(Event.VERDICT, now, node=node, stream=Stream.UPDATE.name.lower(), round=round_,
                                     violation=f"off_home {score:.2f} >= ban_bar {self.config.ban_bar:g}: "
                                               "turned away from its home direction",
                                     evidence=[self.config.ban_after_m, 1])))
            actions += self._ban(now, node, Stream.UPDATE, score, self.config.ban_after_m, 1, round_, measured)
        return actions

    def _accuse(self, now: float, round_: int, remote: dict[str, dict[str, float]]) -> list:
        """Accuse (once) each remote sender whose update left its home direction beyond the bar.
        Only a quorum of domains' accusations drops it (:class:`controllers.ledger.Authority`)."""
        if not self.config.accuse_bar or round_ <= self.config.warmup_rounds:
            return []
        actions: list = []
        for node, features in sorted(remote.items()):
            score = features["off_home"]
            if node in self.local or node in self.accused or score < self.config.accuse_bar:
                continue
            self.accused.add(node)
            actions += [Log(event(Event.ACCUSATION, now, domain=self.domain, node=node, round=round_, score=score,
                                  features=features)),
                        self._send(MessageType.ACCUSE, round_, node, Stream.UPDATE, score, 1, 1)]
        return actions

    def _violations(self, now: float, stream: Stream, violations: dict[str, list[str]] | None,
                    round_: int | None) -> list:
        """Each violation of a local node is strong evidence on ``stream``; enough of them ban."""
        actions: list = []
        for node, reasons in sorted((violations or {}).items()):
            if node not in self.local or self.banned(node):
                continue
            for why in reasons[:self.config.ban_after_n]:
                ban = self.evidence[stream].add(node, STRONG_WEIGHT)
                m, n = self.evidence[stream].count(node)
                actions.append(Log(event(Event.VERDICT, now, node=node, stream=stream.name.lower(),
                                    round=round_, violation=why, evidence=[m, n])))
                if ban:
                    actions += self._ban(now, node, stream, 1.0, m, n, round_, {"violation": why})
                    break
        return actions

    def _observe(self, now: float, stream: Stream, batch: dict[str, dict], round_: int | None) -> list:
        # A banned node's traffic never reaches the detector's idea of normal.
        batch = {n: f for n, f in sorted(batch.items()) if n in self.local and not self.banned(n)}
        if stream is Stream.UPDATE:
            warming_up = round_ <= self.config.warmup_rounds
        else:  # polls learn until the last warm-up round's updates arrive, i.e. that round's end
            warming_up = self.round < self.config.warmup_rounds
        actions: list = []
        # Updates are judged on what lies beyond honest senders' spread; the log keeps the measures.
        verdicts = self.streams[stream].observe_batch(
            beyond_honest_spread(batch) if stream is Stream.UPDATE else batch, warming_up)
        for node, verdict in verdicts.items():
            if not verdict.warming_up:
                actions += self._judge(now, stream, node, batch[node], verdict, round_)
        if verdicts:  # every score, for the report's plots (only flagged ones get a verdict line)
            actions.append(Log(event(Event.SCORES, now, stream=stream.name.lower(), round=round_,
                                warming_up=warming_up, threshold=self.streams[stream].threshold,
                                scores={n: round(v.score, 4) for n, v in verdicts.items()})))
        return actions

    def _judge(self, now: float, stream: Stream, node: str, features: dict, verdict, round_: int | None) -> list:
        actions: list = []
        # An anomalous update may be an echo: an honest node that aggregated a poisoned model
        # moves oddly too, mildly, so update verdicts weigh by their strength. A host's own
        # traffic is nobody's echo (its replies are not counted): an anomalous flow verdict is
        # unmistakable, so two polls ban (no honest host drew one in README's testbed runs).
        weight = verdict.strength if stream is Stream.UPDATE else STRONG_WEIGHT * verdict.anomalous
        ban = self.evidence[stream].add(node, weight)
        m, n = self.evidence[stream].count(node)
        if verdict.anomalous:
            actions.append(Log(event(Event.VERDICT, now, node=node, stream=stream.name.lower(),
                                round=round_, score=verdict.score, threshold=verdict.threshold,
                                evidence=[m, n], features=features)))
        if ban:
            actions += self._ban(now, node, stream, verdict.score, m, n, round_, features)
        return actions

    def _ban(self, now, node, stream, score, m, n, round_, features) -> list:
        duration = self.config.ban_duration_s
        self.banned_until[node] = now + duration if duration > 0 else float("inf")
        if stream is Stream.UPDATE and round_:  # its models are poisoned from its evidence's first round on
            self.poisoned_from[node] = round_ - n + 1
        for evidence in self.evidence.values():
            evidence.forget(node)
        return [Ban(node), Log(event(Event.BAN, now, domain=self.domain, node=node, stream=stream.name.lower(),
                                     round=round_, score=score, evidence=[m, n], origin=self.domain,
                                     features=features)),
                self._send(MessageType.BAN, round_, node, stream, score, m, n)]

    def _send(self, type_, round_, node, stream, score, m, n) -> Send:
        return Send(Notice(type_, self.domain, 0, round_ or 0,
                           (NoticeEntry(self.description.host(node).key, stream, score, round(m), n),)))

    def expire(self, now: float) -> list:
        """Lift bans whose time is up (probation: the node is watched afresh)."""
        actions: list = []
        for node, until in sorted(self.banned_until.items()):
            if until <= now:
                del self.banned_until[node]
                self.poisoned_from.pop(node, None)
                actions += [Unban(node), Log(event(Event.UNBAN, now, domain=self.domain, node=node,
                                              origin=self.domain)),
                            self._send(MessageType.UNBAN, None, node, Stream.FLOW, 0.0, 0, 0)]
        return actions

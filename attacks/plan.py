"""Which nodes attack, how, and in which rounds: the ``[[attacks]]`` entries of a scenario, resolved.

An entry names a ``kind``, who attacks (``nodes = ["d2h1"]`` or ``fraction = 0.3``), when
(``start_round``, ``stop_round``, ``every``) and the kind's own parameters, all flat in the
same table::

    [[attacks]]
    kind = "sign-flip"
    fraction = 0.3        # of the DFL nodes, rounded down, at least one
    start_round = 3
    scale = 2.0

Resolution is a pure function of the entries, the nodes and the seed, so every run of a
scenario attacks with the same nodes in the same rounds, and the ground truth is known before
the first packet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from common.schema import Field, ScenarioError, between, coerce, non_negative, one_of, positive, strings

POISONING = "poisoning"
TRAFFIC = "traffic"

COMMON: dict[str, Field] = {
    "kind": Field(str, "", help="what the attacker does (see KINDS)"),
    "nodes": Field(list, [], strings, "attacker hosts by name"),
    "fraction": Field(float, 0.0, between(0.0, 1.0), "share of the DFL nodes, chosen with the seed"),
    "spread": Field(bool, True, help="spread a fraction's attackers over the domains"),
    "start_round": Field(int, 1, positive, "first round of the attack"),
    "stop_round": Field(int, 0, non_negative, "last round of the attack (0 = the last round)"),
    "every": Field(int, 1, positive, "attack every n-th round of the window (intermittent)"),
}

_FLOOD = {
    "target": Field(str, "", help="victim host (empty: a seeded honest node, in another domain if any)"),
    "rate_pps": Field(float, 0.0, non_negative, "packets per second (0 = the kind's default)"),
    "low_rate": Field(bool, False, help="the low-rate variant: the default rate divided by 100"),
    "spoof": Field(bool, False, help="random source addresses in 10.0.0.0/8"),
}

KINDS: dict[str, tuple[str, dict[str, Field]]] = {
    "sign-flip": (POISONING, {"scale": Field(float, 1.0, positive, "send -scale x the honest update")}),
    "gaussian": (POISONING, {"sigma": Field(float, 0.5, positive, "std of the noise added to the update")}),
    "alie": (POISONING, {"z": Field(float, 0.0, non_negative,
                                    "std-devs below the colluders' mean (0 = from n and f, as in the paper)")}),
    "ipm": (POISONING, {"epsilon": Field(float, 0.5, positive, "send -epsilon x the colluders' mean update")}),
    "label-flip": (POISONING, {}),
    "garbage": (POISONING, {"mode": Field(str, "inf", one_of("nan", "inf", "huge", "bytes"),
                                          "non-finite values, 1e30s, or random bytes")}),
    "syn-flood": (TRAFFIC, {**_FLOOD, "dst_port": Field(int, 0, between(0, 65535),
                                                        "TCP port flooded (0 = the agents' port)")}),
    "udp-flood": (TRAFFIC, {**_FLOOD, "payload_bytes": Field(int, 1200, between(0, 1472))}),
    "icmp-flood": (TRAFFIC, {**_FLOOD, "payload_bytes": Field(int, 1000, between(0, 1472)),
                             "icmp_type": Field(int, 8, one_of(0, 8),
                                                "8: echo requests; 0: echo replies no one asked for")}),
    "arp-flood": (TRAFFIC, {"target": _FLOOD["target"], "rate_pps": _FLOOD["rate_pps"],
                            "low_rate": _FLOOD["low_rate"]}),
    "connect-flood": (TRAFFIC, {"target": _FLOOD["target"], "rate_pps": _FLOOD["rate_pps"],
                                "low_rate": _FLOOD["low_rate"],
                                "dst_port": Field(int, 0, between(0, 65535), "TCP port (0 = the agents' port)")}),
    "crafted": (TRAFFIC, {"target": _FLOOD["target"], "rate_pps": _FLOOD["rate_pps"],
                          "low_rate": _FLOOD["low_rate"],
                          "packets": Field(list, [], strings, "crafted packets to send in turn (see CRAFTED)"),
                          "dst_port": Field(int, 0, between(0, 65535),
                                            "TCP port of the crafted model frames (0 = the agents' port)")}),
    "port-scan": (TRAFFIC, {
        "target": _FLOOD["target"], "rate_pps": _FLOOD["rate_pps"], "low_rate": _FLOOD["low_rate"],
        "first_port": Field(int, 1, between(1, 65535)), "last_port": Field(int, 1024, between(1, 65535)),
    }),
}

DEFAULT_RATE_PPS = {"syn-flood": 5000.0, "udp-flood": 8000.0, "icmp-flood": 5000.0, "port-scan": 300.0,
                    "arp-flood": 20000.0, "connect-flood": 40.0, "crafted": 20.0}
CRAFTED = ("tcp-zero-length-option", "vxlan", "tcp-179", "tcp-6653", "vlan-100", "vlan-0", "empty-model-frame",
           "far-round-model-frame")
"""Single packets that hung, crashed or fooled a domain's defense once (issue 15): a SYN with a
zero-length TCP option, 8 bytes to VXLAN's port, payloads to BGP's and OpenFlow's ports,
802.1Q-tagged IPv4, a model frame with no tensors (to an address no host has) and one claiming
round 4,000,000,000."""
LOW_RATE_DIVISOR = 100.0


def category(kind: str) -> str:
    return KINDS[kind][0]


def normalize_entry(entry: dict, where: str) -> dict:
    """One ``[[attacks]]`` table checked against its kind, with every default filled in."""
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where} must be a table of settings")
    kind = entry.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ScenarioError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    fields = {**COMMON, **KINDS[kind][1]}
    resolved = {}
    for key, value in entry.items():
        if key not in fields:
            raise ScenarioError(f"{where}: unknown key '{key}' for kind {kind!r} (known: {', '.join(fields)})")
        resolved[key] = coerce(value, fields[key], f"{where}.{key}")
    for key, spec in fields.items():
        resolved.setdefault(key, list(spec.default) if isinstance(spec.default, list) else spec.default)
    if bool(resolved["nodes"]) == (resolved["fraction"] > 0):
        raise ScenarioError(f"{where}: give exactly one of 'nodes' (a list of hosts) or 'fraction' (> 0)")
    if resolved["stop_round"] and resolved["stop_round"] < resolved["start_round"]:
        raise ScenarioError(f"{where}: stop_round {resolved['stop_round']} is before start_round "
                            f"{resolved['start_round']}")
    if kind == "port-scan" and resolved["last_port"] < resolved["first_port"]:
        raise ScenarioError(f"{where}: last_port is below first_port")
    if kind == "crafted":
        unknown = [p for p in resolved["packets"] if p not in CRAFTED]
        if unknown or not resolved["packets"]:
            raise ScenarioError(f"{where}.packets must list some of {', '.join(CRAFTED)}"
                                + (f"; unknown: {unknown[0]!r}" if unknown else ""))
    return resolved


@dataclass(frozen=True)
class Attack:
    """A resolved attack: these nodes do ``kind`` with ``params`` in ``rounds``."""

    kind: str
    nodes: tuple[str, ...]
    rounds: tuple[int, ...]
    params: dict = field(default_factory=dict)

    @property
    def category(self) -> str:
        return category(self.kind)

    def to_record(self) -> dict:
        return {"kind": self.kind, "category": self.category, "nodes": list(self.nodes),
                "rounds": list(self.rounds), "params": dict(self.params)}

    @classmethod
    def from_record(cls, record: dict) -> Attack:
        return cls(record["kind"], tuple(record["nodes"]), tuple(record["rounds"]), dict(record["params"]))


def active_rounds(start: int, stop: int, every: int, rounds: int) -> tuple[int, ...]:
    """Rounds ``start, start + every, ...`` up to ``stop`` (0 = the last round)."""
    last = min(stop or rounds, rounds)
    return tuple(range(start, last + 1, every))


def choose_nodes(count: int, candidates: list[str], domain_of: dict[str, int], spread: bool,
                 rng: np.random.Generator) -> list[str]:
    """``count`` nodes drawn with ``rng``; with ``spread``, domains take turns so none gets two
    before every domain with candidates has one."""
    if count > len(candidates):
        raise ValueError(f"{count} attackers requested but only {len(candidates)} nodes are free")
    if not spread:
        return sorted(rng.choice(sorted(candidates), size=count, replace=False).tolist())
    pools = {}
    for node in sorted(candidates):
        pools.setdefault(domain_of[node], []).append(node)
    for pool in pools.values():
        rng.shuffle(pool)
    order = [int(d) for d in rng.permutation(sorted(pools))]
    chosen: list[str] = []
    while len(chosen) < count:
        for domain in order:
            if pools[domain] and len(chosen) < count:
                chosen.append(pools[domain].pop())
    return sorted(chosen)


def resolve_attacks(entries: list[dict], nodes: list[str], domain_of: dict[str, int], rounds: int,
                    seed: int, dfl_port: int) -> list[Attack]:
    """The scenario's attack entries as :class:`Attack` objects, attackers and victims chosen.

    A ``fraction`` draws among nodes no earlier entry made an attacker, so two entries of 30 %
    make 60 % of the nodes malicious rather than overlapping by chance. A node may not run two
    model-poisoning behaviours in the same round (the second would silently win).
    """
    rng = np.random.default_rng([seed, 0xA77AC])
    attacks: list[Attack] = []
    malicious: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"attacks.{index}"
        if entry["nodes"]:
            unknown = sorted(set(entry["nodes"]) - set(nodes))
            if unknown:
                raise ScenarioError(f"{where}.nodes: {unknown} are not hosts of this network "
                                    f"(hosts: {nodes[0]} ... {nodes[-1]})")
            chosen = sorted(set(entry["nodes"]))
        else:
            count = max(1, math.floor(entry["fraction"] * len(nodes) + 1e-9))
            free = [n for n in nodes if n not in malicious]
            if count > len(free):
                raise ScenarioError(f"{where}.fraction {entry['fraction']} needs {count} attackers but only "
                                    f"{len(free)} nodes are not attacking already")
            chosen = choose_nodes(count, free, domain_of, entry["spread"], rng)
        window = active_rounds(entry["start_round"], entry["stop_round"], entry["every"], rounds)
        if not window:
            raise ScenarioError(f"{where}: start_round {entry['start_round']} is after the last round {rounds}")
        params = {k: v for k, v in entry.items() if k not in COMMON}
        if category(entry["kind"]) == TRAFFIC:
            params = _traffic_params(entry["kind"], params, chosen, nodes, domain_of, malicious | set(chosen),
                                     dfl_port, rng, where)
        malicious.update(chosen)
        attacks.append(Attack(entry["kind"], tuple(chosen), window, params))
    _check_one_poisoning_per_round(attacks)
    return attacks


def _traffic_params(kind, params, attackers, nodes, domain_of, malicious, dfl_port, rng, where) -> dict:
    params = dict(params)
    if params["target"]:
        if params["target"] not in nodes:
            raise ScenarioError(f"{where}.target {params['target']!r} is not a host of this network")
    else:
        home = {domain_of[a] for a in attackers}
        honest = [n for n in nodes if n not in malicious]
        remote = [n for n in honest if domain_of[n] not in home]
        pool = remote or honest
        if not pool:
            raise ScenarioError(f"{where}: no honest node is left to be the target")
        params["target"] = str(rng.choice(sorted(pool)))
    rate = params["rate_pps"] or DEFAULT_RATE_PPS[kind]
    params["rate_pps"] = rate / LOW_RATE_DIVISOR if params["low_rate"] and not params["rate_pps"] else rate
    if kind in ("syn-flood", "connect-flood", "crafted") and not params["dst_port"]:
        params["dst_port"] = dfl_port
    return params


def _check_one_poisoning_per_round(attacks: list[Attack]) -> None:
    seen: dict[tuple[str, int], int] = {}
    for index, attack in enumerate(attacks):
        if attack.category != POISONING:
            continue
        for node in attack.nodes:
            for round_ in attack.rounds:
                other = seen.setdefault((node, round_), index)
                if other != index:
                    raise ScenarioError(f"attacks.{other} and attacks.{index}: {node} would poison with both "
                                        f"{attacks[other].kind!r} and {attack.kind!r} in round {round_}; "
                                        "a node poisons one way at a time")


def malicious_nodes(attacks: list[Attack]) -> list[str]:
    return sorted({n for a in attacks for n in a.nodes})


def attacking_pairs(attacks: list[Attack]) -> dict[tuple[str, int], list[str]]:
    """(node, round) -> the kinds that node runs in that round: the scoring truth."""
    pairs: dict[tuple[str, int], list[str]] = {}
    for attack in attacks:
        for node in attack.nodes:
            for round_ in attack.rounds:
                pairs.setdefault((node, round_), []).append(attack.kind)
    return pairs


class TrafficTimeline:
    """When each traffic attacker sends, driven by the rounds the runner sees the network reach.

    The network is in round ``r`` once every live node has finished round ``r - 1``. Each call
    to :meth:`advance` closes the ground-truth window of the round that ended, stops the
    attackers whose schedule has a gap or ended, and starts those whose schedule begins.
    An attacker active in consecutive rounds keeps sending across the boundary.
    """

    def __init__(self, attacks: list[Attack]) -> None:
        self.windows = [(attack, node) for attack in attacks if attack.category == TRAFFIC for node in attack.nodes]
        self.round = 0
        self._since: dict[int, float] = {}

    @property
    def running(self) -> list[tuple[Attack, str]]:
        return [self.windows[i] for i in sorted(self._since)]

    def advance(self, round_: int, now: float) -> tuple[list, list, list[dict]]:
        """The network reached ``round_``: returns (to start, to stop, ground-truth records).

        Rounds that passed unseen (several finished between two looks) get no window: an
        attacker scheduled only for them never starts, and the ground truth says so.
        """
        started: list[int] = []
        stopped: list[int] = []
        records: list[dict] = []
        while self.round < round_:
            records += self._close_round(now)
            self.round += 1
            for i, (attack, _node) in enumerate(self.windows):
                active = self.round in attack.rounds
                if i in self._since and not active:
                    del self._since[i]
                    if i in started:
                        started.remove(i)
                    else:
                        stopped.append(i)
                elif i not in self._since and active:
                    started.append(i)
                if active:
                    self._since[i] = now
        return [self.windows[i] for i in started], [self.windows[i] for i in stopped], records

    def finish(self, now: float) -> tuple[list, list[dict]]:
        """The run ended: stop everyone still sending, close their last window."""
        records = self._close_round(now)
        stop = self.running
        self._since.clear()
        return stop, records

    def _close_round(self, now: float) -> list[dict]:
        records = []
        for i, since in sorted(self._since.items()):
            if since == now:
                continue  # a round that passed unseen
            attack, node = self.windows[i]
            records.append({"node": node, "kind": attack.kind, "category": TRAFFIC, "round": self.round,
                            "start": since, "stop": now, "target": attack.params["target"],
                            "rate_pps": attack.params["rate_pps"]})
        return records

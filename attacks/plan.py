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

import numpy as np

from attacks.controller import CONTROLLER, CONTROLLER_KINDS
from attacks.kinds import POISONING, TRAFFIC, Attack, AttackKind
from attacks.poisoning import POISONING_KINDS
from attacks.traffic import TRAFFIC_KINDS
from common.schema import Field, ScenarioError, between, coerce, non_negative, positive, strings

COMMON: dict[str, Field] = {
    "kind": Field(str, "", help="what the attacker does (see KINDS)"),
    "nodes": Field(list, [], strings, "attacker hosts by name"),
    "fraction": Field(float, 0.0, between(0.0, 1.0), "share of the DFL nodes, chosen with the seed"),
    "spread": Field(bool, True, help="spread a fraction's attackers over the domains"),
    "start_round": Field(int, 1, positive, "first round of the attack"),
    "stop_round": Field(int, 0, non_negative, "last round of the attack (0 = the last round)"),
    "every": Field(int, 1, positive, "attack every n-th round of the window (intermittent)"),
}

KINDS: dict[str, AttackKind] = {kind.name: kind for kind in (*POISONING_KINDS, *TRAFFIC_KINDS, *CONTROLLER_KINDS)}
"""Every attack kind by name: the scenario's choices."""
LOW_RATE_DIVISOR = 100.0


def normalize_entry(entry: dict, where: str) -> dict:
    """One ``[[attacks]]`` table checked against its kind, with every default filled in."""
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where} must be a table of settings")
    kind = entry.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ScenarioError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    fields = {**COMMON, **KINDS[kind].fields}
    resolved = {}
    for key, value in entry.items():
        if key not in fields:
            raise ScenarioError(f"{where}: unknown key '{key}' for kind {kind!r} (known: {', '.join(fields)})")
        resolved[key] = coerce(value, fields[key], f"{where}.{key}")
    for key, spec in fields.items():
        resolved.setdefault(key, list(spec.default) if isinstance(spec.default, list) else spec.default)
    if KINDS[kind].category == CONTROLLER:
        if resolved["nodes"] or resolved["fraction"] or not resolved["domain"]:
            raise ScenarioError(f"{where}: a {kind!r} attack names its 'domain', not 'nodes' or a 'fraction'")
    elif bool(resolved["nodes"]) == (resolved["fraction"] > 0):
        raise ScenarioError(f"{where}: give exactly one of 'nodes' (a list of hosts) or 'fraction' (> 0)")
    if resolved["stop_round"] and resolved["stop_round"] < resolved["start_round"]:
        raise ScenarioError(f"{where}: stop_round {resolved['stop_round']} is before start_round "
                            f"{resolved['start_round']}")
    if KINDS[kind].check is not None:
        KINDS[kind].check(resolved, where)
    return resolved


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
        if KINDS[entry["kind"]].category == CONTROLLER:
            chosen = []
        elif entry["nodes"]:
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
        kind = KINDS[entry["kind"]]
        if kind.category == TRAFFIC:
            params = _traffic_params(kind, params, chosen, nodes, domain_of, malicious | set(chosen),
                                     dfl_port, rng, where)
        malicious.update(chosen)
        attacks.append(Attack(kind.name, kind.category, tuple(chosen), window, params))
    _check_one_poisoning_per_round(attacks)
    _check_one_backdoor_target(attacks)
    return [_controller_params(a, nodes, domain_of, malicious, rng, f"attacks.{i}") if a.category == CONTROLLER else a
            for i, a in enumerate(attacks)]


def _controller_params(attack: Attack, nodes, domain_of, malicious, rng, where) -> Attack:
    """A compromised domain's ``targets``: ``victims`` honest hosts of the other domains, drawn once
    every host's attack is known."""
    domain = attack.params["domain"]
    if domain not in set(domain_of.values()):
        raise ScenarioError(f"{where}.domain {domain} is not a domain of this network (1-{max(domain_of.values())})")
    others = sorted(n for n in nodes if domain_of[n] != domain and n not in malicious)
    count = min(attack.params["victims"], len(others))
    victims = sorted(rng.choice(others, size=count, replace=False).tolist()) if count else []
    return Attack(attack.kind, attack.category, (), attack.rounds, {**attack.params, "targets": victims})


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
    rate = params["rate_pps"] or kind.default_rate_pps
    params["rate_pps"] = rate / LOW_RATE_DIVISOR if params["low_rate"] and not params["rate_pps"] else rate
    if kind.to_agents_port and not params["dst_port"]:
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


def _check_one_backdoor_target(attacks: list[Attack]) -> None:
    """The nodes measure one attack success rate, against one target class."""
    targets = sorted({a.params["target_class"] for a in attacks if a.kind == "backdoor"})
    if len(targets) > 1:
        raise ScenarioError(f"backdoor entries name the targets {targets}; a run measures one backdoor target")


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

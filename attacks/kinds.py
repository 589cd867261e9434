"""What an attack kind is: one object with its keys, its category and its hooks.

Every kind of the testbed is one entry of :data:`attacks.poisoning.POISONING_KINDS` or
:data:`attacks.traffic.TRAFFIC_KINDS`; :data:`attacks.plan.KINDS` gathers them, and the scenario's
choices, the plan's checks and the traffic attackers' packets all come from the entry. A new kind
is one entry there plus a run of its contract suite (``tests/test_attack_contract.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common.schema import Field

POISONING = "poisoning"
TRAFFIC = "traffic"


@dataclass(frozen=True)
class PoisonContext:
    """What a poisoning hook sees of its node's round."""

    reference: np.ndarray
    """The model the node started the round with (flat)."""
    update: np.ndarray
    """The node's honest update: its trained model minus ``reference``."""
    params: dict
    rng: np.random.Generator
    """Seeded per node and round: the same run poisons the same way."""
    colluders: np.ndarray
    """The honest updates of the entry's attackers, stacked (this node's own at least)."""
    n_nodes: int
    n_attackers: int
    """The entry's attackers: the ``f`` of an attack tuned to a rule's tolerance."""
    frame_bytes: int
    """The size of the honest frame on the wire."""
    rule: Callable[[np.ndarray], np.ndarray] | None = None
    """The honest nodes' aggregation rule over stacked updates (the first as the node's own):
    what an attack tuned against the defense (``optimal``) maximises its damage against."""


@dataclass(frozen=True)
class AttackKind:
    """An attack kind. ``fields``: its own keys of an ``[[attacks]]`` entry (defaults, checks,
    help); ``check(entry, where)``: what the fields cannot say alone (raises ScenarioError)."""

    name: str
    category: str
    fields: dict[str, Field] = field(default_factory=dict)
    check: Callable[[dict, str], None] | None = None
    help: str = ""


@dataclass(frozen=True)
class PoisoningKind(AttackKind):
    """A model poisoning. Its hooks, each optional: ``data(x, y, n_classes, params, rng)`` the
    samples and labels the node trains on; ``colludes`` its attackers share their honest updates out of band first;
    ``poison(context)`` the flat model it sends instead of its own, or raw bytes instead of a frame;
    ``declares(samples, params, n_nodes)`` the sample count its frames claim instead of its own;
    ``decoy``: ahead of each poisoned frame, it writes its honest frame on the connection's next
    sequence numbers on segments the receiver's TCP drops, for a tap to read (an insertion)."""

    category: str = POISONING
    data: (Callable[[np.ndarray, np.ndarray, int, dict, np.random.Generator], tuple[np.ndarray, np.ndarray]]
           | None) = None
    colludes: bool = False
    poison: Callable[[PoisonContext], np.ndarray | bytes] | None = None
    declares: Callable[[int, dict, int], int] | None = None
    decoy: bool = False


@dataclass(frozen=True)
class TrafficKind(AttackKind):
    """A flood, a scan or crafted packets sent from the attacker's host. ``packets(spec)``: the
    frames it cycles through (scapy packets or bytes); ``connects``: it opens real TCP connections
    instead; ``default_rate_pps``; ``to_agents_port``: a ``dst_port`` of 0 means the agents' port."""

    category: str = TRAFFIC
    default_rate_pps: float = 100.0
    packets: Callable | None = None
    connects: bool = False
    to_agents_port: bool = False


@dataclass(frozen=True)
class Attack:
    """A resolved attack: these nodes do ``kind`` with ``params`` in ``rounds``."""

    kind: str
    category: str
    nodes: tuple[str, ...]
    rounds: tuple[int, ...]
    params: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        return {"kind": self.kind, "category": self.category, "nodes": list(self.nodes),
                "rounds": list(self.rounds), "params": dict(self.params)}

    @classmethod
    def from_record(cls, record: dict) -> Attack:
        return cls(record["kind"], record["category"], tuple(record["nodes"]), tuple(record["rounds"]),
                   dict(record["params"]))

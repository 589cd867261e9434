"""All nodes in one process, models passed in memory through the real wire format.

The fast path for tests and for trying a rule or an attack without root: same node logic,
same frames, no network.
"""

from __future__ import annotations

from agents.node import DFLNode, RoundResult
from agents.wire import decode, encode


def simulate(nodes: dict[str, DFLNode], neighbours: dict[str, list[str]], rounds: int,
             down: frozenset[str] = frozenset()) -> list[RoundResult]:
    """Run ``rounds`` rounds; nodes in ``down`` neither send nor aggregate (a dead node)."""
    results = []
    for round_ in range(1, rounds + 1):
        wire = {name: encode(node.train(round_)) for name, node in sorted(nodes.items()) if name not in down}
        for name, node in sorted(nodes.items()):
            if name in down:
                continue
            inbox = [decode(wire[peer], expected_shapes=node.shapes) for peer in neighbours[name] if peer in wire]
            results.append(node.aggregate(round_, inbox))
    return results

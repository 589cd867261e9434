"""All nodes in one process, models passed in memory through the real wire format.

The fast path for tests and for trying a rule or an attack without root: same node logic,
same frames, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agents.node import Behaviour, DFLNode, Honest, RoundResult
from agents.wire import FrameError, decode


def simulate(nodes: dict[str, DFLNode], neighbours: dict[str, list[str]], rounds: int,
             down: frozenset[str] = frozenset(), behaviours: dict[str, Behaviour] | None = None,
             watch: Callable[[int, dict[str, bytes]], Iterable[str]] | None = None) -> list[RoundResult]:
    """Run ``rounds`` rounds; nodes in ``down`` neither send nor aggregate (a dead node).

    ``behaviours`` maps attacker names to their behaviour (an ``attacks.poisoning.Poisoner``;
    colluders share one collusion board); the others are :class:`agents.node.Honest`. Frames the wire decoder rejects are dropped, as a real agent does.
    ``watch`` sees every round's frames on the wire once delivered, as a network defense does,
    and names the nodes it cuts off: from the next round on they are down.
    """
    behaviours = behaviours or {}
    honest_behaviour = Honest()
    cut_off: set[str] = set()
    results = []
    for round_ in range(1, rounds + 1):
        live = {name: node for name, node in sorted(nodes.items()) if name not in down and name not in cut_off}
        trained = {}
        for name, node in live.items():
            behaviour = behaviours.get(name, honest_behaviour)
            trained[name] = node.train(round_, behaviour.labels(round_, node.y))
            behaviour.share(round_, trained[name], node.reference)
        wire = {name: behaviours.get(name, honest_behaviour).outgoing(round_, frame, live[name].reference)
                for name, frame in trained.items()}
        for name, node in live.items():
            inbox = []
            for peer in neighbours[name]:
                if peer in wire:
                    try:
                        inbox.append(decode(wire[peer], expected_shapes=node.shapes))
                    except FrameError:
                        continue
            results.append(node.aggregate(round_, inbox))
        if watch is not None:
            cut_off.update(watch(round_, wire))
    return results

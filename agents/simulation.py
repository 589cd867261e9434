"""All nodes in one process, models passed in memory through the real wire format.

The fast path for trying a rule, an attack or a detector without root (``sdfl simulate``): the
same round body as the agent process (:class:`agents.round.RoundBody`), the same frames, no
network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from agents.node import Behaviour, DFLNode
from agents.round import RoundBody
from agents.wire import FrameError, decode


def simulate(nodes: dict[str, DFLNode], neighbours: dict[str, list[str]], rounds: int,
             down: frozenset[str] = frozenset(), behaviours: dict[str, Behaviour] | None = None,
             watch: Callable[[int, dict[str, bytes]], Iterable[str]] | None = None) -> list[dict]:
    """Run ``rounds`` rounds; nodes in ``down`` neither send nor aggregate (a dead node).

    ``behaviours`` maps attacker names to their behaviour (an ``attacks.poisoning.Poisoner``;
    colluders share one collusion board); the others are honest. Frames the wire decoder
    rejects are dropped, as a real agent does. ``watch`` sees every round's frames on the wire
    once delivered, as a network defense does, and names the nodes it cuts off: from the next
    round on they are down. Returns the agents' round records (the agent process's, less what
    only a network knows), so the same results and report follow from them.
    """
    bodies = {name: RoundBody(node, neighbours[name], (behaviours or {}).get(name)) for name, node in nodes.items()}
    sent = {name: 0 for name in nodes}
    received = {name: 0 for name in nodes}
    cut_off: set[str] = set()
    records = []
    for round_ in range(1, rounds + 1):
        live = sorted(name for name in nodes if name not in down and name not in cut_off)
        began = {}
        wire = {}
        for name in live:
            began[name] = time.process_time()
            wire[name] = bodies[name].publish(round_)
        for name in live:
            aggregating = time.process_time()
            inbox = []
            for peer in neighbours[name]:
                if peer in wire:
                    sent[peer] += len(wire[peer])
                    received[name] += len(wire[peer])
                    try:
                        inbox.append(decode(wire[peer], expected_shapes=nodes[name].shapes))
                    except FrameError:
                        continue
            record = bodies[name].conclude(round_, inbox, now=float(round_))  # a round's time is its number
            trained_s = aggregating - began[name]
            records.append({**record, "frame_bytes": len(wire[name]),
                            "round_time_s": trained_s + time.process_time() - aggregating})
        for record in records[-len(live):]:
            record.update(bytes_sent=sent[record["node"]], bytes_received=received[record["node"]])
        if watch is not None:
            cut_off.update(watch(round_, wire))
    return records

"""All nodes in one process, models passed in memory through the real wire format.

The fast path for trying a rule, an attack or a detector without root (``sdfl simulate``): the
same round body as the agent process (:class:`agents.round.RoundBody`), the same frames, over an
in-memory :class:`agents.transport.Transport` instead of TCP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from agents.node import Behaviour, DFLNode
from agents.round import RoundBody
from agents.wire import FrameError, ModelFrame, decode


class MemoryWire:
    """The simulation's network: each round's frames by sender, the bytes each node moved, and
    the (sender, receiver) paths a defense dropped (a domain's drop rule at its borders)."""

    def __init__(self, nodes) -> None:
        self.frames: dict[str, bytes] = {}
        self.sent = {name: 0 for name in nodes}
        self.received = {name: 0 for name in nodes}
        self.dropped: set[tuple[str, str]] = set()


class MemoryTransport:
    """A node's :class:`agents.transport.Transport` over a :class:`MemoryWire`: what it sends is
    on the wire at once; it collects its neighbours' frames of the round, through the decoder."""

    def __init__(self, name: str, neighbours: list[str], wire: MemoryWire, shapes) -> None:
        self.name, self.neighbours, self.wire, self.shapes = name, neighbours, wire, shapes
        self.frame_bytes = 0

    def send(self, round_: int, data: bytes) -> None:
        self.wire.frames[self.name] = data
        self.frame_bytes = len(data)

    def collect(self, round_: int) -> list[ModelFrame]:
        frames = []
        for peer in self.neighbours:
            data = self.wire.frames.get(peer)
            if data is None or (peer, self.name) in self.wire.dropped:
                continue
            self.wire.sent[peer] += len(data)
            self.wire.received[self.name] += len(data)
            try:
                frames.append(decode(data, expected_shapes=self.shapes))
            except FrameError:
                continue  # dropped, as a real agent drops it
        return frames

    def counters(self) -> dict:
        return {"frame_bytes": self.frame_bytes, "bytes_sent": self.wire.sent[self.name],
                "bytes_received": self.wire.received[self.name]}


def simulate(nodes: dict[str, DFLNode], neighbours: dict[str, list[str]], rounds: int,
             down: frozenset[str] = frozenset(), behaviours: dict[str, Behaviour] | None = None,
             watch: Callable[[int, dict[str, bytes]], Iterable[str | tuple[str, str]]] | None = None) -> list[dict]:
    """Run ``rounds`` rounds; nodes in ``down`` neither send nor aggregate (a dead node).

    ``behaviours`` maps attacker names to their behaviour (an ``attacks.poisoning.Poisoner``;
    colluders share one collusion board); the others are honest. Frames the wire decoder
    rejects are dropped, as a real agent does. ``watch`` sees every round's frames on the wire
    once delivered, as a network defense does, and names the nodes it cuts off (from the next
    round on they are down) and the (sender, receiver) paths it drops. Returns the agents'
    round records (the agent process's, less what only a network knows), so the same results
    and report follow from them.
    """
    bodies = {name: RoundBody(node, neighbours[name], (behaviours or {}).get(name)) for name, node in nodes.items()}
    wire = MemoryWire(nodes)
    transports = {name: MemoryTransport(name, neighbours[name], wire, node.shapes) for name, node in nodes.items()}
    cut_off: set[str] = set()
    records = []
    for round_ in range(1, rounds + 1):
        live = sorted(name for name in nodes if name not in down and name not in cut_off)
        wire.frames.clear()
        trained_s, frames = {}, {}
        # Every node trains before any sends (colluders see each other's honest updates, as
        # agents waiting on their board do), and sends before any collects: the round is lock-step.
        for name in live:
            began = time.process_time()
            frames[name] = bodies[name].train(round_)
            trained_s[name] = time.process_time() - began
        for name in live:
            began = time.process_time()
            transports[name].send(round_, bodies[name].outgoing(round_, frames.pop(name)))
            trained_s[name] += time.process_time() - began
        concluded = []
        for name in live:
            aggregating = time.process_time()
            record = bodies[name].conclude(round_, transports[name].collect(round_), now=float(round_))
            concluded.append({**record, "round_time_s": trained_s[name] + time.process_time() - aggregating})
        records += [{**record, **transports[record["node"]].counters()} for record in concluded]
        if watch is not None:
            for cut in watch(round_, dict(wire.frames)):
                (wire.dropped.add if isinstance(cut, tuple) else cut_off.add)(cut)
    return records

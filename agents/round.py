"""One node's round, whatever moves its bytes: the agent process (TCP between hosts) and the
in-memory simulation both run it, so what a round does is written once.

A round is two steps with the transport in between: :meth:`RoundBody.publish` trains on the
behaviour's samples and labels, lets it tell colluders (:meth:`RoundBody.train`), and returns the
bytes to send (:meth:`RoundBody.outgoing`); the transport
delivers them and gathers the neighbours' frames; :meth:`RoundBody.conclude` aggregates them
with the node's own model, evaluates, and returns the round's record (the transport adds
what only it knows: bytes, times).
"""

from __future__ import annotations

from agents.node import Behaviour, DFLNode, Honest
from agents.wire import ModelFrame
from common.events import Event, event


class RoundBody:
    def __init__(self, node: DFLNode, neighbours: list[str], behaviour: Behaviour | None = None) -> None:
        self.node = node
        self.neighbours = neighbours
        self.behaviour = behaviour or Honest()

    def publish(self, round_: int) -> bytes:
        return self.outgoing(round_, self.train(round_))

    def train(self, round_: int) -> ModelFrame:
        """The round's trained model, its honest update already told to colluders."""
        node, behaviour = self.node, self.behaviour
        frame = node.train(round_, behaviour.training_data(round_, node.x, node.y))
        behaviour.share(round_, frame, node.reference)
        return frame

    def outgoing(self, round_: int, frame: ModelFrame) -> bytes:
        """The bytes to send for the round's trained ``frame`` (poisoned, if the behaviour says so)."""
        return self.behaviour.outgoing(round_, frame, self.node.reference)

    def conclude(self, round_: int, frames: list[ModelFrame], now: float) -> dict:
        """Aggregate the round's frames; the round's record, stamped ``now``."""
        result = self.node.aggregate(round_, frames)
        return event(
            Event.ROUND, now, node=self.node.name, round=round_,
            accuracy=result.accuracy, loss=result.loss, train_loss=result.train_loss,
            received_from=list(result.accepted_senders),
            missing=sorted(set(self.neighbours) - set(result.accepted_senders)),
            # What this node did wrong this round, if anything: the poisoning ground truth.
            attack=self.behaviour.kind(round_),
            **({} if result.backdoor_success is None else {"backdoor_success": result.backdoor_success}),
        )

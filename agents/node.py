"""One DFL node's round, independent of how bytes move (TCP between hosts, or in memory).

A round is: train locally, publish the model as a frame, take the neighbours' frames that
arrived before the deadline, aggregate, evaluate on the shared held-out set.
"""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agents.aggregation import Aggregator, Contribution
from agents.data import Dataset, triggered_test_set
from agents.model import evaluate, get_flat, make_mlp, parameter_shapes, set_flat, split_flat, train_local
from agents.wire import ModelFrame, encode

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.1
    hidden: int = 64
    model_seed: int = 0
    min_local_steps: int = 0
    lr_decay: float = 1.0

    def lr_for(self, round_: int) -> float:
        """The round's learning rate: ``lr`` shrunk by ``lr_decay`` each round after the first.
        A node's local SGD at a constant rate can turn unstable late in a run (a border host's
        loss climbing while its domain's fall), and an unstable update looks like an attack."""
        return self.lr * self.lr_decay ** max(0, round_ - 1)

    def epochs_for(self, samples: int) -> int:
        """Local epochs for a shard of ``samples``: ``local_epochs``, or more where a small shard
        would take fewer than ``min_local_steps`` minibatch steps (96 nodes' shards of the digits
        hold 15 samples: one batch an epoch, and two steps a round barely learn)."""
        batches = max(1, math.ceil(samples / self.batch_size))
        return max(self.local_epochs, math.ceil(self.min_local_steps / batches))


@dataclass
class RoundResult:
    node: str
    round: int
    accuracy: float
    loss: float
    train_loss: float
    received: int
    accepted_senders: tuple[str, ...]
    backdoor_success: float | None = None
    """The share of triggered held-out images the model maps to the backdoor's target, when the
    run schedules a backdoor (its attack success rate); None otherwise."""


class Behaviour(Protocol):
    """What a node does with its round besides training and aggregating: the samples and labels
    it trains on, what it tells colluders, the bytes it sends. Attacks (``attacks.poisoning.Poisoner``)
    implement it; the agent and the simulation only call it."""

    def kind(self, round_: int) -> str | None:
        """The attack this round, None when honest (the run's ground truth)."""

    def training_data(self, round_: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def share(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> None: ...

    def outgoing(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> bytes: ...

    def before_write(self, sock: socket.socket, data: bytes) -> None:
        """Called by the TCP transport as it is about to write ``data`` (a frame) on ``sock``."""


@dataclass(frozen=True)
class Honest:
    """An honest node's behaviour: its own shard, nothing shared, its trained model sent."""

    tagged: bool = False  # frames announce a tag (the agent appends one per neighbour)

    def kind(self, round_: int) -> str | None:
        return None

    def training_data(self, round_: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def share(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> None:
        return None

    def outgoing(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> bytes:
        return encode(frame, tagged=self.tagged)

    def before_write(self, sock: socket.socket, data: bytes) -> None:
        return None


class DFLNode:
    """State of one node: its shard, its model, its aggregation rule.

    Every node starts from the same initial model (``model_seed``), as DFL deployments do. With
    a ``backdoor_target`` (the run's ground truth, not the node's knowledge) it also measures how
    often its model obeys the backdoor's trigger.
    """

    def __init__(self, name: str, dataset: Dataset, shard: np.ndarray, aggregator: Aggregator,
                 config: TrainingConfig, seed: int, backdoor_target: int | None = None) -> None:
        self.name = name
        self.dataset = dataset
        self.x, self.y = dataset.x_train[shard], dataset.y_train[shard]
        self.aggregator = aggregator
        self.config = config
        self.seed = seed
        self.model = make_mlp(dataset.n_features, dataset.n_classes, config.hidden, config.model_seed)
        self.shapes = parameter_shapes(self.model)
        self.train_loss = float("nan")
        self.reference = get_flat(self.model)
        self.backdoor_target = backdoor_target
        self._triggered = None if backdoor_target is None else triggered_test_set(dataset, backdoor_target)

    def restore(self, model: np.ndarray) -> None:
        """Continue from a checkpointed model (a restarted agent)."""
        set_flat(self.model, model)
        self.reference = get_flat(self.model)

    @property
    def model_vector(self) -> np.ndarray:
        return get_flat(self.model)

    @property
    def samples(self) -> int:
        return len(self.y)

    def train(self, round_: int, data: tuple[np.ndarray, np.ndarray] | None = None) -> ModelFrame:
        """Local epochs on the shard (on ``data``, samples and labels, instead, if given); returns
        the frame to send, which declares the shard's size. ``reference`` keeps the model the round
        started from, so ``trained - reference`` is the round's update."""
        self.reference = get_flat(self.model)
        x, y = data if data is not None else (self.x, self.y)
        self.train_loss = train_local(self.model, x, y, self.config.epochs_for(self.samples),
                                      self.config.batch_size, self.config.lr_for(round_),
                                      self.seed * 100_003 + round_)
        return ModelFrame(self.name, round_, self.samples, split_flat(self.model, get_flat(self.model)))

    def aggregate(self, round_: int, frames: list[ModelFrame]) -> RoundResult:
        """Combine the frames of this round with the own model, then evaluate."""
        own = Contribution(self.name, get_flat(self.model), self.samples)
        others = [Contribution(f.sender, np.concatenate([t.ravel() for t in f.tensors]).astype(np.float64),
                               f.samples)
                  for f in frames if f.round == round_ and f.sender != self.name]
        set_flat(self.model, self.aggregator(own, others))
        accuracy, loss = evaluate(self.model, self.dataset.x_test, self.dataset.y_test)
        backdoor_success = None
        if self._triggered is not None:
            backdoor_success, _ = evaluate(self.model, self._triggered,
                                           np.full(len(self._triggered), self.backdoor_target, dtype=np.int64))
        return RoundResult(self.name, round_, accuracy, loss, self.train_loss, len(others),
                           tuple(sorted(c.sender for c in others)), backdoor_success)

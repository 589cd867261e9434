"""Model poisoning as a behaviour around an honest node: it trains like the others, then lies.

The attacks act on the round's *update*, the trained model minus the model the node started the
round with, and send ``start + poisoned update``; the node keeps its honest model for itself.
The rules are pure numpy functions; :class:`Poisoner` applies the one scheduled for the round.

ALIE and IPM need the honest updates of the colluding attackers (the same ``[[attacks]]``
entry): they meet on a :class:`CollusionBoard`, an out-of-band channel the defenders cannot see.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from agents.wire import ModelFrame, encode
from attacks.plan import POISONING, Attack

HUGE = 1e30


def sign_flip(update: np.ndarray, scale: float) -> np.ndarray:
    """Exactly ``-scale`` times the honest update."""
    return -scale * update


def gaussian_noise(update: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return update + rng.normal(0.0, sigma, size=update.shape)


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z: the most std-devs a value can move and still sit inside the majority
    that a median-like rule keeps (``s = floor(n/2 + 1) - f`` honest supporters needed)."""
    supporters = math.floor(n / 2 + 1) - f
    return float(max(0.0, norm.ppf((n - supporters) / n)))


def alie(colluder_updates: np.ndarray, z: float) -> np.ndarray:
    """Per coordinate, ``z`` std-devs below the colluders' mean honest update."""
    return colluder_updates.mean(axis=0) - z * colluder_updates.std(axis=0)


def inner_product_manipulation(colluder_updates: np.ndarray, epsilon: float) -> np.ndarray:
    """``-epsilon`` times the mean honest update, so the aggregate's inner product with the
    true descent direction turns negative (Xie et al.)."""
    return -epsilon * colluder_updates.mean(axis=0)


def garbage_vector(size: int, mode: str) -> np.ndarray:
    """Values no sane model holds: NaN, Inf (the wire decoder rejects both) or 1e30 (finite)."""
    return np.full(size, {"nan": np.nan, "inf": np.inf, "huge": HUGE}[mode])


def flip_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Label ``c`` becomes ``n_classes - 1 - c``: every sample teaches the wrong class."""
    return (n_classes - 1 - labels).astype(labels.dtype)


def split_like(vector: np.ndarray, shapes) -> tuple[np.ndarray, ...]:
    """A flat vector cut into tensors of ``shapes`` (float32, as frames carry them)."""
    sizes = [int(np.prod(s)) for s in shapes]
    pieces = np.split(np.asarray(vector, dtype=np.float32), np.cumsum(sizes)[:-1])
    return tuple(p.reshape(s) for p, s in zip(pieces, shapes))


def flat(frame: ModelFrame) -> np.ndarray:
    return np.concatenate([t.ravel() for t in frame.tensors]).astype(np.float64)


class CollusionBoard:
    """Where colluders leave their honest updates for a round; in memory (simulation)."""

    def __init__(self) -> None:
        self._posted: dict[tuple[int, str], np.ndarray] = {}

    def post(self, round_: int, node: str, update: np.ndarray) -> None:
        self._posted[(round_, node)] = update

    def _read(self, round_: int, node: str) -> np.ndarray | None:
        return self._posted.get((round_, node))

    def gather(self, round_: int, members: tuple[str, ...], deadline: float) -> list[np.ndarray]:
        """Members' updates for the round, waiting until all posted or ``deadline`` (monotonic)."""
        while True:
            found = [u for u in (self._read(round_, m) for m in sorted(members)) if u is not None]
            if len(found) == len(members) or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)


class DirectoryBoard(CollusionBoard):
    """The same board as files in a directory shared by the attacker processes."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = Path(directory)

    def _path(self, round_: int, node: str) -> Path:
        return self.directory / f"{round_}-{node}.npy"

    def post(self, round_: int, node: str, update: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{round_}-{node}.{os.getpid()}.npy"
        np.save(partial, update)
        os.replace(partial, self._path(round_, node))

    def _read(self, round_: int, node: str) -> np.ndarray | None:
        try:
            return np.load(self._path(round_, node))
        except (FileNotFoundError, ValueError, EOFError):
            return None


class Poisoner:
    """The poisoning behaviour of one node (an :class:`agents.node.Behaviour`): which attack it
    runs in which round, and how; in a round without one its frames pass through unchanged."""

    def __init__(self, node: str, attacks: list[Attack], n_nodes: int, n_classes: int, seed: int,
                 board: CollusionBoard | None = None, collusion_wait_s: float = 10.0, tagged: bool = False) -> None:
        self.node = node
        self.tagged = tagged  # frames announce a tag (the agent appends one per neighbour)
        self.n_nodes = n_nodes
        self.n_classes = n_classes
        self.seed = seed
        self.board = board or CollusionBoard()
        self.collusion_wait_s = collusion_wait_s
        self._by_round = {r: a for a in attacks if a.category == POISONING and node in a.nodes for r in a.rounds}

    def kind(self, round_: int) -> str | None:
        attack = self._by_round.get(round_)
        return attack.kind if attack else None

    def labels(self, round_: int, labels: np.ndarray) -> np.ndarray:
        """The labels the node trains on this round (flipped under label flipping)."""
        return flip_labels(labels, self.n_classes) if self.kind(round_) == "label-flip" else labels

    def share(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> None:
        """Post the honest update for colluders (before anyone computes a poisoned one)."""
        attack = self._by_round.get(round_)
        if attack is not None and attack.kind in ("alie", "ipm"):
            self.board.post(round_, self.node, flat(frame) - reference)

    def outgoing(self, round_: int, frame: ModelFrame, reference: np.ndarray) -> bytes:
        """The bytes this node sends for ``frame``, its honest trained model this round."""
        attack = self._by_round.get(round_)
        if attack is None or attack.kind == "label-flip":
            return encode(frame, tagged=self.tagged)
        rng = np.random.default_rng([self.seed, round_, 0x5EED])
        if attack.kind == "garbage" and attack.params["mode"] == "bytes":
            return rng.bytes(len(encode(frame, tagged=self.tagged)))
        update = flat(frame) - reference
        if attack.kind == "sign-flip":
            sent = reference + sign_flip(update, attack.params["scale"])
        elif attack.kind == "gaussian":
            sent = reference + gaussian_noise(update, attack.params["sigma"], rng)
        elif attack.kind in ("alie", "ipm"):
            shared = self.board.gather(round_, attack.nodes, time.monotonic() + self.collusion_wait_s)
            updates = np.stack(shared or [update])
            if attack.kind == "alie":
                z = attack.params["z"] or alie_z(self.n_nodes, len(attack.nodes))
                sent = reference + alie(updates, z)
            else:
                sent = reference + inner_product_manipulation(updates, attack.params["epsilon"])
        elif attack.kind == "garbage":
            sent = garbage_vector(update.size, attack.params["mode"])
        else:
            raise ValueError(f"{attack.kind!r} is not a model-poisoning attack")
        return encode(ModelFrame(frame.sender, frame.round, frame.samples, split_like(sent, frame.shapes)),
                      tagged=self.tagged)

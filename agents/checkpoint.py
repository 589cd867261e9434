"""Agent checkpoints and when to take them: every ``c`` rounds, or adaptively from a Weibull
failure model fitted to the failures observed so far (as the seed literature proposes).

A checkpoint is the model at the end of a round and that round's number, written atomically
(a killed agent never leaves half a file). The adaptive rule picks the next interval
``tau`` (in rounds) that minimises the expected overhead per round of useful work,

    J(tau) = (c + P(tau) * (tau * r / 2 + R)) / (tau * r)

where ``c`` is the checkpoint cost, ``r`` the round time, ``R`` the recovery (restart) time
and ``P(tau)`` the probability that the agent fails within the next ``tau`` rounds given that
it has run ``a`` seconds since its last start: ``1 - S(a + tau * r + c) / S(a)`` with the
Weibull survival ``S(t) = exp(-(t / scale) ** shape)``. A failure loses on average half an
interval plus the restart. With ``shape < 1`` (failures come early, as with flaky nodes) the
rule checkpoints often right after a restart and less as the agent survives; with ``shape > 1``
(wear-out) the other way round; ``shape = 1`` recovers Young's ``sqrt(2 c MTBF)``.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_FAILURES_TO_FIT = 3
"""Fewer observed failures than this say too little about the shape: keep the fixed interval."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    model: np.ndarray


def save_checkpoint(path: Path, round_: int, model: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, round=np.int64(round_), model=np.asarray(model, dtype=np.float64))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The saved checkpoint, or None if there is none; a damaged file raises ValueError."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            return Checkpoint(int(saved["round"]), np.array(saved["model"], dtype=np.float64))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"checkpoint {path} is unreadable: {error}") from None


@dataclass(frozen=True)
class Weibull:
    shape: float
    scale: float

    def survival(self, t: float) -> float:
        return math.exp(-((max(t, 0.0) / self.scale) ** self.shape))


def fit_weibull(uptimes: list[float]) -> Weibull:
    """Maximum-likelihood Weibull (location 0) of the times between starts and failures."""
    from scipy.stats import weibull_min

    values = np.asarray([u for u in uptimes if u > 0], dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a Weibull fit needs at least 2 positive uptimes, got {len(values)}")
    shape, _, scale = weibull_min.fit(values, floc=0)
    return Weibull(float(shape), float(scale))


def expected_overhead(intervals: np.ndarray, model: Weibull, age_s: float, round_s: float, checkpoint_s: float,
                      recovery_s: float) -> np.ndarray:
    """``J`` of the module docstring for each interval (in rounds): overhead seconds per second
    of useful work."""
    work = np.asarray(intervals, dtype=np.float64) * round_s
    survived = model.survival(age_s)
    later = np.exp(-(((age_s + work + checkpoint_s) / model.scale) ** model.shape))
    p_fail = 1.0 - later / survived if survived > 0 else np.ones_like(work)
    return (checkpoint_s + p_fail * (work / 2 + recovery_s)) / work


def best_interval(model: Weibull, age_s: float, round_s: float, checkpoint_s: float, recovery_s: float,
                  max_interval: int = 100) -> int:
    """The whole number of rounds in ``1..max_interval`` that minimises the expected overhead."""
    intervals = np.arange(1, max_interval + 1)
    return int(intervals[np.argmin(expected_overhead(intervals, model, age_s, round_s, checkpoint_s,
                                                     recovery_s))])


class CheckpointPolicy:
    """Whether to checkpoint after a round: every ``every`` rounds, or, when ``adaptive`` and
    enough failures have been seen, at the interval :func:`best_interval` gives for the age the
    agent has when the interval begins (its first round after a start or a checkpoint)."""

    def __init__(self, every: int, adaptive: bool = False, uptimes: list[float] | None = None,
                 checkpoint_s: float = 0.01, recovery_s: float = 5.0) -> None:
        if every < 1:
            raise ValueError(f"checkpoint interval must be at least 1 round, got {every}")
        self.every = every
        self.model = (fit_weibull(uptimes) if adaptive and uptimes and len(uptimes) >= MIN_FAILURES_TO_FIT
                      else None)
        self.checkpoint_s = checkpoint_s
        self.recovery_s = recovery_s
        self.rounds_since = 0
        self.planned: int | None = None

    def interval(self, age_s: float, round_s: float) -> int:
        if self.model is None:
            return self.every
        return best_interval(self.model, age_s, max(round_s, 1e-3), self.checkpoint_s, self.recovery_s)

    def due(self, age_s: float, round_s: float) -> bool:
        """Call once per finished round; True when this round's model should be saved."""
        if self.planned is None:
            self.planned = self.interval(age_s, round_s)
        self.rounds_since += 1
        if self.rounds_since >= self.planned:
            self.rounds_since, self.planned = 0, None
            return True
        return False


class LifeLog:
    """An agent's lives across restarts (start, last sign of life, how it ended), kept in a small
    JSON file: the failure history the Weibull fit needs. A life that never ended cleanly was
    a failure; its uptime runs from its start to its last recorded round."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.lives = [dict(life) for life in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            self.lives = []

    def begin(self, now: float) -> None:
        for life in self.lives:
            life.setdefault("ended", "failed")
        self.lives.append({"start": now, "last": now})
        self._save()

    def alive(self, now: float) -> None:
        self.lives[-1]["last"] = now
        self._save()

    def end(self) -> None:
        self.lives[-1]["ended"] = "clean"
        self._save()

    def uptimes(self) -> list[float]:
        return [life["last"] - life["start"] for life in self.lives if life.get("ended") == "failed"]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.lives))
        tmp.replace(self.path)

"""FU-HST's decisions: streaming Half-Space Trees per observation stream, evidence, bans.

Pure Python over river's trees (:mod:`controllers.halfspace`); time is passed in. One
:class:`StreamDetector` per stream (flow features per poll, update features per round) learns
what normal looks like during a warm-up (the caller says when an observation belongs to it: the
first DFL rounds, before any attack can be told apart from normal), then scores every
observation against a threshold calibrated on the warm-up's own scores. It never learns from
an observation it flagged, so an attacker cannot teach it that attacking is normal.
:class:`Evidence` turns flags into bans: m anomalous of a node's last n observations.
:class:`ThresholdStream` is the static baseline with the same interface.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common.schema import Field, between, non_negative, positive
from controllers.halfspace import BatchHalfSpaceTrees


STRONG_SHARE = 0.75
"""A verdict whose score covers this share of the way from its bar to the highest score (1) is
unmistakable: an attack's onset scores so, the echoes it causes in honest peers' updates do not
(measured in benchmarks/detection_sweep.py). A share, not a fixed excess: scores are bounded, and
a domain whose warm-up calibrated a high bar would otherwise never see one."""
MAX_BAR = 0.95
"""No calibrated bar lies above this: an update that scores more is anomalous, however odd its
sender's warm-up was."""
STRONG_WEIGHT = 1.5
"""What an unmistakable verdict weighs as evidence: two of them make ``ban_after`` 3."""


@dataclass(frozen=True)
class Verdict:
    """One scored observation: why a node was (or was not) flagged."""

    score: float
    threshold: float | None
    anomalous: bool
    warming_up: bool
    strength: float = 0.0  # how much this verdict weighs as evidence, in [0, STRONG_WEIGHT]


class StreamDetector:
    """Half-Space Trees over one fixed-key feature stream, with a calibrated threshold.

    Parameters
    ----------
    keys:
        The feature names, all in [0, 1].
    quantile, margin, per_host:
        Threshold = the warm-up scores' ``quantile`` plus ``margin``, pooled over every
        observation, or with ``per_host`` per batch key (:meth:`_calibrate`). HST scores 0
        until its first window is full, so only later warm-up scores calibrate it, and the
        warm-up goes on past the caller's end until at least ``min_calibration`` such scores exist.
    """

    def __init__(self, keys, quantile: float = 0.99, margin: float = 0.05, n_trees: int = 25,
                 height: int = 8, window_size: int = 20, seed: int = 0, min_calibration: int = 4,
                 per_host: bool = False) -> None:
        self.keys = tuple(keys)
        self.per_host = per_host
        self.min_calibration = min_calibration
        self.quantile = quantile
        self.margin = margin
        self.window_size = window_size
        self.model = BatchHalfSpaceTrees(self.keys, n_trees=n_trees, height=height, window_size=window_size,
                                         seed=seed)
        self.seen = 0
        self.learned = 0
        self._warmup_scores: dict = {}  # per key (a host), its warm-up scores
        self.threshold: float | None = None
        self._own_bar: dict = {}

    def observe(self, features: dict[str, float], warming_up: bool) -> Verdict:
        """One observation with no peers to compare it with."""
        return self.observe_batch({None: features}, warming_up)[None]

    def observe_batch(self, batch: dict, warming_up: bool) -> dict:
        """Observations made together (a poll's hosts, a round's senders), each scored before
        any is learned. After the warm-up an observation is anomalous when its score exceeds the
        threshold *and* the median score of the others in the batch by ``margin``: what moves
        every peer at once (honest updates drifting as training converges) is no sign against
        any one of them."""
        rows = np.array([[float(f[k]) for k in self.keys] for f in batch.values()]).reshape(len(batch), len(self.keys))
        paths = self.model.walk(rows)
        scores = dict(zip(batch, self.model.score(paths)))
        calibrating = sum(map(len, self._warmup_scores.values()))
        if self.threshold is None and (warming_up or calibrating < self.min_calibration):
            for key in batch:
                self.seen += 1
                if self.seen > self.window_size:
                    self._warmup_scores.setdefault(key, []).append(scores[key])
            self._learn(paths)
            return {key: Verdict(score, None, False, True) for key, score in scores.items()}
        if self.threshold is None:
            self._calibrate()
        verdicts = {}
        for key in batch:
            others = [s for other, s in scores.items() if other != key]
            bar = max(self._own_bar.get(key, self.threshold),
                      statistics.median(others) + self.margin if others else 0.0)
            # A score just over the bar is weak evidence: it takes a full margin above for a whole
            # verdict, so the mild echoes of an attack in honest peers' updates add up slowly; an
            # unmistakable one (STRONG_SHARE) weighs STRONG_WEIGHT, so two such rounds ban.
            excess = scores[key] - bar
            strength = ((STRONG_WEIGHT if excess >= STRONG_SHARE * (1.0 - bar) else min(1.0, excess / self.margin))
                        if self.margin > 0 else 1.0)
            verdicts[key] = Verdict(scores[key], bar, scores[key] > bar, False, max(0.0, strength))
            self.seen += 1
        self._learn(paths[:, [not verdict.anomalous for verdict in verdicts.values()]])
        return verdicts

    def _calibrate(self) -> None:
        """Bars from the warm-up. Pooled: one bar, every warm-up score's ``quantile`` plus
        ``margin``. Per host: a host's usual score is the ``quantile`` of its own warm-up scores;
        the domain's bar (``threshold``) is the median host's usual score plus ``margin``, and a
        host whose usual score was higher (an honest node with an odd shard scores high every
        round) is judged against its own plus ``margin``. So one odd node neither blinds the
        domain to everyone else's attacks (a pooled maximum did, 96-node runs in README) nor is
        banned for being itself; with a median ``quantile``, one odd warm-up round buys an
        attacker no cover. No bar exceeds :data:`MAX_BAR`: a score is at most 1."""
        if not self.per_host:
            pooled = [score for scores in self._warmup_scores.values() for score in scores]
            self.threshold = min(MAX_BAR, float(np.quantile(pooled, self.quantile)) + self.margin)
            return
        own = {key: float(np.quantile(values, self.quantile)) + self.margin
               for key, values in self._warmup_scores.items()}
        self.threshold = min(MAX_BAR, statistics.median(own.values()))
        self._own_bar = {key: min(MAX_BAR, max(bar, self.threshold)) for key, bar in own.items()}

    def _learn(self, paths: np.ndarray) -> None:
        """Teach the trees the walked observations (``paths``: :meth:`BatchHalfSpaceTrees.walk`)."""
        self.model.learn(paths)
        self.learned += paths.shape[1]


class ThresholdStream:
    """The static baseline: per feature, a band of mean +- ``k`` std-devs fixed after warm-up.

    Score = the largest excess over a band in std-devs (0 inside every band).
    """

    def __init__(self, keys, k: float = 4.0, min_std: float = 0.02, min_calibration: int = 4) -> None:
        self.keys = tuple(keys)
        self.min_calibration = min_calibration
        self.k = k
        self.min_std = min_std
        self._samples: list[dict[str, float]] = []
        self.bands: dict[str, tuple[float, float, float]] | None = None
        self.threshold = 0.0

    def observe_batch(self, batch: dict, warming_up: bool) -> dict:
        return {key: self.observe(features, warming_up) for key, features in batch.items()}

    def observe(self, features: dict[str, float], warming_up: bool) -> Verdict:
        x = {k: float(features[k]) for k in self.keys}
        if self.bands is None and (warming_up or len(self._samples) < self.min_calibration):
            self._samples.append(x)
            return Verdict(0.0, None, False, True)
        if self.bands is None:
            self.bands = {}
            for key in self.keys:
                values = [s[key] for s in self._samples]
                mean, std = statistics.fmean(values), max(statistics.pstdev(values), self.min_std)
                self.bands[key] = (mean - self.k * std, mean + self.k * std, std)
        score = max(max(low - x[key], x[key] - high, 0.0) / std for key, (low, high, std) in self.bands.items())
        return Verdict(score, self.threshold, score > self.threshold, False, float(score > self.threshold))


@dataclass(frozen=True)
class DetectorKind:
    """A registered stream detector: its ``[defense]`` knobs (defaults, checks, help) and
    ``make(keys, window_size, seed, knobs, per_host)``, ``knobs`` a dict holding a value for
    each, ``per_host`` whether bars are calibrated per host (:meth:`StreamDetector._calibrate`)."""

    name: str
    help: str
    knobs: dict[str, Field]
    make: Callable

    def build(self, keys, window_size: int, seed: int, knobs: dict, per_host: bool = False):
        """A detector for one stream; a knob not given takes its default."""
        values = {name: knobs.get(name, spec.default) for name, spec in self.knobs.items()}
        return self.make(keys, window_size, seed, values, per_host)


DETECTORS: dict[str, DetectorKind] = {kind.name: kind for kind in (
    DetectorKind(
        "fuhst", "streaming Half-Space Trees, threshold calibrated on the warm-up",
        knobs={"n_trees": Field(int, 50, positive), "height": Field(int, 6, positive),
               "quantile": Field(float, 0.5, between(0.0, 1.0),
                                 "of each host's warm-up update scores: its usual score (flow bars lie "
                                 "above every warm-up poll)"),
               "margin": Field(float, 0.15, non_negative, "added to that quantile")},
        make=lambda keys, window_size, seed, k, per_host: StreamDetector(
            keys, quantile=k["quantile"] if per_host else 1.0, margin=k["margin"], n_trees=k["n_trees"],
            height=k["height"], window_size=window_size, seed=seed, per_host=per_host)),
    DetectorKind(
        "threshold", "the static baseline: bands around the warm-up mean",
        knobs={"threshold_k": Field(float, 4.0, positive, "baseline: std-devs around the warm-up mean")},
        make=lambda keys, window_size, seed, k, per_host: ThresholdStream(keys, k=k["threshold_k"])),
)}
"""``defense.detector`` -> its kind. A stream detector has ``observe_batch(batch, warming_up) ->
{key: Verdict}`` and a calibrated ``threshold``, never learns from what it flags, and pickles
(the controller persists it across restarts). A new detector is one entry here (its knobs join
the scenario's ``[defense]`` table) and one run of ``tests/test_detector_contract.py``."""


@dataclass
class Evidence:
    """Ban once a node's last ``n`` judged observations weigh ``m``: each verdict adds its
    strength (1 for a clear anomaly, more for an unmistakable one, less for a score just over the
    bar, 0 for a normal one)."""

    m: int
    n: int
    _history: dict[str, collections.deque] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.m <= self.n:
            raise ValueError(f"ban_after needs 1 <= m <= n, got m={self.m}, n={self.n}")

    def add(self, node: str, strength: float) -> bool:
        """Record a verdict's strength; True when the node now has enough evidence against it."""
        history = self._history.setdefault(node, collections.deque(maxlen=self.n))
        history.append(min(STRONG_WEIGHT, max(0.0, float(strength))))
        return sum(history) >= self.m - 1e-9

    def count(self, node: str) -> tuple[float, int]:
        history = self._history.get(node, ())
        return round(sum(history), 2), len(history)

    def forget(self, node: str) -> None:
        self._history.pop(node, None)

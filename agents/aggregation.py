"""Aggregation rules: pure functions of flat parameter vectors, one registry for all.

A node aggregates its own model with the models it received this round. Every rule takes the
node's :class:`Contribution` and the others' and returns the new flat vector; the robust rules
take ``f``, the number of Byzantine inputs to tolerate, clamped to what the number of inputs
allows (e.g. a trimmed mean of n inputs can trim at most ``(n - 1) // 2`` from each side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.weights import capped_sample_weights


@dataclass(frozen=True)
class Contribution:
    sender: str
    vector: np.ndarray
    samples: int = 1


Aggregator = Callable[[Contribution, Sequence[Contribution]], np.ndarray]


def _stack(own: Contribution, others: Sequence[Contribution]) -> np.ndarray:
    return np.stack([own.vector, *(c.vector for c in others)]).astype(np.float64, copy=False)


def _max_trim(n: int, f: int) -> int:
    return max(0, min(f, (n - 1) // 2))


# --- the rules as functions of a stacked matrix (rows = inputs) ---------------------------
def weighted_mean(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return weights @ x / weights.sum()


def coordinate_median(x: np.ndarray) -> np.ndarray:
    return np.median(x, axis=0)


def trimmed_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Per coordinate, drop the ``f`` largest and ``f`` smallest values and average the rest."""
    trim = _max_trim(len(x), f)
    ordered = np.sort(x, axis=0)
    return ordered[trim:len(x) - trim].mean(axis=0)


def pairwise_squared_distances(x: np.ndarray) -> np.ndarray:
    """``[i, j]``: the squared Euclidean distance between rows ``i`` and ``j`` of ``x``."""
    return np.square(x[:, None, :] - x[None, :, :]).sum(axis=2)


def krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    """Sum of squared distances from each input to its ``n - f - 2`` nearest others."""
    n = len(x)
    squared = pairwise_squared_distances(x)
    neighbours = max(1, min(n - 1, n - f - 2))
    closest = np.sort(squared + np.diag(np.full(n, np.inf)), axis=1)[:, :neighbours]
    return closest.sum(axis=1)


def multi_krum(x: np.ndarray, f: int, m: int | None = None) -> np.ndarray:
    """Mean of the ``m`` inputs with the lowest Krum scores (``m = 1`` is Krum)."""
    m = len(x) - f if m is None else m
    m = max(1, min(m, len(x)))
    chosen = np.argsort(krum_scores(x, f), kind="stable")[:m]
    return x[chosen].mean(axis=0)


def geometric_median(x: np.ndarray, tolerance: float = 1e-9, max_iterations: int = 500) -> np.ndarray:
    """The point minimising the sum of Euclidean distances to the inputs: Weiszfeld's iteration
    with Vardi and Zhang's step at an input (PNAS 2000). Plain Weiszfeld stops dead on any input
    it lands on (its weight is infinite) although the minimiser lies elsewhere, and the
    coordinate-wise median it starts from is often an input: for [[0, 0], [1, 0], [0, 1]] it
    returned [0, 0] instead of the Fermat point (0.2113, 0.2113)."""
    estimate = np.median(x, axis=0)
    scale = max(1.0, float(np.abs(x).max()))
    for _ in range(max_iterations):
        distances = np.linalg.norm(x - estimate, axis=1)
        at = distances <= 1e-12 * scale  # inputs the estimate sits on
        weights = 1.0 / distances[~at]
        if not len(weights):  # every input is here
            return estimate
        pull = weights @ (x[~at] - estimate)  # minus the gradient of the others' distances
        weiszfeld = weights @ x[~at] / weights.sum()
        # On inputs of multiplicity m the estimate is optimal unless the pull exceeds m; else a
        # step towards the Weiszfeld point, shortened by m over the pull.
        coincident, strength = int(at.sum()), float(np.linalg.norm(pull))
        if coincident and strength <= coincident:
            return estimate
        share = min(1.0, coincident / strength) if strength > 0 else 0.0
        updated = (1.0 - share) * weiszfeld + share * estimate
        if np.linalg.norm(updated - estimate) <= tolerance * scale:
            return updated
        estimate = updated
    return estimate


def centered_clipping(x: np.ndarray, center: np.ndarray, tau: float | None = None,
                      iterations: int = 3) -> np.ndarray:
    """Move ``center`` by the mean of the inputs' offsets, each clipped to norm ``tau``.

    Without ``tau`` the radius is the median offset norm, so it adapts to the round's spread.
    """
    estimate = center.astype(np.float64)
    for _ in range(iterations):
        offsets = x - estimate
        norms = np.linalg.norm(offsets, axis=1)
        radius = float(np.median(norms)) if tau is None else tau
        if radius <= 0:
            break
        scale = np.minimum(1.0, radius / np.maximum(norms, 1e-12))
        estimate = estimate + (offsets * scale[:, None]).mean(axis=0)
    return estimate


# --- pre-aggregation: steps that transform the inputs before any rule --------------------
def nearest_neighbour_mixing(x: np.ndarray, f: int) -> np.ndarray:
    """NNM (Allouah et al., AISTATS 2023): each input replaced by the mean of its ``n - f``
    nearest inputs, itself included, so each mixed input has at most ``f`` outliers' share."""
    keep = max(1, len(x) - min(f, len(x) - 1))
    nearest = np.argsort(pairwise_squared_distances(x), axis=1, kind="stable")[:, :keep]
    return x[nearest].mean(axis=1)


def bucketing(x: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bucketing (Karimireddy, He & Jaggi, ICLR 2022): the inputs shuffled into buckets of
    ``size``, each bucket averaged; (bucket means, which bucket each input went to)."""
    order = rng.permutation(len(x))
    bucket_of = np.empty(len(x), dtype=int)
    bucket_of[order] = np.arange(len(x)) // size
    means = np.stack([x[bucket_of == b].mean(axis=0) for b in range(bucket_of.max() + 1)])
    return means, bucket_of


def adaptive_robust_clipping(x: np.ndarray, f: int, center: np.ndarray) -> np.ndarray:
    """ARC (Allouah et al., 2024): the ``k = floor(2 (f / n) (n - f))`` inputs farthest from
    ``center`` (the node's own model: clipping applies to updates) clipped to the distance of
    the next farthest; the rest unchanged."""
    n = len(x)
    clipped = int(2 * min(f, n) / n * (n - min(f, n)))
    if clipped == 0:
        return x
    offsets = x - center
    norms = np.linalg.norm(offsets, axis=1)
    radius = float(np.sort(norms)[::-1][min(clipped, n - 1)])
    return center + offsets * np.minimum(1.0, radius / np.maximum(norms, 1e-12))[:, None]


def _pre_aggregated(step: str, f: int, bucket_size: int, rng: np.random.Generator, own: Contribution,
                    others: Sequence[Contribution]) -> list[Contribution]:
    """The received models after ``step``; the node's own model is never changed (it is the
    centre of the clipping rules, and nobody's attack), only a reference for mixing and clipping."""
    if not others:
        return []
    x = _stack(own, others)
    if step == "nnm":
        mixed = nearest_neighbour_mixing(x, f)[1:]
    elif step == "arc":
        mixed = adaptive_robust_clipping(x, f, x[0])[1:]
    else:  # bucketing: a bucket declares what its members declared, capped as FedAvg caps them
        means, bucket_of = bucketing(x[1:], bucket_size, rng)
        weights = capped_sample_weights([own.samples, *(c.samples for c in others)])[1:]
        return [Contribution(f"bucket-{b}", means[b], max(1, int(round(weights[bucket_of == b].sum()))))
                for b in range(len(means))]
    return [Contribution(c.sender, v, c.samples) for c, v in zip(others, mixed)]


PRE_AGGREGATIONS = ("none", "nnm", "bucketing", "arc")


# --- WFAgg-style filtering --------------------------------------------------------------
def _robust_upper(values: np.ndarray, k: float) -> float:
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return median + k * max(mad, 1e-12 * max(1.0, abs(median)))


class WFAgg:
    """Three filters over the received models, a model must pass two, then a mean with one's own.

    * distance: among the ``n - f`` closest to the coordinate-wise median of the received models;
    * cosine: among the ``n - f`` whose update (model minus the node's own) points most nearly
      along the median update;
    * temporal: its change since the sender's previous model is within median + k MAD of the
      round's changes (a sender seen for the first time passes).

    It keeps each sender's previous model, so one instance serves one node for a whole run.
    """

    def __init__(self, f: int, k: float = 3.0) -> None:
        self.f = f
        self.k = k
        self.previous: dict[str, np.ndarray] = {}

    def passing(self, own: Contribution, others: Sequence[Contribution]) -> list[Contribution]:
        if not others:
            return []
        x = np.stack([c.vector for c in others]).astype(np.float64, copy=False)
        n = len(x)
        keep = max(1, n - min(self.f, n - 1))
        median = np.median(x, axis=0)
        distance_ok = set(np.argsort(np.linalg.norm(x - median, axis=1), kind="stable")[:keep])
        updates = x - own.vector
        median_update = np.median(updates, axis=0)
        cosines = updates @ median_update / np.maximum(
            np.linalg.norm(updates, axis=1) * np.linalg.norm(median_update), 1e-12)
        cosine_ok = set(np.argsort(-cosines, kind="stable")[:keep])
        changes = np.array([np.linalg.norm(c.vector - self.previous[c.sender])
                            if c.sender in self.previous else np.nan for c in others])
        known = ~np.isnan(changes)
        bound = _robust_upper(changes[known], self.k) if known.sum() >= 2 else np.inf
        temporal_ok = {i for i in range(n) if not known[i] or changes[i] <= bound}
        for c in others:
            self.previous[c.sender] = np.array(c.vector, dtype=np.float64)
        return [c for i, c in enumerate(others)
                if (i in distance_ok) + (i in cosine_ok) + (i in temporal_ok) >= 2]

    def __call__(self, own: Contribution, others: Sequence[Contribution]) -> np.ndarray:
        accepted = self.passing(own, others)
        return _stack(own, accepted).mean(axis=0)


# --- registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AggregatorKind:
    """A rule of the registry: ``make(f)`` the aggregator tolerating ``f`` Byzantine inputs
    (``robust``: it does; the contract suite holds it to that)."""

    name: str
    make: Callable[[int], Aggregator]
    robust: bool = True
    help: str = ""
    min_inputs: Callable[[int], int] = lambda f: 1
    """The fewest inputs (the node's own model included) its guarantee holds with, given ``f``."""
    stateless: bool = True
    """Its result is a function of the round's inputs alone, so whoever saw them can replay it."""


AGGREGATORS: dict[str, AggregatorKind] = {kind.name: kind for kind in (
    AggregatorKind("fedavg", lambda f: lambda own, others: weighted_mean(
        _stack(own, others), capped_sample_weights([own.samples, *(c.samples for c in others)])), robust=False,
        help="the mean weighted by declared samples, each capped at twice the median"),
    AggregatorKind("median", lambda f: lambda own, others: coordinate_median(_stack(own, others)),
                   help="the coordinate-wise median"),
    AggregatorKind("trimmed-mean", lambda f: lambda own, others: trimmed_mean(_stack(own, others), f),
                   help="the mean of each coordinate without its f highest and f lowest"),
    # Krum's guarantee needs n > 2f + 2 (Blanchard et al. 2017): with fewer, f colluders
    # placed together are one another's nearest neighbours and score best.
    AggregatorKind("krum", lambda f: lambda own, others: multi_krum(_stack(own, others), f, m=1),
                   help="the input closest to its n - f - 2 nearest", min_inputs=lambda f: 2 * f + 3),
    AggregatorKind("multi-krum", lambda f: lambda own, others: multi_krum(_stack(own, others), f),
                   help="the mean of the n - f best Krum scores", min_inputs=lambda f: 2 * f + 3),
    AggregatorKind("geomed", lambda f: lambda own, others: geometric_median(_stack(own, others)),
                   help="the geometric median (Weiszfeld)"),
    AggregatorKind("centered-clipping", lambda f: lambda own, others: centered_clipping(
        _stack(own, others), own.vector), help="clipped steps around the node's own model"),
    AggregatorKind("wfagg", WFAgg, help="WFAgg: distance, similarity and temporal filters", stateless=False),
)}
"""A new rule is one entry here and one run of ``tests/test_aggregation.py``."""
AGGREGATOR_NAMES = tuple(AGGREGATORS)
ROBUST_AGGREGATORS = tuple(name for name, kind in AGGREGATORS.items() if kind.robust)


def short_neighbourhoods(name: str, f: int, neighbours: dict[str, Sequence[str]], pre: str = "none",
                         bucket_size: int = 2) -> tuple[int, dict[str, int]]:
    """How many inputs rule ``name`` needs against ``f`` Byzantine ones, and the nodes whose
    inputs (own model and neighbours', or their buckets) are fewer, with how many they have."""
    need = AGGREGATORS[name].min_inputs(f)
    inputs = {node: 1 + (-(-len(peers) // bucket_size) if pre == "bucketing" else len(peers))
              for node, peers in neighbours.items()}
    return need, {node: n for node, n in inputs.items() if n < need}


def replayable(name: str, pre: str = "none") -> bool:
    """Whether anyone who saw a node's inputs of a round can compute what it aggregated: the rule
    keeps no history and the pre-aggregation draws nothing at random (bucketing does)."""
    return name in AGGREGATORS and AGGREGATORS[name].stateless and pre != "bucketing"


def make_aggregator(name: str, f: int = 1, pre: str = "none", bucket_size: int = 2, seed: int = 0) -> Aggregator:
    """The rule called ``name``, tolerating ``f`` Byzantine inputs, after the pre-aggregation
    step ``pre`` (buckets drawn from ``seed``: one node's aggregator, the same every run)."""
    if f < 0:
        raise ValueError(f"f must be >= 0, got {f}")
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATOR_NAMES)}")
    if pre not in PRE_AGGREGATIONS:
        raise ValueError(f"unknown pre-aggregation {pre!r}; choose one of {', '.join(PRE_AGGREGATIONS)}")
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
    rule = AGGREGATORS[name].make(f)
    if pre == "none":
        return rule
    rng = np.random.default_rng([seed, 0xB0C7])

    def pre_aggregated(own: Contribution, others: Sequence[Contribution]) -> np.ndarray:
        return rule(own, _pre_aggregated(pre, f, bucket_size, rng, own, others))

    return pre_aggregated

"""How far a node's declared sample count may weigh: one rule for the agents' FedAvg and for the
inspection service that recomputes it, so both start every round from the same model."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

SAMPLE_CAP = 2.0
"""No input weighs more than this many times the median input's declared count."""


def capped_sample_weights(samples: Sequence[int]) -> np.ndarray:
    """Declared sample counts as averaging weights, each at most :data:`SAMPLE_CAP` times their
    median. A count is what a node *says* it trained on: uncapped, one node declaring a billion
    took over every weighted average it entered (``sample-inflation``). The median of a node's
    inputs is an honest count while fewer than half of them lie, so a liar weighs at most twice
    an honest median node, and honest shards of unequal size keep their order up to that cap."""
    counts = np.asarray(samples, dtype=np.float64)
    return np.minimum(counts, SAMPLE_CAP * statistics.median(counts.tolist()))

"""What a domain observes about its hosts, as fixed-key feature vectors in [0, 1].

Two streams, neither taken from what a node says about itself:

* **flow features**, per host and poll interval, a pure function of two consecutive counter
  records of the host's edge switch (:class:`controllers.core.HostCounters` as a dict);
* **update features**, per (sender, round), from the model frames the domain's inspection
  service decodes off a mirror of the agents' traffic (:class:`UpdateFeatures`).

Half-Space Trees assume every feature lies in [0, 1] and build their trees from the first
sample's keys, so the key sets are fixed and every value is squashed: rates on a log scale up to
a ceiling far above honest traffic, so the honest range keeps resolution and a flood saturates.
"""

from __future__ import annotations

import math

import numpy as np

FLOW_FEATURES = {
    # key: ceiling of the log scale (the value that maps to 1.0)
    "packet_rate": 1e5,
    "byte_rate": 1.25e8,
    "new_flow_rate": 1e4,
    "distinct_dsts": 256,
    "distinct_dst_ports": 1024,
    "packet_in_rate": 1e4,
    "dropped_rate": 1e5,
    "overflow_rate": 1e5,
}
UPDATE_FEATURES = ("distance", "cosine", "sign_agreement", "norm_ratio", "change")


def log_scaled(value: float, ceiling: float) -> float:
    """``log1p(value) / log1p(ceiling)``, clipped to [0, 1]."""
    return min(1.0, math.log1p(max(0.0, value)) / math.log1p(ceiling))


def flow_features(previous: dict, current: dict, seconds: float) -> dict[str, float]:
    """A host's behaviour between two polls. Counters only grow between polls, except the live
    flow counts, which are gauges; a counter that went down (a switch that reconnected and lost
    its rules) counts as zero rather than negative.

    Packets and bytes are what the host *initiated*: its replies (TCP resets and SYN-ACKs, ICMP
    echo replies and errors, counted apart by the edge switch) are left out, so the victim of a
    scan or flood, answering it, does not look like its attacker. Mean packet size is not a
    feature: every poll pairs model senders (full-size segments) with ACK-only receivers, so it
    swings 20-fold in honest traffic and carries nothing a flood's rates do not.
    """
    if seconds <= 0:
        raise ValueError(f"polls must be apart in time, got {seconds} s")

    def rate(key: str) -> float:
        return max(0, current[key] - previous[key]) / seconds

    def initiated(key: str) -> int:
        return current[key] - current[f"reply_{key}"] - previous[key] + previous[f"reply_{key}"]

    raw = {
        "packet_rate": max(0, initiated("packets")) / seconds,
        "byte_rate": max(0, initiated("bytes")) / seconds,
        "new_flow_rate": rate("flows_total"),
        "distinct_dsts": current["distinct_dsts"],
        "distinct_dst_ports": current["distinct_dst_ports"],
        "packet_in_rate": rate("packet_ins"),
        "dropped_rate": rate("dropped_packets"),
        "overflow_rate": rate("overflow_packets"),
    }
    return {key: log_scaled(raw[key], ceiling) for key, ceiling in FLOW_FEATURES.items()}


def excess_over_normal(features: dict[str, dict[str, float]], normal: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each host's features as their excess over the higher of two levels: the domain's median
    host in the same poll and the domain's ``normal`` level (learned in warm-up).

    DFL traffic comes in synchronized bursts, so what every host does at once (a round's
    exchange) is normal by construction and a flooder or scanner stands out against its peers
    rather than against the clock; the normal level keeps a lone honest host, talking while its
    peers sit out a round deadline, from standing out against silence. Doing less than normal
    is never evidence of an attack, so only excess counts: 0 = no more than normal.
    """
    if not features:
        return {}
    keys = list(next(iter(features.values())))
    level = {k: max(float(np.median([f[k] for f in features.values()])), normal.get(k, 0.0)) for k in keys}
    return {node: {k: max(0.0, f[k] - level[k]) for k in keys} for node, f in features.items()}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 0 else 0.0


class UpdateFeatures:
    """Per-round features of the models a domain saw its senders publish.

    A sender's *update* is its model minus the model it started the round from. The
    inspection service knows that start exactly for an honest FedAvg node: the sample-weighted
    mean of its own previous model and the models it received (every frame towards a local
    node crosses the mirror); it is passed in as ``references``. Without one (the first round)
    the round's mean model stands in. Each update is compared with the round's median update:

    * ``distance``: ``|u - median| / median over senders of the same``, log-scaled;
    * ``cosine``: cosine to the median update, mapped from [-1, 1] to [0, 1];
    * ``sign_agreement``: share of coordinates whose sign matches the median update's;
    * ``norm_ratio``: ``|u| / median |u|``, log-scaled up to 10 (1 maps to 0.29);
    * ``change``: cosine of this update to the sender's previous one, relative to the other
      senders' (0.5 = turned as much as the median sender): after a disruption every honest
      node changes course at once, which is no sign against any one of them.
    """

    def __init__(self) -> None:
        self._previous_update: dict[str, np.ndarray] = {}

    def round_features(self, models: dict[str, np.ndarray],
                       references: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
        """Features of every sender of one round (``models``: sender -> flat model)."""
        if not models:
            return {}
        references = references or {}
        names = sorted(models)
        stacked = np.stack([models[n] for n in names]).astype(np.float64)
        mean_model = stacked.mean(axis=0)
        updates = np.stack([models[n] - references.get(n, mean_model) for n in names])
        median_update = np.median(updates, axis=0)
        distances = np.linalg.norm(updates - median_update, axis=1)
        typical_distance = max(float(np.median(distances)), 1e-12)
        norms = np.linalg.norm(updates, axis=1)
        typical_norm = max(float(np.median(norms)), 1e-12)
        signs = np.sign(median_update)
        turns = {n: _cosine(updates[i], self._previous_update[n]) for i, n in enumerate(names)
                 if n in self._previous_update}
        typical_turn = float(np.median(list(turns.values()))) if turns else 0.0
        features = {}
        for i, name in enumerate(names):
            features[name] = {
                "distance": log_scaled(distances[i] / typical_distance, 100.0),
                "cosine": (_cosine(updates[i], median_update) + 1) / 2,
                "sign_agreement": float(np.mean(np.sign(updates[i]) == signs)),
                "norm_ratio": log_scaled(norms[i] / typical_norm, 10.0),
                "change": min(1.0, max(0.0, 0.5 + (turns[name] - typical_turn) / 2)) if name in turns else 0.5,
            }
            self._previous_update[name] = updates[i]
        return features


def fedavg_references(previous: dict[str, tuple[np.ndarray, int]], received: dict[str, set[str]],
                      nodes: list[str]) -> dict[str, np.ndarray]:
    """Where each node's next round starts under FedAvg: the sample-weighted mean of its own
    previous model and the previous models it received (``previous``: sender -> (model, samples))."""
    references = {}
    for node in nodes:
        inputs = [previous[n] for n in sorted({node} | received.get(node, set())) if n in previous]
        if node in previous and inputs:
            weights = np.array([w for _, w in inputs], dtype=np.float64)
            references[node] = weights @ np.stack([m for m, _ in inputs]) / weights.sum()
    return references

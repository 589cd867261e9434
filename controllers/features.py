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
import statistics

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
UPDATE_FEATURES = ("off_norm", "off_home")
HONEST_ALONE = {"packet_rate": 10.0, "new_flow_rate": 10.0, "packet_in_rate": 10.0}
"""Per-second rates an honest host reaches alone: an agent reconnecting to a dead neighbour
(backing off from 50 ms to 1 s) opened 2 flows and caused 8 packet-ins a second in
``scenarios/faults.toml``, against a level of about none, when its peers were quiet."""
EXCESS_CEILING = 100.0  # a flow feature this many times its domain's level is all the excess there is
HONEST_UPDATE_SPREAD = {"off_norm": 0.1, "off_home": 0.1}
"""How far honest senders' update features stray from the zero corner they sit at in the warm-up,
round after round: what the update stream's trees judge is the excess over it
(:func:`beyond_honest_spread`). Measured over paper.toml's network, every attack of the library,
seeds 0-4 (``scenarios/banbar.toml``): the 99th percentile of honest senders' features after the
warm-up was 0.08 (``off_norm``) and 0.11 (``off_home``), and a sender's level held over 3 of 4
rounds reached 0.11 and 0.15; judged from the corner itself, such a sender was banned in 12 of 75
cells. With ``off_home``'s spread at 0.05 instead of 0.1, the trees caught mimic, Min-Max, Min-Sum
and backdoor colluders sooner but banned one honest node of the clean run (README)."""
USUAL_SIZE_BAND = 2.0  # an honest node's update size relative to the median drifts this much either way over a run


def measured_warmup_rounds(warmup_rounds: int) -> int:
    """How many warm-up rounds have a measurable update: round 1 has none (no model before it)."""
    return max(1, warmup_rounds - 1)


def log_scaled(value: float, ceiling: float) -> float:
    """``log1p(value) / log1p(ceiling)``, clipped to [0, 1]."""
    return min(1.0, math.log1p(max(0.0, value)) / math.log1p(ceiling))


def flow_features(previous: dict, current: dict, seconds: float) -> dict[str, float]:
    """A host's behaviour between two polls. Counters only grow between polls, except the live
    flow counts, which are gauges; a counter that went down (a switch that reconnected and lost
    its rules) counts as zero rather than negative.

    Packets and bytes are what the host *initiated*: its replies (the reply direction of a
    connection the other end opened, and errors related to one, as the edge switch's connection
    tracker sees it, counted apart) are left out, so the victim of a scan, a flood or a connect
    storm, answering it, does not look like its attacker; a reply nobody asked for (an echo-reply
    flood) is initiated. ARP is a packet the host initiated too. Mean packet size is not a
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
        "packet_rate": max(0, initiated("packets") + current["arp_packets"] - previous["arp_packets"]) / seconds,
        "byte_rate": max(0, initiated("bytes")) / seconds,
        "new_flow_rate": rate("flows_total"),
        "distinct_dsts": current["distinct_dsts"],
        "distinct_dst_ports": current["distinct_dst_ports"],
        "packet_in_rate": rate("packet_ins"),
        "dropped_rate": rate("dropped_packets"),
        "overflow_rate": rate("overflow_packets"),
    }
    return {key: log_scaled(raw[key], ceiling) for key, ceiling in FLOW_FEATURES.items()}


ARP_FLOOD_PPS = 100
"""ARP a host sends per second that no honest host does: five times what its switch meter lets
through to the controller (``controllers.core.ARP_METER_PPS``); an honest host sends a handful."""


def flood_violations(previous: dict, current: dict, seconds: float) -> list[str]:
    """What a host sent between two polls that is a flood whatever the trees score: ARP far
    beyond its meter. An ARP flood moves only one feature (the packet rate), so the trees'
    score of it sits near their bar; the meter's rate is a fact of the switch, not a learnt
    normal."""
    arp_pps = max(0, current["arp_packets"] - previous["arp_packets"]) / seconds
    return [f"ARP at {arp_pps:.0f} packets/s (meter {ARP_FLOOD_PPS // 5}/s)"] if arp_pps > ARP_FLOOD_PPS else []


def excess_over_normal(features: dict[str, dict[str, float]], normal: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each host's features as their excess over the higher of two levels: the domain's median
    host in the same poll and the domain's ``normal`` level (learned in warm-up).

    DFL traffic comes in synchronized bursts, so what every host does at once (a round's
    exchange) is normal by construction and a flooder or scanner stands out against its peers
    rather than against the clock; the normal level keeps a lone honest host, talking while its
    peers sit out a round deadline, from standing out against silence. Doing less than normal
    is never evidence of an attack, so only excess counts: 0 = no more than normal.

    An excess is a factor over the level, on a log scale where :data:`EXCESS_CEILING` times
    the level maps to 1.0, whatever the feature's own ceiling: on the absolute scale a flood
    40 times its peers' rate moved a feature by 0.2 only, which Half-Space Trees' uniform
    splits scored barely above their bar (a CI run missed a 2,000 packet/s flood). No level is
    below :data:`HONEST_ALONE`, what an honest host does on its own whatever its peers do.
    """
    if not features:
        return {}
    keys = list(next(iter(features.values())))
    level = {k: max(statistics.median(f[k] for f in features.values()), normal.get(k, 0.0),
                    log_scaled(HONEST_ALONE.get(k, 0.0), FLOW_FEATURES[k])) for k in keys}
    stretch = {k: math.log1p(FLOW_FEATURES[k]) / math.log(EXCESS_CEILING) for k in keys}
    return {node: {k: min(1.0, max(0.0, f[k] - level[k]) * stretch[k]) for k in keys} for node, f in features.items()}


def beyond_honest_spread(features: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each sender's update features as their excess over :data:`HONEST_UPDATE_SPREAD`, stretched
    back to [0, 1]."""
    return {node: {k: _clip((v - HONEST_UPDATE_SPREAD[k]) / (1.0 - HONEST_UPDATE_SPREAD[k])) for k, v in f.items()}
            for node, f in features.items()}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 0 else 0.0


class UpdateFeatures:
    """Per-round features of the models a domain saw its senders publish, as *deficits*: how
    much worse a sender looks than the round's typical sender or than itself (0 = no worse),
    each in [0, 1].

    A sender's *update* is its model minus the model it started the round from. The
    inspection service knows that start exactly for an honest node whose rule it can replay:
    the rule over its own previous model and the models it received (every frame towards a
    local node crosses the mirror; :func:`controllers.inspector.start_references`); it is
    passed in as ``references``. Without one (the first round) the round's mean model stands in.

    * ``off_norm``: how far ``log(|u| / median |u|)`` moved from the sender's usual value (the
      median over its first ``baseline_rounds`` measured updates, the warm-up) beyond
      ``USUAL_SIZE_BAND`` either way, over ``log 10``: shard sizes differ, so a node's update size is judged
      against itself; an honest node's relative size drifts by up to 2x over a run as training
      goes on (measured in the sweep), which is not evidence; what it does once attacking never becomes usual.
    * ``off_home``: how much less the update points along the sender's *home direction* (the
      sum of its unit updates over the same warm-up) than the upper-median sender's, in cosine,
      over 2 (the upper median: a domain where half the senders flip still has an honest one
      there). A node's own data pulls it the same way round after round, so honest updates keep a
      positive cosine to their home; a sign flip turns it negative and keeps it there, even
      when the honest update was orthogonal to where the federation goes (a non-IID node's often is).

    There is no feature for how far an update points off the federation's consensus step: a
    non-IID honest node's update strays from it by as much as a poisoned one's (0.2-0.6 in
    cosine over README's attack library), and every attack that moved it moved ``off_home`` or
    ``off_norm`` more; with it the trees banned honest nodes (README, issue 19).

    Normal sits at the zero corner whatever the training phase: Half-Space Trees, with a few
    warm-up rounds of a handful of senders to learn from, split each feature only a few times,
    and a deviation from a corner lands in an empty cell where one inside a drifting cloud
    does not.
    """

    def __init__(self, baseline_rounds: int = 3) -> None:
        self.baseline_rounds = baseline_rounds
        self._log_norm_ratios: dict[str, list[float]] = {}
        self._homes: dict[str, tuple[np.ndarray, int]] = {}

    def round_features(self, models: dict[str, np.ndarray],
                       references: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
        """Features of every sender of one round (``models``: sender -> flat model)."""
        if not models:
            return {}
        names = sorted(models)
        measured = set(names) if references is None else set(references)  # the rest have no known start
        references = references or {}
        stacked = np.stack([models[n] for n in names]).astype(np.float64)
        mean_model = stacked.mean(axis=0)
        updates = np.stack([models[n] - references.get(n, mean_model) for n in names])
        norms = np.linalg.norm(updates, axis=1)
        log_ratios = np.log(np.maximum(norms, 1e-12) / max(statistics.median(norms.tolist()), 1e-12))
        along_home = {n: _cosine(updates[i], self._homes[n][0]) for i, n in enumerate(names) if n in self._homes}
        typical_home = sorted(along_home.values())[len(along_home) // 2] if along_home else 0.0
        features = {}
        for i, name in enumerate(names):
            history = self._log_norm_ratios.setdefault(name, [])
            usual = statistics.median(history) if history else 0.0
            features[name] = {
                "off_norm": _clip((abs(log_ratios[i] - usual) - math.log(USUAL_SIZE_BAND)) / math.log(10)),
                "off_home": _clip((typical_home - along_home[name]) / 2) if name in along_home else 0.0,
            }
            if name not in measured:
                continue
            if len(history) < self.baseline_rounds:
                history.append(float(log_ratios[i]))
            home, observed = self._homes.get(name, (np.zeros_like(updates[i]), 0))
            if observed < self.baseline_rounds and norms[i] > 0:
                self._homes[name] = (home + updates[i] / norms[i], observed + 1)
        return features


def _clip(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)

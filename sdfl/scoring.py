"""Scoring a defense against the ground truth: pure functions of the run's records.

Detection is scored over (node, round) pairs after the warm-up: *positive* = the node was
banned at some moment of that round, *truth* = the node attacked in that round (the attack
plan of :mod:`attacks.plan`). A round's span is from the moment the last node finished the
round before to the moment the last node finished it.
"""

from __future__ import annotations

import statistics

from common.events import Event, of_kind


def round_ends(agent_records: list[dict], rounds: int) -> list[float]:
    """Wall-clock end of each round: when its last live node reported it."""
    ends = []
    for round_ in range(1, rounds + 1):
        times = [r["time"] for r in agent_records if r["round"] == round_]
        ends.append(max(times) if times else (ends[-1] if ends else 0.0))
    return ends


def ban_intervals(controller_records: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Per node, the times it was banned anywhere (first domain to ban, until the last unban)."""
    events = sorted((r["time"], r["type"], r["node"]) for r in of_kind(controller_records, Event.BAN, Event.UNBAN))
    intervals: dict[str, list[tuple[float, float]]] = {}
    since: dict[str, float] = {}
    for time_, kind, node in events:
        if kind == Event.BAN:
            since.setdefault(node, time_)
        elif node in since:
            intervals.setdefault(node, []).append((since.pop(node), time_))
    for node, start in since.items():
        intervals.setdefault(node, []).append((start, float("inf")))
    return intervals


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, precision, recall


class BanTimeline:
    """When each node was banned, against the rounds' spans."""

    def __init__(self, controller_records: list[dict], ends: list[float]) -> None:
        self.intervals = ban_intervals(controller_records)
        self.ends = ends
        self.starts = [float("-inf"), *ends[:-1]]
        self.first_ban = {node: min(a for a, _ in spans) for node, spans in self.intervals.items()}

    def banned_in(self, node: str, round_: int) -> bool:
        start, end = self.starts[round_ - 1], self.ends[round_ - 1]
        return any(a <= end and b >= start for a, b in self.intervals.get(node, ()))

    def ban_round(self, node: str) -> int | None:
        """The round in which the node was first banned, or None."""
        if node not in self.first_ban:
            return None
        return next((r for r in range(1, len(self.ends) + 1) if self.first_ban[node] <= self.ends[r - 1]),
                    len(self.ends))


def score_detection(truth: dict[tuple[str, int], list[str]], controller_records: list[dict], ends: list[float],
                    nodes: list[str], malicious: set[str], *, warmup_rounds: int) -> dict:
    """Detection figures of a run: ``truth`` the attacking (node, round) pairs, ``controller_records``
    the controllers' ban and unban records, ``ends`` each round's end."""
    timeline = BanTimeline(controller_records, ends)
    scored = range(warmup_rounds + 1, len(ends) + 1)
    tp = fp = fn = honest_pairs = honest_banned = 0
    for node in nodes:
        for round_ in scored:
            positive, attacking = timeline.banned_in(node, round_), (node, round_) in truth
            tp += positive and attacking
            fp += positive and not attacking
            fn += attacking and not positive
            if node not in malicious:
                honest_pairs += 1
                honest_banned += positive
    f1, precision, recall = _f1(tp, fp, fn)
    per_kind, delays = _by_kind(truth, timeline, scored)
    return {
        "f1": f1, "precision": precision, "recall": recall,
        "false_ban_rate": honest_banned / honest_pairs if honest_pairs else 0.0,
        "honest_nodes_ever_banned": sorted(n for n in timeline.first_ban if n not in malicious),
        "time_to_ban_rounds_median": statistics.median(delays) if delays else None,
        "scored_rounds": [scored.start, scored.stop - 1] if len(scored) else [],
        "bans": [{"node": r["node"], "domain": r.get("domain"), "round": timeline.ban_round(r["node"]),
                  "time": r["time"],
                  "reason": f"{r['stream']} stream, score {r['score']:.3f}, "
                            f"evidence {r['evidence'][0]} in {r['evidence'][1]} "
                            f"verdict{'' if r['evidence'][1] == 1 else 's'}"}
                 for r in sorted(of_kind(controller_records, Event.BAN), key=lambda r: r["time"])
                 if r.get("origin") == r.get("domain")],
        "by_kind": per_kind,
    }


def _by_kind(truth: dict, timeline: BanTimeline, scored: range) -> tuple[dict, list[int]]:
    """Per attack kind: its attackers, those banned, its recall and its time to ban; and every delay."""
    delays: list[int] = []
    per_kind: dict[str, dict] = {}
    for kind in sorted({k for kinds in truth.values() for k in kinds}):
        pairs = [(n, r) for (n, r), kinds in truth.items() if kind in kinds and r in scored]
        attackers = sorted({n for n, _ in pairs})
        caught = [n for n in attackers if timeline.ban_round(n) is not None]
        kind_delays = [max(0, timeline.ban_round(node) - min(r for n, r in pairs if n == node)) for node in caught]
        delays += kind_delays
        k_tp = sum(timeline.banned_in(n, r) for n, r in pairs)
        per_kind[kind] = {"attackers": attackers, "attackers_banned": caught,
                          "recall": k_tp / len(pairs) if pairs else None,
                          "time_to_ban_rounds_median": statistics.median(kind_delays) if kind_delays else None}
    return per_kind, delays


ANSWERS = {"refused": (Event.DECISION_REFUSED, "origin", "seq"), "held": (Event.NOTICE_RECEIVED, "origin", "seq"),
           "rejected": (Event.NOTICE_REJECTED, "claimed_origin", "claimed_seq"),
           "duplicate": (Event.NOTICE_DUPLICATE, "claimed_origin", "claimed_seq"),
           "equivocation": (Event.EQUIVOCATION, "origin", "seq")}
"""Each answer an honest controller gives a Byzantine act: the record, and its origin and number fields."""


def score_byzantine(by_domain: dict[int, list[dict]], byzantine: int, home: dict[str, int],
                    malicious: set[str], until: float = float("inf")) -> dict:
    """What a Byzantine domain's acts (its ``byzantine_act`` records, the ground truth) achieved
    at the honest domains, from their controllers' records: every act must meet its expected
    answer at every honest domain (:data:`controllers.byzantine.EXPECTED_ANSWER`), no honest host
    of an honest domain may be dropped, no home ban lifted by another domain, no route changed
    for a link the Byzantine domain announced down. Records from ``until`` on (the network being
    dismantled: its border links go down) are not the run's."""
    by_domain = {d: [r for r in records if r["time"] < until] for d, records in by_domain.items()}
    honest_domains = sorted(d for d in by_domain if d != byzantine)
    answered = {d: {(name, r[origin], r[seq]) for name, (kind, origin, seq) in ANSWERS.items()
                    for r in of_kind(by_domain[d], kind) if origin in r}
                for d in honest_domains}
    for d in honest_domains:  # a shielded attacker must be dropped at every honest domain anyway
        answered[d] |= {("dropped", byzantine, 0, r["node"]) for r in of_kind(by_domain[d], Event.BAN)}
    acts = of_kind(by_domain[byzantine], Event.BYZANTINE_ACT)

    def answer(a: dict) -> tuple:
        return (a["expected"], a["origin"], a["seq"]) + ((a["target"],) if a["expected"] == "dropped" else ())

    # What its detector flagged among its honest hosts (poisoned by the attacker it shields) is
    # no attacker: shielding it asks nothing of the others.
    acts = [a for a in acts if a["act"] != "shield" or a["target"] in malicious]
    unanswered = [{"act": a["act"], "round": a["round"], "origin": a["origin"], "seq": a["seq"], "at": d,
                   "expected": a["expected"]}
                  for a in acts for d in honest_domains if answer(a) not in answered[d]]
    dropped = [{"at": d, "node": r["node"], "origin": r["origin"], "time": r["time"]}
               for d in honest_domains for r in of_kind(by_domain[d], Event.BAN)
               if r["node"] not in malicious and home.get(r["node"]) != byzantine]
    lifted = []
    for d in honest_domains:
        for r in of_kind(by_domain[d], Event.UNBAN):
            owner = home.get(r["node"])
            if owner in (d, None) or owner not in by_domain:
                continue
            home_unbans = of_kind(by_domain[owner], Event.UNBAN)
            if not any(u["node"] == r["node"] and u["time"] <= r["time"] for u in home_unbans):
                lifted.append({"at": d, "node": r["node"], "home": owner, "time": r["time"]})
    announced = {tuple(sorted(a["link"])) for a in acts if a["act"] == "link-down"}
    rerouted = [{"at": d, "link": r["link"], "time": r["time"]} for d in honest_domains
                for r in of_kind(by_domain[d], Event.LINK_DOWN) if tuple(sorted(r["link"])) in announced]
    counts: dict[str, int] = {}
    for a in acts:
        counts[a["act"]] = counts.get(a["act"], 0) + 1
    return {"domain": byzantine, "acts": counts, "unanswered": unanswered,
            "honest_hosts_dropped": dropped,
            "dropped_by_byzantine": [x for x in dropped if byzantine in (x["origin"] if isinstance(x["origin"], list)
                                                                         else [x["origin"]])],
            "home_bans_lifted": lifted, "forged_route_changes": rerouted}

"""From the agents' per-round records to rounds.csv rows and the summary (pure functions)."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

ROUND_COLUMNS = ("node", "round", "accuracy", "loss", "train_loss", "bytes_sent", "bytes_received",
                 "round_time_s", "received", "missing", "backdoor_success")


def round_rows(records: list[dict]) -> list[dict]:
    """One row per (node, round), byte counts turned from cumulative into per-round (a restarted
    agent counts from zero again)."""
    rows = []
    last_sent: dict[str, int] = {}
    last_received: dict[str, int] = {}
    for record in sorted(records, key=lambda r: (r["node"], r["round"])):
        node = record["node"]
        if record["bytes_sent"] < last_sent.get(node, 0) or record["bytes_received"] < last_received.get(node, 0):
            last_sent[node] = last_received[node] = 0
        rows.append({
            "node": node,
            "round": record["round"],
            "accuracy": record["accuracy"],
            "loss": record["loss"],
            "train_loss": record["train_loss"],
            "bytes_sent": record["bytes_sent"] - last_sent.get(node, 0),
            "bytes_received": record["bytes_received"] - last_received.get(node, 0),
            "round_time_s": record["round_time_s"],
            "received": len(record["received_from"]),
            "missing": " ".join(record["missing"]),
            "backdoor_success": record.get("backdoor_success"),  # only in a run with a backdoor
        })
        last_sent[node], last_received[node] = record["bytes_sent"], record["bytes_received"]
    return rows


def frames_moved(rows: list[dict], round_: int) -> int | None:
    """How many models the nodes received in ``round_`` (None: no node reported it)."""
    counts = [r["received"] for r in rows if r["round"] == round_]
    return sum(counts) if counts else None


def write_rounds_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROUND_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def summarize(scenario: dict, rows: list[dict], nodes: list[str], dead: dict[str, int],
              malicious: set[str] = frozenset()) -> dict:
    """The figures a user compares across runs; attackers never count as honest."""
    rounds = scenario["dfl"]["rounds"]
    honest = [n for n in nodes if n not in malicious]
    by_round: list[float | None] = []
    time_by_round: list[float | None] = []
    for round_ in range(1, rounds + 1):
        values = [r["accuracy"] for r in rows if r["round"] == round_ and r["node"] in honest]
        by_round.append(statistics.fmean(values) if values else None)
        times = [r["round_time_s"] for r in rows if r["round"] == round_ and r["node"] in honest]
        time_by_round.append(statistics.median(times) if times else None)
    final = [r["accuracy"] for r in rows if r["round"] == rounds and r["node"] in honest]
    backdoor_by_round = []
    for round_ in range(1, rounds + 1):
        obeyed = [r["backdoor_success"] for r in rows
                  if r["round"] == round_ and r["node"] in honest and r.get("backdoor_success") is not None]
        backdoor_by_round.append(statistics.fmean(obeyed) if obeyed else None)
    completed = sorted({r["node"] for r in rows if r["round"] == rounds})
    return {
        "complete": len(completed) == len(nodes) - len(dead),
        "dfl": {
            "honest_accuracy_final": statistics.fmean(final) if final else None,
            "honest_accuracy_by_round": by_round,
            # With a backdoor scheduled: the share of triggered held-out images (of every other
            # class) that honest nodes' models map to its target, the attack success rate.
            "backdoor_success_final": backdoor_by_round[-1] if backdoor_by_round else None,
            "backdoor_success_by_round": backdoor_by_round if any(v is not None for v in backdoor_by_round) else None,
            "honest_nodes_reporting_final": len(final),
            "round_time_s_median": statistics.median(r["round_time_s"] for r in rows) if rows else None,
            # Per round, the honest nodes' median time from training start to aggregation
            # (excluding the wait for dfl.round_period_s): where floods show up.
            "round_time_s_by_round": time_by_round,
            "model_bytes_total": sum(r["bytes_sent"] for r in rows),
            # Rounds in which no node received a single model: nothing moved, however fast they were.
            "rounds_without_frames": [n for n in range(1, rounds + 1) if frames_moved(rows, n) == 0],
            "nodes": len(nodes),
            "nodes_completed": completed,
            "dead_nodes": dict(sorted(dead.items())),
        },
        "scenario": scenario,
    }


def border_summary(counters: dict[int, dict], records: list[dict], domain_of: dict[str, int],
                   routes: dict[int, dict[int, int]]) -> dict:
    """What crossed the border links, as the receiving domains' switches counted it (IPv4 frames,
    Ethernet headers included; what a ban stopped on arrival too: a banned node's frames in
    flight cross before or after the ban lands), beside the model bytes the agents received from
    other domains, each counted once for every border it crossed (``routes``: next hops): their
    quotient is what headers, acknowledgements and retransmissions add."""
    border = {f"d{n}->d{d}": t["bytes"] + t.get("banned_bytes", 0) for d, record in sorted(counters.items())
              for n, t in sorted(record["transit"].items(), key=lambda item: int(item[0]))}
    last = {r["node"]: r for r in sorted(records, key=lambda r: r["round"])}

    def crossings(a: int, b: int) -> int:
        hops = 0
        while a != b:
            a, hops = routes[a][b], hops + 1
        return hops

    model = sum(received * crossings(domain_of[peer], domain_of[node])
                for node, record in last.items() for peer, received in record.get("bytes_received_from", {}).items()
                if peer in domain_of)
    total = sum(border.values())
    return {"border_ipv4_bytes": border, "border_ipv4_bytes_total": total, "cross_domain_model_bytes": model,
            "border_bytes_over_model_bytes": total / model if model else None}

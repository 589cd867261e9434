"""Fixed against adaptive (Weibull) checkpoint intervals, on simulated agent failures.

An agent must finish ``--rounds`` rounds of ``--round-s`` seconds; it fails after Weibull
uptimes (renewed at each restart), loses the rounds since its last checkpoint, and pays
``--recovery-s`` to restart; each checkpoint costs ``--checkpoint-s``. Policies: fixed
intervals, the adaptive rule of :mod:`agents.checkpoint` fitted to the failures the agent has
seen so far (as a restarted agent does from its life log), and the same rule told the true
model (the best it could do). Per failure model and policy: mean and spread over trials of the
overhead, (wall time - useful time) / useful time.

    .venv/bin/python benchmarks/checkpointing.py --out runs/checkpointing
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.checkpoint import CheckpointPolicy, Weibull  # noqa: E402

FIXED = (1, 2, 5, 10, 20, 50)
SHAPES = (0.6, 1.0, 2.0)


def simulate(policy_for, failures: Weibull, rounds: int, round_s: float, checkpoint_s: float, recovery_s: float,
             rng: np.random.Generator) -> tuple[float, int]:
    """Wall seconds to finish ``rounds`` and the number of failures on the way. ``policy_for(uptimes)``
    builds the policy a (re)started agent uses, from the uptimes observed so far."""
    uptimes: list[float] = []
    policy = policy_for(uptimes)
    wall, age, saved, unsaved = 0.0, 0.0, 0, 0
    next_failure = failures.scale * rng.weibull(failures.shape)

    def fail() -> None:
        nonlocal wall, age, unsaved, policy, next_failure
        wall += next_failure - age + recovery_s
        uptimes.append(next_failure)
        age, unsaved = 0.0, 0
        policy = policy_for(uptimes)
        next_failure = failures.scale * rng.weibull(failures.shape)

    while saved + unsaved < rounds:
        if age + round_s > next_failure:
            fail()
            continue
        wall, age, unsaved = wall + round_s, age + round_s, unsaved + 1
        if saved + unsaved < rounds and policy.due(age, round_s):
            if age + checkpoint_s > next_failure:
                fail()
                continue
            wall, age, saved, unsaved = wall + checkpoint_s, age + checkpoint_s, saved + unsaved, 0
    return wall, len(uptimes)


def policies(failures: Weibull, checkpoint_s: float, recovery_s: float) -> dict:
    def adaptive(uptimes):
        return CheckpointPolicy(5, adaptive=True, uptimes=list(uptimes), checkpoint_s=checkpoint_s,
                                recovery_s=recovery_s)

    def told_the_truth(_uptimes):
        policy = CheckpointPolicy(5, checkpoint_s=checkpoint_s, recovery_s=recovery_s)
        policy.model = failures
        return policy

    made = {f"fixed {c}": (lambda c: lambda _uptimes: CheckpointPolicy(c))(c) for c in FIXED}
    made["adaptive (fitted)"] = adaptive
    made["adaptive (true model)"] = told_the_truth
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/checkpointing"))
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--round-s", type=float, default=1.0)
    parser.add_argument("--checkpoint-s", type=float, default=0.5)
    parser.add_argument("--recovery-s", type=float, default=10.0)
    parser.add_argument("--mtbf-s", type=float, default=300.0, help="mean uptime of every failure model")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in SHAPES:
        # The scale that gives every shape the same mean uptime: mean = scale * Gamma(1 + 1/shape).
        failures = Weibull(shape, args.mtbf_s / float(math.gamma(1 + 1 / shape)))
        for name, policy_for in policies(failures, args.checkpoint_s, args.recovery_s).items():
            runs = [simulate(policy_for, failures, args.rounds, args.round_s, args.checkpoint_s, args.recovery_s,
                             np.random.default_rng(trial)) for trial in range(args.trials)]
            overheads = [wall / (args.rounds * args.round_s) - 1 for wall, _ in runs]
            rows.append({"shape": shape, "scale_s": round(failures.scale, 1), "policy": name,
                         "overhead_mean": statistics.mean(overheads), "overhead_sd": statistics.stdev(overheads),
                         "failures_mean": statistics.mean(f for _, f in runs)})
            print(f"shape {shape:3.1f}  {name:22s} overhead {rows[-1]['overhead_mean']:6.1%} "
                  f"(sd {rows[-1]['overhead_sd']:5.1%}), {rows[-1]['failures_mean']:.1f} failures", flush=True)
    with open(args.out / "checkpointing.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'checkpointing.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

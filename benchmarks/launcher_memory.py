"""What a forked agent costs of its own: private dirty memory of a child of the launcher, with
and without torch warmed up before the fork (no root, no network).

Each case forks one child from a process that imported what the launcher imports and computed
the run's dataset and shards (as :mod:`sdfl.launcher` does); the child
builds a node of ``scenarios/paper.toml`` and trains it for ``--rounds`` rounds, reporting its
``Private_Dirty`` (the memory no other process shares) after each step.

    .venv/bin/python benchmarks/launcher_memory.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
ROOT = Path(__file__).resolve().parent.parent


def private_dirty_mb() -> float:
    with open(f"/proc/{os.getpid()}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty")) / 1024


def child(config, rounds: int, write) -> None:
    from agents.agent import build_node

    steps = {"forked": private_dirty_mb()}
    node = build_node(config, config.nodes[0])
    steps["node built"] = private_dirty_mb()
    for round_ in range(1, rounds + 1):
        node.train(round_, node.y)
    steps[f"after {rounds} rounds of training"] = private_dirty_mb()
    write(json.dumps(steps).encode())


def measure(config, rounds: int) -> dict:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        child(config, rounds, lambda data: os.write(write, data))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        result = json.loads(f.read())
    os.waitpid(pid, 0)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import torch

    from agents.agent import federation_data
    from agents.model import warm_up
    from common.runconfig import RunConfig
    from sdfl.runner import run_plan
    from sdfl.scenario import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "paper.toml")
    _layout, names, neighbours, attacks, _faults = run_plan(scenario)
    config = RunConfig(scenario, tuple(names), {n: tuple(p) for n, p in neighbours.items()},
                       tuple(a.to_record() for a in attacks))
    torch.set_num_threads(1)
    federation_data(config)  # as the launcher does: the dataset and shards before any fork
    gc.freeze()
    cold = measure(config, args.rounds)
    warm_up()
    gc.freeze()
    warm = measure(config, args.rounds)
    print("private dirty memory of a forked agent (MB):")
    for step in cold:
        print(f"  {step:32s} torch not warmed {cold[step]:7.1f}   warmed before the fork {warm[step]:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

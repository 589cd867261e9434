"""How many machines a federation needs, from the per-agent costs one real run measured.

Reads a finished ``sdfl run`` folder (``summary.json`` and ``dfl.json``: its agents' CPU and
memory, the controllers', inspection services' and Open vSwitch's, the model bytes and each
agent's neighbours) and scales those costs to federations of N agents in domains of the run's
size, at the run's round period::

    .venv/bin/python benchmarks/sizing.py runs/paper --agents 100 1000 10000 --cores 16 --memory-gib 64 \
        --agents-per-domain 12

What it assumes, and says: costs grow linearly in agents and domains (the scaling benchmark
measured round time growing faster on 2 cores, ``README: Scaling``), each agent keeps the run's
number of cross-domain neighbours, and a machine keeps a quarter of its memory for itself.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MeasuredCosts:
    """Costs per agent-round and per domain-round, and what a round moves across borders."""

    agent_cpu_s: float
    """Agents' and Open vSwitch's CPU per agent per round."""
    domain_cpu_s: float
    """A domain's controller and inspection service's CPU per round."""
    agent_memory_mb: float
    domain_memory_mb: float
    frame_bytes: float
    cross_domain_frames_per_agent: float
    agents_per_domain: int
    round_period_s: float
    source: str

    @classmethod
    def from_run(cls, folder: Path) -> MeasuredCosts:
        summary = json.loads((folder / "summary.json").read_text())
        config = json.loads((folder / "dfl.json").read_text())
        scenario = config["scenario"]
        nodes = config["nodes"]
        domain_of = {n: int(n[1:n.index("h")]) for n in nodes}
        rounds = scenario["dfl"]["rounds"]
        domains = scenario["network"]["domains"]
        cpu = summary["resources"]["cpu_s_by_role"]
        pss = summary["resources"]["peak_pss_mb_by_role"]
        frames = sum(len(peers) for peers in config["neighbours"].values()) * rounds
        cross = sum(domain_of[p] != domain_of[n] for n, peers in config["neighbours"].items() for p in peers)
        return cls(agent_cpu_s=(cpu["agent"] + cpu.get("ovs-vswitchd", 0.0)) / (len(nodes) * rounds),
                   domain_cpu_s=(cpu["controller"] + cpu.get("inspector", 0.0)) / (domains * rounds),
                   agent_memory_mb=(pss["agent"] + pss.get("ovs-vswitchd", 0.0)) / len(nodes),
                   domain_memory_mb=(pss["controller"] + pss.get("inspector", 0.0)) / domains,
                   frame_bytes=summary["dfl"]["model_bytes_total"] / frames,
                   cross_domain_frames_per_agent=cross / len(nodes),
                   agents_per_domain=scenario["network"]["hosts_per_domain"],
                   round_period_s=scenario["dfl"]["round_period_s"], source=str(folder))


def size_for(costs: MeasuredCosts, agents: int, cores: int, memory_gib: float, agents_per_domain: int = 0) -> dict:
    """Machines of ``cores`` and ``memory_gib`` that hold ``agents`` at the measured pace, in
    domains of ``agents_per_domain`` (0: the run's)."""
    domains = math.ceil(agents / (agents_per_domain or costs.agents_per_domain))
    cpu_per_round = agents * costs.agent_cpu_s + domains * costs.domain_cpu_s
    cores_needed = cpu_per_round / costs.round_period_s
    memory_gib_needed = (agents * costs.agent_memory_mb + domains * costs.domain_memory_mb) / 1024
    machines = max(math.ceil(cores_needed / cores), math.ceil(memory_gib_needed / (0.75 * memory_gib)), 1)
    return {"agents": agents, "domains": domains, "cores": cores_needed, "memory_gib": memory_gib_needed,
            "machines": machines, "agents_per_core": agents / cores_needed,
            "border_mb_per_round": agents * costs.cross_domain_frames_per_agent * costs.frame_bytes / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished sdfl run folder (summary.json, dfl.json)")
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--cores", type=int, default=16, help="cores of one machine")
    parser.add_argument("--memory-gib", type=float, default=64.0, help="memory of one machine")
    parser.add_argument("--agents-per-domain", type=int, default=0, help="domain size (default: the run's)")
    args = parser.parse_args(argv)
    costs = MeasuredCosts.from_run(args.run)
    print(f"measured in {costs.source}: {costs.agent_cpu_s * 1000:.1f} ms CPU and {costs.agent_memory_mb:.0f} MB "
          f"per agent (OVS included), {costs.domain_cpu_s * 1000:.0f} ms CPU and {costs.domain_memory_mb:.0f} MB "
          f"per domain (controller, inspection) a round; {costs.frame_bytes / 1000:.1f} kB a model frame, "
          f"{costs.cross_domain_frames_per_agent:.2f} of an agent's frames cross a border; "
          f"{costs.agents_per_domain} agents a domain, a round every {costs.round_period_s:g} s")
    print(f"\n| agents | domains | cores at that pace | agents per core | memory (GiB) | "
          f"machines of {args.cores} cores / {args.memory_gib:g} GiB | border MB per round |")
    print("|---|---|---|---|---|---|---|")
    for agents in args.agents:
        row = size_for(costs, agents, args.cores, args.memory_gib, args.agents_per_domain)
        print(f"| {agents:,} | {row['domains']:,} | {row['cores']:.1f} | {row['agents_per_core']:.0f} | "
              f"{row['memory_gib']:.1f} | {row['machines']:,} | {row['border_mb_per_round']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

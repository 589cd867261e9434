"""The sizing table's arithmetic (benchmarks/sizing.py), on made-up measured costs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from sizing import MeasuredCosts, size_for  # noqa: E402

COSTS = MeasuredCosts(agent_cpu_s=0.02, domain_cpu_s=0.05, agent_memory_mb=50.0, domain_memory_mb=150.0,
                      frame_bytes=10_000.0, cross_domain_frames_per_agent=1.0, agents_per_domain=10,
                      round_period_s=1.0, source="test")


def test_machines_are_set_by_whichever_of_cores_and_memory_runs_out_first():
    cpu_bound = size_for(COSTS, 10_000, cores=16, memory_gib=1024)
    assert cpu_bound["domains"] == 1000 and cpu_bound["cores"] == 10_000 * 0.02 + 1000 * 0.05
    assert cpu_bound["machines"] == 16  # 250 cores over 16 a machine
    memory_bound = size_for(COSTS, 10_000, cores=1024, memory_gib=8)
    assert memory_bound["machines"] == 106  # 634.8 GiB over 6 usable GiB a machine
    assert cpu_bound["border_mb_per_round"] == 100.0
    assert size_for(COSTS, 10_000, 16, 1024, agents_per_domain=100)["domains"] == 100

"""`sdfl run` as a user runs it, for the integration tests that check a whole run's results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_scenario(text: str, folder: Path, timeout: float = 900) -> tuple[subprocess.CompletedProcess, Path]:
    """Write the TOML ``text`` to ``folder``, run it, fail on a non-zero exit; (process, run folder)."""
    scenario = folder / "scenario.toml"
    scenario.write_text(text)
    out = folder / "run"
    result = subprocess.run([sys.executable, "-m", "sdfl", "run", str(scenario), "--out", str(out)],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, out


DEFENDED_2X3 = """
[network]
domains = 2
hosts_per_domain = 3
domain_graph = "line"
[dfl]
rounds = 10
round_period_s = 2.0
round_timeout_s = 8.0
peers = "domain-full+paired"
[defense]
fuhst = true
window_size = 4
ban_after = "2/3"
"""
"""The smallest network FU-HST judges end to end: two domains of three hosts, ten rounds, a short
window; a test's scenario is its name, this, and its attacks."""

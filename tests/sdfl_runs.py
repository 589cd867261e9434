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

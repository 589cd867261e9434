"""The start barrier: no agent begins round 1 before every agent of the run is ready (its shard
loaded, its model built, its listener bound) or declared dead; then all begin together.

Without it, agents that import torch for tens of seconds on a loaded machine start their rounds
tens of seconds apart, the first ones' frames wait for listeners that are not there yet, their
neighbours give them up in round 1 and the federation never gets back in step.

Files in the run folder, which every Mininet host shares: an agent writes ``ready/<node>`` once
ready and waits for ``start.json``; the runner writes ``start.json`` (the wall-clock moment round 1
begins, and who was not ready) once every agent is ready or dead.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

READY_DIR = "ready"
START_FILE = "start.json"


def announce_ready(out: Path, node: str) -> None:
    folder = Path(out) / READY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / node).touch()


def ready_nodes(out: Path) -> set[str]:
    folder = Path(out) / READY_DIR
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


def release(out: Path, at: float, absent: list[str]) -> None:
    """Round 1 begins at ``at`` for every agent; ``absent``: those declared dead before it."""
    partial = Path(out) / f".{START_FILE}.{os.getpid()}"
    partial.write_text(json.dumps({"at": at, "absent": sorted(absent)}))
    partial.replace(Path(out) / START_FILE)


def wait_for_start(out: Path, timeout_s: float, poll_s: float = 0.05) -> float | None:
    """The moment round 1 begins, once the runner released the barrier; None if it did not
    within ``timeout_s`` (the runner is gone)."""
    path = Path(out) / START_FILE
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        try:
            return float(json.loads(path.read_text())["at"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            time.sleep(poll_s)
    return None

"""How to start one domain's controller process (command line and environment only).

Kept apart from the app so the runner can start controllers without importing os-ken.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controllers.defense import DefenseConfig

APP_MODULE = "controllers.domain_app"
MANAGERS = ("osken-manager", "ryu-manager")


def find_manager() -> str:
    """The os-ken (preferred) or Ryu manager next to this interpreter, else on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for name in MANAGERS:
        found = shutil.which(name, path=search)
        if found:
            return found
    raise FileNotFoundError(
        "no osken-manager or ryu-manager found: run scripts/install.sh (installs os-ken<4)"
    )


def controller_command(
    domain: int,
    listen_host: str,
    listen_port: int,
    description_path: Path,
    events_path: Path,
    poll_interval: float,
    watched_ports: tuple[int, ...] = (),
    defense: DefenseConfig | None = None,
    keys_path: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` for the controller of ``domain``."""
    argv = [
        find_manager(),
        "--ofp-listen-host", listen_host,
        "--ofp-tcp-listen-port", str(listen_port),
        APP_MODULE,
    ]
    env = dict(os.environ)
    env.update(
        SDFL_NETWORK=str(description_path),
        SDFL_DOMAIN=str(domain),
        SDFL_EVENTS=str(events_path),
        SDFL_POLL_INTERVAL=str(poll_interval),
        SDFL_WATCH_PORTS=",".join(map(str, watched_ports)),
        PYTHONUNBUFFERED="1",
    )
    if defense is not None:
        env["SDFL_DEFENSE"] = defense.to_json()
    if keys_path is not None:
        env["SDFL_KEYS"] = str(keys_path)
    return argv, env

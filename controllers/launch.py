"""How to start one domain's controller process: which framework, which interpreter, which
command line and environment.

Kept apart from the app so the runner can start controllers without importing a framework:
the controller may run in an interpreter of its own (Ryu 4.34 imports only on Python <= 3.9,
the testbed needs 3.10+), which is probed here once, before anything starts.
"""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controllers.byzantine import ByzantinePlan
    from controllers.defense import DefenseConfig

REPO = Path(__file__).resolve().parents[1]
APP_MODULE = "controllers.domain_app"


class ControllerUnavailable(RuntimeError):
    """The chosen framework cannot start here: the message names the fix."""


class Framework(enum.Enum):
    """The Ryu API's two implementations. Each runs where its own venv put it: os-ken in the
    testbed's (``.venv``), Ryu in ``.venv-ryu`` (``scripts/install.sh --ryu``)."""

    OS_KEN = "os-ken"
    RYU = "ryu"

    @property
    def module(self) -> str:
        return {"os-ken": "os_ken", "ryu": "ryu"}[self.value]

    @property
    def default_python(self) -> Path:
        if self is Framework.RYU:
            return REPO / ".venv-ryu" / "bin" / "python"
        return Path(sys.executable)

    @property
    def install_hint(self) -> str:
        return "bash scripts/install.sh --ryu" if self is Framework.RYU else "bash scripts/install.sh"


FRAMEWORK_NAMES = tuple(f.value for f in Framework)
OS_KEN_4_PYTHON = REPO / ".venv-osken4" / "bin" / "python"
"""os-ken 4 on Python 3.12 (``scripts/install.sh --os-ken-4``): the line for Python 3.12+ machines."""

# Run by the controller's interpreter: what the process will load, before it is started.
_PROBE = """
import importlib, json, platform, sys
importlib.import_module(sys.argv[1])  # first: the app must load this framework (controllers.compat)
from importlib import metadata
version = metadata.version({"os_ken": "os-ken", "ryu": "ryu"}[sys.argv[1]])
import numpy, river, cryptography, controllers.domain_app
print(json.dumps({"version": version, "python_version": platform.python_version(),
                  "eventlet": metadata.version("eventlet")}))
"""


@dataclass(frozen=True)
class ControllerRuntime:
    """A framework found working in an interpreter: what a run records of its controllers."""

    framework: Framework
    python: str
    version: str
    python_version: str
    eventlet: str

    def to_dict(self) -> dict:
        return {**asdict(self), "framework": self.framework.value}

    @classmethod
    def probe(cls, framework: Framework | str, python: str | Path | None = None) -> ControllerRuntime:
        """Import the framework, numpy, river, cryptography and the app in ``python`` (default: the
        framework's own venv); a clear error naming the fix where that fails."""
        framework = Framework(framework)
        python = Path(python) if python else framework.default_python
        if not os.access(python, os.X_OK):
            raise ControllerUnavailable(f"{framework.value}: no interpreter at {python}: run {framework.install_hint}")
        try:
            done = subprocess.run([str(python), "-c", _PROBE, framework.module], capture_output=True, text=True,
                                  timeout=60, env=controller_environment({}), cwd=REPO)
        except subprocess.TimeoutExpired as error:
            raise ControllerUnavailable(f"{framework.value}: {python} took over 60 s to import it") from error
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ControllerUnavailable(f"{framework.value} does not import in {python}: {last}; "
                                        f"run {framework.install_hint}")
        found = json.loads(done.stdout.strip().splitlines()[-1])
        return cls(framework, str(python), found["version"], found["python_version"], found["eventlet"])


def controller_environment(extra: dict[str, str]) -> dict[str, str]:
    """The controller's environment: the repository importable from any interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def controller_command(
    runtime: ControllerRuntime,
    domain: int,
    listen_host: str,
    listen_port: int,
    description_path: Path,
    events_path: Path,
    poll_interval: float,
    watched_ports: tuple[int, ...] = (),
    defense: DefenseConfig | None = None,
    keys_path: Path | None = None,
    byzantine: ByzantinePlan | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(args, env)`` for the controller of ``domain``: the arguments of ``python -m
    controllers.manager`` (in ``runtime.python``, :func:`controller_environment`) and the
    variables that tell the app its domain (``sdfl.launcher`` forks it with both)."""
    args = [
        runtime.framework.module,
        "--ofp-listen-host", listen_host,
        "--ofp-tcp-listen-port", str(listen_port),
        APP_MODULE,
    ]
    env = dict(
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
    if byzantine is not None:
        env["SDFL_BYZANTINE"] = byzantine.to_json()
    return args, env

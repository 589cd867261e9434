"""Choosing the controllers' framework and interpreter: probed before anything starts, a clear
error naming the fix where one is missing, and one command line for every framework."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from common.schema import ScenarioError
from controllers.launch import (
    REPO,
    ControllerRuntime,
    ControllerUnavailable,
    Framework,
    controller_command,
    controller_environment,
)
from sdfl.scenario import load_scenario


def test_the_default_framework_is_os_ken_in_this_interpreter_and_its_version_is_recorded():
    runtime = ControllerRuntime.probe("os-ken")
    assert runtime.framework is Framework.OS_KEN and runtime.python == sys.executable
    assert runtime.version == metadata.version("os-ken")
    assert runtime.to_dict()["framework"] == "os-ken"


def test_a_missing_interpreter_or_framework_is_named_with_the_install_command(tmp_path):
    with pytest.raises(ControllerUnavailable, match=r"ryu: no interpreter at .*nowhere.*install.sh --ryu"):
        ControllerRuntime.probe("ryu", tmp_path / "nowhere" / "python")
    # This interpreter has os-ken, not Ryu (which does not import on Python >= 3.10).
    if sys.version_info >= (3, 10):
        with pytest.raises(ControllerUnavailable, match=r"ryu does not import in .*install.sh --ryu"):
            ControllerRuntime.probe("ryu", sys.executable)


def test_every_framework_starts_through_one_entry_point_with_the_repository_importable(tmp_path):
    runtime = ControllerRuntime(Framework.RYU, "/opt/py39/bin/python", "4.34", "3.9.18", "0.30.2")
    args, env = controller_command(runtime, 2, "127.0.0.1", 6655, tmp_path / "network.json",
                                   tmp_path / "controller-d2.jsonl", 1.0, (7000,))
    assert args[0] == "ryu"  # python -m controllers.manager ryu ...
    assert args[-1] == "controllers.domain_app" and args[args.index("--ofp-tcp-listen-port") + 1] == "6655"
    assert controller_environment({})["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert (env["SDFL_DOMAIN"], env["SDFL_WATCH_PORTS"]) == ("2", "7000")


def test_the_entry_point_refuses_an_unknown_framework():
    done = subprocess.run([sys.executable, "-m", "controllers.manager", "floodlight", "controllers.domain_app"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode != 0 and "usage: python -m controllers.manager os_ken|ryu" in done.stderr


def test_the_scenario_names_the_framework_and_refuses_an_unknown_one(tmp_path):
    assert load_scenario(None)["network"]["controller"] == "os-ken"
    path = tmp_path / "s.toml"
    path.write_text('[network]\ncontroller = "floodlight"\n')
    with pytest.raises(ScenarioError, match="network.controller.*floodlight"):
        load_scenario(Path(path))

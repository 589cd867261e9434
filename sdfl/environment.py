"""``sdfl check``: what this machine can emulate, and what to do about what it cannot."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "FAIL"
INSTALL_HINT = "run: bash scripts/install.sh"
PYTHON_DEPENDENCIES = ("numpy", "torch", "river", "scapy", "mininet")
TOOLS = ("ovs-vsctl", "ovs-ofctl", "ip", "tc", "ethtool", "iperf3", "tcpdump", "ping")


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", OK, "running as root")
    if shutil.which("sudo"):
        return Check("root", OK, "not root; commands that need root re-run themselves with sudo")
    return Check("root", FAIL, "not root and no sudo", "run as root")


def check_python_dependencies() -> list[Check]:
    checks = []
    for module in PYTHON_DEPENDENCIES:
        found = importlib.util.find_spec(module) is not None
        checks.append(Check(f"python: {module}", OK if found else FAIL,
                            "importable" if found else "missing", "" if found else INSTALL_HINT))
    framework = next((m for m in ("os_ken", "ryu") if importlib.util.find_spec(m)), None)
    checks.append(Check("python: os-ken or Ryu", OK if framework else FAIL,
                        framework or "missing", "" if framework else INSTALL_HINT))
    return checks


def check_controller_manager() -> Check:
    from controllers.launch import find_manager

    try:
        return Check("controller manager", OK, find_manager())
    except FileNotFoundError as error:
        return Check("controller manager", FAIL, "missing", str(error))


def check_tools() -> list[Check]:
    checks = []
    for tool in TOOLS:
        path = shutil.which(tool)
        checks.append(Check(f"tool: {tool}", OK if path else FAIL, path or "missing",
                            "" if path else INSTALL_HINT))
    return checks


def check_ovs() -> list[Check]:
    from sdfl.emulation import ovs_running
    from topologies.builder import kernel_datapath_available, netem_available

    if not shutil.which("ovs-vsctl"):
        return [Check("Open vSwitch running", FAIL, "not installed", INSTALL_HINT)]
    checks = []
    if ovs_running():
        checks.append(Check("Open vSwitch running", OK, "ovsdb-server and ovs-vswitchd answer"))
    else:
        checks.append(Check("Open vSwitch running", FAIL, "ovs-vsctl gets no answer",
                            "/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random"))
    if kernel_datapath_available():
        checks.append(Check("OVS datapath", OK, "kernel (openvswitch module)"))
    else:
        checks.append(Check("OVS datapath", OK, "userspace (no openvswitch kernel module)"))
    if netem_available():
        checks.append(Check("netem (link delay/loss)", OK, "available"))
    else:
        checks.append(Check("netem (link delay/loss)", WARN,
                            "unavailable: links can be shaped in bandwidth only",
                            "use the Vagrant VM for delay/loss"))
    return checks


def run_checks() -> list[Check]:
    return [check_root(), *check_python_dependencies(), check_controller_manager(),
            *check_tools(), *check_ovs()]

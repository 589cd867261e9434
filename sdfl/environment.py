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
    return checks


def check_controller_frameworks() -> list[Check]:
    """Each framework in its own interpreter: installed? imports (with numpy, river, the app)?
    which version? os-ken is the default and needed; Ryu is the alternative, when installed."""
    from controllers.launch import OS_KEN_4_PYTHON, ControllerRuntime, ControllerUnavailable, Framework

    checks = []
    choices = [(framework, None, framework.install_hint) for framework in Framework]
    if OS_KEN_4_PYTHON.exists():
        choices.append((Framework.OS_KEN, OS_KEN_4_PYTHON, "bash scripts/install.sh --os-ken-4"))
    for framework, python, hint in choices:
        name = f"controller: {framework.value}" + (f" ({python.parent.parent.name})" if python else "")
        try:
            runtime = ControllerRuntime.probe(framework, python)
        except ControllerUnavailable as error:
            status = FAIL if (framework, python) == (Framework.OS_KEN, None) else WARN
            checks.append(Check(name, status, str(error), hint))
            continue
        checks.append(Check(name, OK, f"{runtime.version} on Python {runtime.python_version}, "
                                      f"eventlet {runtime.eventlet} ({runtime.python})"))
    return checks


def check_tools() -> list[Check]:
    checks = []
    for tool in TOOLS:
        path = shutil.which(tool)
        checks.append(Check(f"tool: {tool}", OK if path else FAIL, path or "missing",
                            "" if path else INSTALL_HINT))
    return checks


def check_ovs() -> list[Check]:
    from sdfl.emulation import ovs_running
    from topologies.builder import (DATAPATH_SEND_BUFFER, coalescing_available, datapath_send_buffer,
                                    kernel_datapath_available, netem_available)

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
        buffer = datapath_send_buffer()
        if buffer >= DATAPATH_SEND_BUFFER:
            checks.append(Check("OVS send buffer", OK, f"{buffer:,} bytes"))
        else:
            checks.append(Check("OVS send buffer", WARN,
                                f"{buffer:,} bytes: bursts beyond it are lost, and the inspection port's copies "
                                "are never resent (large models' frames go unread; paper.toml's fit)",
                                f"sysctl -w net.core.wmem_default={DATAPATH_SEND_BUFFER}, then, with no run "
                                "active: /usr/share/openvswitch/scripts/ovs-ctl restart --system-id=random"))
    if netem_available():
        checks.append(Check("netem (link delay/loss)", OK, "available"))
    else:
        checks.append(Check("netem (link delay/loss)", WARN,
                            "unavailable: links can be shaped in bandwidth only",
                            "use the Vagrant VM for delay/loss"))
    if coalescing_available():
        checks.append(Check("veth GRO (inspection reads)", OK, "the kernel coalesces the mirror's segments"))
    else:
        checks.append(Check("veth GRO (inspection reads)", WARN,
                            "unavailable: the inspection reads each mirrored segment (more CPU, same results)"))
    return checks


def run_checks() -> list[Check]:
    return [check_root(), *check_python_dependencies(), *check_controller_frameworks(),
            *check_tools(), *check_ovs()]

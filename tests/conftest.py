"""Test tiers: unit and simulation tests run anywhere; ``mininet`` tests need root and OVS.

Where root or Open vSwitch is missing the ``mininet`` tier skips with the reason, except under
``CI=true``, where such a skip is turned into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

OUR_PROCESSES = (b"controllers.domain_app", b"controllers.inspector", b"agents.agent", b"attacks.agent",
                 b"attacks.traffic", b"sdfl.launcher", b"mininet:", b"Tunnel=Ethernet")
"""Command lines of the testbed's processes (forked agents carry their launcher's; a cluster
run's ssh tunnels)."""


def testbed_processes() -> list[int]:
    """PIDs of controller, agent and Mininet host processes."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(marker in cmdline for marker in OUR_PROCESSES):
                pids.append(int(entry.name))
    return pids


def leftovers() -> dict:
    from sdfl import records

    return {
        "bridges": [b for b in records.ovs_bridges() if records.BRIDGE_NAME.match(b)],
        "interfaces": [i for i in records.root_interfaces() if records.is_testbed_interface(i)],
        "processes": testbed_processes(),
        "records": sorted(p.name for p in records.STATE_DIR.glob("*.json")),
    }


NOTHING_LEFT = {"bridges": [], "interfaces": [], "processes": [], "records": []}


def _missing_for_mininet() -> str | None:
    if os.geteuid() != 0:
        return "needs root (Mininet creates namespaces and OVS bridges)"
    if shutil.which("ovs-vsctl") is None:
        return "Open vSwitch is not installed (run scripts/install.sh)"
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode != 0:
        return "Open vSwitch is not running (run scripts/install.sh)"
    try:
        import mininet  # noqa: F401
    except ImportError:
        return "Mininet is not importable (run scripts/install.sh)"
    return None


CONTROLLERS = {"os-ken": ("os-ken", None), "ryu": ("ryu", None), "os-ken-4": ("os-ken", "osken4")}
"""Each controller framework and interpreter CI runs the controller tests under (README)."""


@pytest.fixture
def controller(request):
    """The :class:`controllers.launch.ControllerRuntime` named by the test's ``controller``
    parameter (default os-ken); one that is not installed skips, and fails under CI=true."""
    from controllers.launch import OS_KEN_4_PYTHON, ControllerRuntime, ControllerUnavailable

    name = getattr(request, "param", "os-ken")
    request.node.user_properties.append(("controller", name))
    framework, venv = CONTROLLERS[name]
    try:
        return ControllerRuntime.probe(framework, OS_KEN_4_PYTHON if venv else None)
    except ControllerUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"controller test cannot run under CI=true: {error}")
        pytest.skip(str(error))


@pytest.fixture
def ssh_loopback() -> str:
    """``127.0.0.1``, once root on this machine reaches itself there over ssh by key: the second
    "server" of cluster tests (scripts/install.sh --cluster); skips without, fails under CI=true."""
    reason = None
    if os.geteuid() != 0:
        reason = "needs root"
    elif shutil.which("ssh") is None:
        reason = "no ssh client (scripts/install.sh --cluster)"
    elif subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "root@127.0.0.1", "true"],
                        capture_output=True).returncode != 0:
        reason = "root cannot ssh to 127.0.0.1 by key (scripts/install.sh --cluster sets that up)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cluster test cannot run under CI=true: {reason}")
        pytest.skip(reason)
    return "127.0.0.1"


@pytest.fixture(autouse=True)
def _mininet_tier(request):
    if request.node.get_closest_marker("mininet") is None:
        yield
        return
    reason = _missing_for_mininet()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"integration test cannot run under CI=true: {reason}")
        pytest.skip(reason)
    assert leftovers() == NOTHING_LEFT, "a previous test or run left the machine dirty"
    yield
    left = leftovers()
    if left != NOTHING_LEFT:
        from sdfl import records

        records.clean(include_live=True)
    assert left == NOTHING_LEFT, "this test left the machine dirty"


class ScratchNetwork:
    """The veths and namespaces a root test builds by hand: one of the same name left by a killed
    test is removed before, and each after the test (deleting a veth deletes its peer)."""

    def __init__(self) -> None:
        self.claimed: list[tuple[list[str], list[str]]] = []

    @staticmethod
    def _remove(links, namespaces) -> None:
        for name in links:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        for name in namespaces:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def claim(self, links=(), namespaces=()) -> None:
        self._remove(links, namespaces)
        self.claimed.append((list(links), list(namespaces)))

    def host(self, namespace: str, outside: str, inside: str, outside_ip: str, inside_ip: str) -> list[str]:
        """A namespace joined to the root one by the veth ``outside`` - ``inside`` on a /30, up;
        returns the prefix that runs ``ip`` in it."""
        self.claim(links=[outside], namespaces=[namespace])
        ip = ["ip", "netns", "exec", namespace, "ip"]
        for command in [["ip", "netns", "add", namespace],
                        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
                        ["ip", "link", "set", inside, "netns", namespace],
                        ["ip", "addr", "add", f"{outside_ip}/30", "dev", outside], ["ip", "link", "set", outside, "up"],
                        ip + ["addr", "add", f"{inside_ip}/30", "dev", inside], ip + ["link", "set", inside, "up"],
                        ip + ["link", "set", "lo", "up"]]:
            subprocess.run(command, check=True, capture_output=True)
        return ip

    def remove_all(self) -> None:
        for links, namespaces in self.claimed:
            self._remove(links, namespaces)


@pytest.fixture
def scratch_network():
    network = ScratchNetwork()
    yield network
    network.remove_all()


def pytest_terminal_summary(terminalreporter):
    """Each controller framework's tests, named with their outcome: what CI shows of them."""
    lines = []
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            controller = dict(getattr(report, "user_properties", ())).get("controller")
            if controller and (report.when == "call" or outcome != "passed"):
                lines.append(f"{controller:9s} {outcome.upper():7s} {report.nodeid}")
    if lines:
        terminalreporter.section("controller tests by framework")
        for line in sorted(lines):
            terminalreporter.write_line(line)

"""Test tiers: unit and simulation tests run anywhere; ``mininet`` tests need root and OVS.

Where root or Open vSwitch is missing the ``mininet`` tier skips with the reason, except under
``CI=true``, where such a skip is turned into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


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


@pytest.fixture(autouse=True)
def _mininet_tier(request):
    if request.node.get_closest_marker("mininet") is None:
        return
    reason = _missing_for_mininet()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"integration test cannot run under CI=true: {reason}")
    pytest.skip(reason)

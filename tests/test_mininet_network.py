"""The real stack: Mininet + OVS + one controller process per domain (os-ken, or Ryu where named)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import NOTHING_LEFT, leftovers
from sdfl import records
from sdfl.emulation import Emulation, EmulationError
from common.jsonl import read_jsonl
from common.keys import write_run_keys
from sdfl.probes import iperf3, ping, ping_all
from topologies.builder import netem_available
from topologies.layout import make_layout

pytestmark = pytest.mark.mininet


def sdfl(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sdfl", *args], capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 300), **kwargs)


@pytest.mark.parametrize("domains, hosts, graph, controller", [
    (3, 3, "ring", "os-ken"), (3, 3, "ring", "ryu"), (3, 3, "ring", "os-ken-4"),
    (4, 2, "mesh", "os-ken"), (3, 2, "line", "os-ken")], indirect=["controller"])
def test_pingall_reaches_every_host_across_domains(tmp_path, domains, hosts, graph, controller):
    layout = make_layout(domains, hosts, graph)
    with Emulation(layout, tmp_path, controller=controller) as emulation:
        result = ping_all(emulation.net)
        assert (result.sent, result.received) == (domains * hosts * (domains * hosts - 1),) * 2
        first, last = layout.hosts[0], layout.hosts[-1]  # IP fragments are not admitted, on every framework
        assert ping(emulation.net.get(first.name), last.ip, count=2, size=3000).received == 0
        assert ping(emulation.net.get(first.name), last.ip, count=2, size=1400).received == 2
        assert emulation.dead_controllers() == {}
    for domain in range(1, domains + 1):  # each controller ran on the framework asked for, and only it
        log = emulation.log_path(domain).read_text()
        assert f"instantiating app {controller.framework.module}.controller.ofp_handler" in log


def test_counters_attribute_traffic_to_its_source_host_only(tmp_path):
    layout = make_layout(3, 2, "ring")
    with Emulation(layout, tmp_path, poll_interval=0.5) as emulation:
        result = ping(emulation.net.get("d1h1"), layout.host("d3h2").ip, count=5)
        assert result.received == 5
        counters = emulation.fresh_counters(since=time.time())
    by_host = {name: c for record in counters.values() for name, c in record["hosts"].items()}
    assert set(by_host) == {h.name for h in layout.hosts}
    for name in ("d1h1", "d3h2"):
        assert by_host[name]["packets"] >= 5 and by_host[name]["bytes"] >= 5 * 98, name
    assert by_host["d1h1"]["flows_total"] >= 1 and by_host["d1h1"]["reply_packets"] == 0  # it asked
    assert by_host["d3h2"]["reply_packets"] >= 5 and by_host["d3h2"]["flows_total"] == 0  # it only answered
    for name in set(by_host) - {"d1h1", "d3h2"}:
        assert (by_host[name]["packets"], by_host[name]["bytes"]) == (0, 0), name


def test_iperf3_between_domains_reports_throughput(tmp_path):
    layout = make_layout(3, 1, "line")
    with Emulation(layout, tmp_path) as emulation:
        report = iperf3(emulation.net.get("d1h1"), emulation.net.get("d3h1"), seconds=2)
    assert report["bytes"] > 0 and report["mbit_s"] > 0
    print(f"iperf3 d1h1 -> d3h1 (2 border links, 100 Mbit/s shaping): {report['mbit_s']:.1f} Mbit/s")


def _until_every_domain_logs(emulation, kind: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    domains = sorted(emulation.controllers)
    while not all(any(r.get("type") == kind for r in read_jsonl(emulation.events_path(d))) for d in domains):
        assert time.monotonic() < deadline, f"not every domain logged {kind}"
        time.sleep(0.2)


def test_a_cut_border_link_is_routed_around_on_a_ring_and_used_again_once_restored(tmp_path):
    layout = make_layout(3, 1, "ring")
    write_run_keys(tmp_path, layout.domains, {})  # link notices travel authenticated
    with Emulation(layout, tmp_path, keyed=True) as emulation:
        source, target = emulation.net.get("d1h1"), layout.host("d2h1").ip
        assert ping(source, target).received == 3
        emulation.set_border_link(1, 2, up=False)
        _until_every_domain_logs(emulation, "link_down")
        settle = time.monotonic() + 5  # the rules follow the records by a few milliseconds
        while ping(source, target, count=1).received == 0:
            assert time.monotonic() < settle, "no path from d1 to d2 after the cut"
        assert ping(source, target, count=5).received == 5  # through domain 3 now
        emulation.set_border_link(1, 2, up=True)
        _until_every_domain_logs(emulation, "link_up")
        assert ping(source, target).received == 3
        changes = {d: [(r["type"], r["link"]) for r in read_jsonl(emulation.events_path(d))
                       if r.get("type") in ("link_down", "link_up")] for d in (1, 2, 3)}
    # One change each way everywhere, no flapping; d3 learnt both from notices.
    assert changes == {d: [("link_down", [1, 2]), ("link_up", [1, 2])] for d in (1, 2, 3)}


def test_a_dead_controller_is_named(tmp_path):
    layout = make_layout(2, 1, "line")
    with Emulation(layout, tmp_path) as emulation:
        emulation.controllers[2].kill()
        emulation.controllers[2].wait()
        with pytest.raises(EmulationError, match="controller of domain 2 exited"):
            emulation.fresh_counters(since=time.time())


def test_cli_pingall_then_nothing_is_left(tmp_path):
    result = sdfl("net", "--domains", "3", "--hosts", "3", "--domain-graph", "ring",
                  "--test", "pingall", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "pingall: 0% dropped (72/72 received)" in result.stdout
    assert (tmp_path / "net_summary.json").exists() and (tmp_path / "network.json").exists()


def start_held_network(tmp_path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "sdfl", "net", "--domains", "2", "--hosts", "2",
                             "--hold", "300", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("holding the network"):
            return proc
    raise AssertionError(f"network did not come up: {proc.stderr.read()}")


def test_ctrl_c_tears_everything_down(tmp_path):
    proc = start_held_network(tmp_path)
    try:
        assert leftovers()["bridges"] == ["d1s1", "d2s1"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sdfl_clean_repairs_a_killed_run(tmp_path):
    proc = start_held_network(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = leftovers()
    assert left["bridges"] == ["d1s1", "d2s1"] and left["records"]
    record = json.loads((records.STATE_DIR / left["records"][0]).read_text())
    # what clean stops if it outlived the run (the controllers end with their launcher)
    assert {"controller launcher", "controller d1", "controller d2"} <= {p["role"] for p in record["processes"]}
    result = sdfl("clean")
    assert result.returncode == 0, result.stderr
    assert "removed bridges: d1s1, d2s1" in result.stdout
    time.sleep(0.5)
    assert leftovers() == NOTHING_LEFT
    again = sdfl("net", "--domains", "2", "--hosts", "1", "--test", "pingall", "--out", str(tmp_path / "next"))
    assert again.returncode == 0, again.stderr


def test_link_delay_works_or_is_refused_clearly(tmp_path):
    result = sdfl("net", "--domains", "2", "--hosts", "1", "--border-delay", "20", "--test", "pingall",
                  "--out", str(tmp_path))
    if netem_available():
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2
        assert "no netem" in result.stderr and "delay 20.0 ms" in result.stderr


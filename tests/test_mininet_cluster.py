"""One experiment split over two servers with Mininet Cluster Edition, for real but on one machine.

What is simulated: the second "server" is this machine reached over ssh on the loopback
(127.0.0.1, root's key; scripts/install.sh --cluster). Mininet treats every server name but
``localhost`` as remote, so everything a remote server does goes over ssh as it would between
machines: domain 3's switch, hosts and Mininet shells are made through ssh, its controller,
inspection service and agent launcher run under ssh, and its two border links are ssh Ethernet
tunnels (``ssh -w``, a tap at each end) instead of veth pairs. What one machine cannot show: a
second kernel, a second Open vSwitch (both servers' switches live in this machine's
ovs-vswitchd), a real network between servers, and a file system shared over one (the run folder
is simply the same folder).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdfl.cluster import ClusterError, ClusterPlan, preflight
from tests.conftest import NOTHING_LEFT, leftovers

pytestmark = pytest.mark.mininet

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 12  # the flippers start in round 5 and are banned in rounds 6-7


def sdfl_run(out: Path, *settings: str, rounds: int = ROUNDS) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sdfl", "run", "scenarios/paper.toml", "--out", str(out),
                             "--set", f"dfl.rounds={rounds}", *(f"--set={s}" for s in settings)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finished(run: subprocess.Popen, out: Path) -> dict:
    output = run.communicate(timeout=900)[0]
    assert run.returncode == 0, output
    return json.loads((out / "summary.json").read_text())


def test_the_paper_run_split_over_two_servers_learns_bans_and_counts_as_on_one_machine(tmp_path, ssh_loopback):
    one = finished(sdfl_run(tmp_path / "one"), tmp_path / "one")
    split = finished(sdfl_run(tmp_path / "split", f'cluster.servers=["localhost", "{ssh_loopback}"]'),
                     tmp_path / "split")
    cluster = split["cluster"]
    assert cluster["placement"] == {"1": "localhost", "2": "localhost", "3": ssh_loopback}
    assert sorted(t.split()[0] for t in cluster["tunnels"]) == ["d1s1-eth23", "d2s1-eth23"]  # d3's borders
    assert sorted(cluster["remote_processes"][ssh_loopback]) == ["agent launcher", "controller launcher",
                                                                 "inspector launcher"]
    assert "cluster" not in one

    for summary in (one, split):
        assert summary["complete"] and summary["dfl"]["rounds_without_frames"] == []
        assert summary["detection"]["false_ban_rate"] == 0
    # One seed, one federation: the tunnels cost the learning and the detector nothing.
    assert split["dfl"]["honest_accuracy_final"] == pytest.approx(one["dfl"]["honest_accuracy_final"], abs=0.005)
    banned = {run: {b["node"]: b["round"] for b in summary["detection"]["bans"]} for run, summary in
              (("one", one), ("split", split))}
    assert set(banned["split"]) == set(banned["one"]) == set(split["attacks"]["malicious_nodes"])
    # a flipper's second strong verdict lands in round 6 or 7 on one machine as well (README)
    assert all(abs(banned["split"][node] - banned["one"][node]) <= 1 for node in banned["one"])
    # The border ports count what crossed them: the models that crossed, plus headers and acks,
    # as much through a tunnel as through a veth.
    for summary in (one, split):
        assert 1.0 < summary["network"]["border_bytes_over_model_bytes"] < 1.3
    assert split["network"]["border_bytes_over_model_bytes"] == pytest.approx(
        one["network"]["border_bytes_over_model_bytes"], rel=0.02)
    # Whether a flipper's round-5 frames cross before its ban lands is a race of milliseconds in
    # either run (1.6 % of the cross-domain model bytes seen in CI): the bytes agree within it.
    assert split["network"]["cross_domain_model_bytes"] == pytest.approx(
        one["network"]["cross_domain_model_bytes"], rel=0.03)
    assert set(split["network"]["border_ipv4_bytes"]) == {"d2->d1", "d3->d1", "d1->d2", "d3->d2", "d1->d3", "d2->d3"}


def test_a_killed_split_run_is_repaired_on_every_server_by_sdfl_clean(tmp_path, ssh_loopback):
    out = tmp_path / "killed"
    run = sdfl_run(out, f'cluster.servers=["localhost", "{ssh_loopback}"]', rounds=40)
    deadline = time.monotonic() + 300
    while not (out / "agent-d3h1.jsonl").exists() or not (out / "agent-d3h1.jsonl").read_text():
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read() if run.poll() else "no round"
        time.sleep(0.5)
    os.kill(run.pid, signal.SIGKILL)  # the runner only: no teardown of its own
    run.wait()
    record = json.loads(next(Path("/run/sdfl").glob("*.json")).read_text())
    assert [s["server"] for s in record["servers"]] == [ssh_loopback]
    remote = {p["role"]: p["pid"] for p in record["servers"][0]["processes"]}
    # d3's controller and inspection service are children of their launchers there, and end with them
    assert set(remote) == {"controller launcher", "inspector launcher", "agent launcher"}
    cleaned = subprocess.run([sys.executable, "-m", "sdfl", "clean"], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    # the launchers end when the killed runner's pipes close, their children with them: nothing left below
    time.sleep(1)  # hung-up remote shells exit
    assert leftovers() == NOTHING_LEFT


def test_a_server_that_refuses_the_key_or_cannot_be_reached_stops_the_run_before_it_starts(tmp_path, ssh_loopback):
    with pytest.raises(ClusterError, match="refused this machine's ssh key for sdfl-nobody"):
        preflight(ClusterPlan(("localhost", ssh_loopback), 3, user="sdfl-nobody"), tmp_path, [sys.executable])
    out = tmp_path / "unreachable"
    run = sdfl_run(out, 'cluster.servers=["localhost", "nowhere.invalid"]')
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 2
    assert "nowhere.invalid: unreachable over ssh" in output and "nothing was started" in output
    assert not (out / "network.json").exists()  # no network was described, let alone built

"""A run split over servers, without the servers: placement, the scenario section, the remote
process wrapper, border accounting and the preflight's errors."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from common.schema import ScenarioError
from sdfl.cluster import ClusterError, ClusterPlan, preflight, remote_script
from sdfl.results import border_summary
from sdfl.runner import run_plan
from sdfl.scenario import load_scenario
from topologies.layout import make_layout, next_hops


def test_domains_are_placed_in_contiguous_blocks_as_even_as_the_counts_allow():
    plan = ClusterPlan(("localhost", "10.0.0.2"), domains=3)
    assert plan.placement() == {"1": "localhost", "2": "localhost", "3": "10.0.0.2"}
    plan = ClusterPlan(("a", "b", "c"), domains=8)
    assert [plan.server_of(d) for d in range(1, 9)] == ["a", "a", "a", "b", "b", "b", "c", "c"]
    assert plan.domains_on("c") == [7, 8] and plan.remote_servers == ("b", "c")
    assert plan.mininet_name("a") == "localhost" and plan.mininet_name("b") == "b"  # Mininet ssh's to b
    assert plan.address("localhost") == "127.0.0.1" and plan.address("b") == "b"


@pytest.mark.parametrize("servers, domains, link, match", [
    (("localhost",), 3, "ssh", "at least two servers"),
    (("localhost", "b", "b"), 3, "ssh", "names a server twice"),
    (("localhost", "b", "c"), 2, "ssh", "a server would get none"),
    (("localhost", "b"), 2, "vxlan", "cluster.link must be one of ssh, gre"),
])
def test_a_plan_that_cannot_place_every_server_is_refused(servers, domains, link, match):
    with pytest.raises(ScenarioError, match=match):
        ClusterPlan(servers, domains, link)


def test_the_scenario_section_makes_the_plan_and_refuses_what_cannot_cross_servers():
    assert ClusterPlan.from_scenario(load_scenario(None)) is None  # no servers: one machine
    scenario = load_scenario(None, ['cluster.servers=["localhost", "127.0.0.1"]', "cluster.link=gre"])
    assert ClusterPlan.from_scenario(scenario) == ClusterPlan(("localhost", "127.0.0.1"), 3, "gre", "root")
    with pytest.raises(ScenarioError, match="cluster.servers must be a list of strings"):
        load_scenario(None, ["cluster.servers=[1, 2]"])
    with pytest.raises(ScenarioError, match="unknown key 'cluster.hosts'"):
        load_scenario(None, ["cluster.hosts=2"])
    flood = load_scenario(None, ['cluster.servers=["localhost", "b"]', "attacks.0.kind=udp-flood",
                                 "attacks.0.fraction=0.1"])
    with pytest.raises(ScenarioError, match="no \\[\\[faults\\]\\] and no traffic attacks"):
        run_plan(flood)


def test_the_remote_wrapper_reports_its_pid_then_becomes_the_command_with_its_environment():
    script = remote_script(["sh", "-c", 'echo "$GREETING"; echo $$'], {"GREETING": "a b 'c'"})
    lines = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    pid, start = lines[0].split()
    assert lines[1] == "a b 'c'"  # quoted through the shell intact
    assert lines[2] == pid and start.isdigit()  # exec: the reported pid is the command's


def test_border_bytes_are_set_beside_the_model_bytes_that_crossed_each_border():
    layout = make_layout(3, 1, "line")  # d1 - d2 - d3: d1's frames to d3 cross two borders
    counters = {1: {"transit": {"2": {"bytes": 110}}}, 2: {"transit": {"1": {"bytes": 220}, "3": {"bytes": 55}}},
                3: {"transit": {"2": {"bytes": 330}}}}
    records = [{"node": "d3h1", "round": 1, "bytes_received_from": {"d1h1": 50}},
               {"node": "d3h1", "round": 2, "bytes_received_from": {"d1h1": 100, "d2h1": 50}},  # cumulative
               {"node": "d1h1", "round": 2, "bytes_received_from": {"d2h1": 100}}]
    domain_of = {h.name: h.domain for h in layout.hosts}
    summary = border_summary(counters, records, domain_of, next_hops(list(layout.edges), 3))
    assert summary["border_ipv4_bytes"] == {"d2->d1": 110, "d1->d2": 220, "d3->d2": 55, "d2->d3": 330}
    assert summary["cross_domain_model_bytes"] == 100 * 2 + 50 + 100
    assert summary["border_bytes_over_model_bytes"] == pytest.approx(715 / 350)


def test_the_first_server_must_be_this_machine(tmp_path):
    with pytest.raises(ClusterError, match="cluster.servers\\[0\\] must be this machine"):
        preflight(ClusterPlan(("192.0.2.1", "localhost"), 2), tmp_path, [])


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_an_unreachable_server_is_named_before_anything_starts(tmp_path):
    with pytest.raises(ClusterError, match="nowhere.invalid: unreachable over ssh") as error:
        preflight(ClusterPlan(("localhost", "nowhere.invalid"), 2), tmp_path, [])
    assert "nothing was started" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # the shared-folder token is gone again

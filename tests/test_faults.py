"""[[faults]] entries: checked against the schema and the network, and the injector's bookkeeping."""

import pytest

from sdfl.faults import Fault, FaultInjector, resolve_faults
from sdfl.scenario import load_scenario
from common.schema import ScenarioError

NODES = ["d1h1", "d1h2", "d2h1", "d2h2", "d3h1", "d3h2"]
LINKS = [(1, 2), (1, 3), (2, 3)]


def faults_of(*overrides):
    scenario = load_scenario(None, ["dfl.rounds=10", *overrides])
    return resolve_faults(scenario["faults"], NODES, 3, LINKS, 10)


def test_every_kind_resolves_with_its_default_duration():
    faults = faults_of("faults.0.kind=kill-agent", "faults.0.target=d1h2", "faults.0.at_round=3",
                       "faults.1.kind=kill-controller", "faults.1.target=2",
                       "faults.2.kind=cut-link", "faults.2.target=d3-d1", "faults.2.duration=4",
                       "faults.3.kind=stall-agent", "faults.3.target=d2h1")
    assert faults == [Fault("kill-agent", "d1h2", 3, 2.0), Fault("kill-controller", "d2", 1, 5.0, domain=2),
                      Fault("cut-link", "d3-d1", 1, 4.0, link=(1, 3)), Fault("stall-agent", "d2h1", 1, 5.0)]


@pytest.mark.parametrize("overrides, message", [
    (["faults.0.kind=unplug"], "faults.0.kind must be one of kill-agent"),
    (["faults.0.kind=kill-agent"], "needs a target (a node, e.g. d1h2)"),
    (["faults.0.kind=kill-agent", "faults.0.target=d9h9"], "'d9h9' is not a node of this network"),
    (["faults.0.kind=kill-controller", "faults.0.target=d4"], "'d4' is not a domain of this network (d1 .. d3)"),
    (["faults.0.kind=cut-link", "faults.0.target=d1"], "not a border link; write it as d1-d2"),
    (["faults.0.kind=stall-agent", "faults.0.target=d1h1", "faults.0.at_round=11"], "beyond the run's 10 rounds"),
    (["faults.0.kind=stall-agent", "faults.0.target=d1h1", "faults.0.duration=0"], "duration must be > 0"),
    (["faults.0.kind=stall-agent", "faults.0.target=d1h1", "faults.0.when=3"], "unknown key 'when'"),
])
def test_bad_faults_are_named(overrides, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        faults_of(*overrides)


def test_a_cut_needs_an_existing_link():
    scenario = load_scenario(None, ["faults.0.kind=cut-link", "faults.0.target=d1-d3"])
    with pytest.raises(ScenarioError, match="no border link joins those domains"):
        resolve_faults(scenario["faults"], NODES, 3, [(1, 2), (2, 3)], 20)


class FakeProcess:
    def __init__(self):
        self.signals = []
        self.killed = False

    def kill(self):
        self.killed = True

    def wait(self):
        return -9

    def send_signal(self, sig):
        self.signals.append(sig)


class Events:
    def __init__(self):
        self.records = []

    def event(self, event_type, /, **fields):
        self.records.append((event_type, fields))


def test_a_killed_agent_is_restarted_after_its_duration_and_its_missed_rounds_are_not_awaited():
    agents = {"d1h1": FakeProcess()}
    restarted = []

    def start_agent(node):
        restarted.append(node)
        return FakeProcess()

    events = Events()
    injector = FaultInjector([Fault("kill-agent", "d1h1", 3, 0.0)], None, agents, start_agent, events)
    injector.reached(2)
    assert not agents["d1h1"].killed and injector.busy()
    first = agents["d1h1"]
    injector.reached(3)
    assert first.killed and injector.owns_exit("d1h1")
    injector.tick()  # duration 0: restart now
    assert restarted == ["d1h1"] and agents["d1h1"] is not first and not injector.busy()
    records = [{"node": "d1h1", "round": 2, "time": 0.0}, {"node": "d1h1", "round": 6, "time": 1e12}]
    assert injector.follow_rejoins(records) == ["d1h1"] and not injector.owns_exit("d1h1")
    assert [injector.skipped("d1h1", r, records) for r in (2, 3, 5, 6)] == [False, True, True, False]
    assert [kind for kind, _ in events.records] == ["fault", "fault_ended"]

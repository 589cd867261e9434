"""Run records and clean-up, on real processes (no network needed)."""

import subprocess
import time

import pytest

from sdfl import records


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "STATE_DIR", tmp_path)
    monkeypatch.setattr(records, "ovs_bridges", lambda: [])
    monkeypatch.setattr(records, "root_interfaces", lambda: [])
    return tmp_path


def sleeper():
    return subprocess.Popen(["sleep", "60"])


def test_clean_stops_the_processes_of_a_dead_run(state_dir):
    dead_runner = subprocess.Popen(["true"])
    dead_runner.wait()
    child = sleeper()
    record = records.RunRecord("run-a", "/tmp/x", records.TrackedProcess(dead_runner.pid, "gone", "runner"))
    record.add_process(child.pid, "controller d1")
    report = records.clean()
    assert child.wait(timeout=5) is not None
    assert report.runs == ["run-a"] and report.processes == [f"controller d1 (pid {child.pid})"]
    assert not list(state_dir.glob("*.json"))


def test_clean_leaves_a_live_run_alone_unless_asked(state_dir):
    runner, child = sleeper(), sleeper()
    try:
        record = records.RunRecord("run-b", "/tmp/y", records.track(runner.pid, "runner"))
        record.add_process(child.pid, "host d1h1")
        report = records.clean()
        assert report.live_runs == ["run-b"] and child.poll() is None
        report = records.clean(include_live=True)
        assert report.runs == ["run-b"] and child.wait(timeout=5) is not None
    finally:
        runner.kill()
        child.kill()


def test_a_recycled_pid_is_never_killed(state_dir):
    bystander = sleeper()
    try:
        record = records.RunRecord("run-c", "/tmp/z", records.TrackedProcess(1, "0", "runner"))
        record.processes.append(records.TrackedProcess(bystander.pid, "not-its-start-time", "host"))
        record.save()
        records.clean()
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_a_process_that_ignores_sigterm_is_killed_once_without_a_second_grace(state_dir):
    # An interactive shell ignores SIGTERM; once SIGKILLed it stays a zombie until its parent
    # (us) reaps it, and a zombie must count as gone, or every clean-up waits out the grace twice.
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
    time.sleep(0.2)
    tracked = records.track(stubborn.pid, "mininet shell c1")
    assert records.stop_processes([tracked], grace_s=0.3) == [tracked]
    time.sleep(0.1)
    assert not tracked.alive() and stubborn.poll() == -9
    assert records.stop_processes([tracked], grace_s=0.3) == []


def test_an_unreadable_record_is_reported_and_removed(state_dir):
    (state_dir / "broken.json").write_text("{not json")
    assert records.load_records() == []
    assert not (state_dir / "broken.json").exists()


def test_testbed_names_are_recognised_and_others_are_not():
    assert records.BRIDGE_NAME.match("d3s1") and not records.BRIDGE_NAME.match("br0")
    assert records.INTERFACE_NAME.match("d2s1-eth21") and records.INTERFACE_NAME.match("d1h4-eth0")
    assert not records.INTERFACE_NAME.match("eth0") and not records.INTERFACE_NAME.match("s1-eth1")


def test_runs_at_once_get_their_own_slots_and_a_killed_runs_slot_waits_for_clean(state_dir):
    from topologies.layout import make_layout

    runner = sleeper()
    dead_runner = subprocess.Popen(["true"])
    dead_runner.wait()
    try:
        first = records.RunRecord("run-1", "/tmp/1", records.track(runner.pid, "runner"))
        killed = records.RunRecord("run-2", "/tmp/2", records.TrackedProcess(dead_runner.pid, "gone", "runner"))
        assert (records.claim_slot(first), records.claim_slot(killed)) == (0, 1)
        third = records.RunRecord("run-3", "/tmp/3", records.track(runner.pid, "runner"))
        assert records.claim_slot(third) == 2  # what the killed run left may still carry slot 1's names
        records.clean()  # removes the killed run's record (and first's? no: its runner lives)
        fourth = records.RunRecord("run-4", "/tmp/4", records.track(runner.pid, "runner"))
        assert records.claim_slot(fourth) == 1
    finally:
        runner.kill()
    slotted = make_layout(2, 2, "line").in_slot(4)
    names = [s.name for s in slotted.switches] + slotted.interface_names() + slotted.monitor_interfaces()
    assert all(records.BRIDGE_NAME.match(n) or records.INTERFACE_NAME.match(n) for n in names)
    assert not set(names) & set(make_layout(2, 2, "line").interface_names())
    assert all(len(n) <= 15 for n in names)  # Linux interface names

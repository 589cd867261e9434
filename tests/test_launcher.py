"""The agent launcher: forks agents that share its imports, each into a network namespace."""

import os
import signal
import time

import pytest

from sdfl.launcher import ONE_THREAD_EACH, Launcher

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="entering a network namespace needs root")


def test_a_forked_agent_runs_the_agent_program_and_its_exit_code_comes_back(tmp_path):
    launcher = Launcher(tmp_path / "launcher.log")
    try:
        agent = launcher.start("d1h1", os.getpid(), "agents.agent", ["--node", "d1h1"], tmp_path / "agent.log")
        assert agent.wait(60) == 2  # argparse: the required options are missing
        assert "the following arguments are required: --network" in (tmp_path / "agent.log").read_text()
        byzantine = launcher.start("d1h2", os.getpid(), "attacks.agent", ["--help"], tmp_path / "byz.log")
        assert byzantine.wait(60) == 0 and "usage: attacks.agent" in (tmp_path / "byz.log").read_text()
    finally:
        launcher.close()


def test_a_killed_agent_reports_its_signal_and_closing_the_launcher_ends_the_rest(tmp_path):
    fifo = tmp_path / "network.json"
    os.mkfifo(fifo)  # reading the description blocks until someone writes: an agent that waits
    blocked = ["--network", str(fifo), "--config", "x", "--node", "d1h3", "--out", str(tmp_path)]
    launcher = Launcher(tmp_path / "launcher.log")
    killed = launcher.start("d1h3", os.getpid(), "agents.agent", blocked, tmp_path / "a.log")
    left = launcher.start("d1h4", os.getpid(), "agents.agent", blocked, tmp_path / "b.log")
    time.sleep(0.5)
    assert killed.poll() is None and left.poll() is None
    killed.kill()
    assert killed.wait(30) == -signal.SIGKILL
    launcher.close()
    assert launcher.process.returncode == 0 and left.wait(5) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(left.pid, 0)


def test_a_request_for_an_unknown_program_is_refused(tmp_path):
    launcher = Launcher(tmp_path / "launcher.log")
    try:
        with pytest.raises(ValueError, match="not 'rm'"):
            launcher.start("d1h1", os.getpid(), "rm", [], tmp_path / "x.log")
    finally:
        launcher.close()


def ignored_signals(pid: int) -> int:
    line = next(x for x in open(f"/proc/{pid}/status") if x.startswith("SigIgn:"))
    return int(line.split()[1], 16)


def test_a_forked_agent_ignores_sigpipe_as_a_standalone_interpreter_does(tmp_path):
    fifo = tmp_path / "network.json"
    os.mkfifo(fifo)  # the agent blocks reading it: alive to be looked at
    launcher = Launcher(tmp_path / "launcher.log")
    try:
        agent = launcher.start("d1h5", os.getpid(), "agents.agent",
                               ["--network", str(fifo), "--config", "x", "--node", "d1h5", "--out", str(tmp_path)],
                               tmp_path / "a.log")
        time.sleep(0.5)
        pipe = 1 << (signal.SIGPIPE - 1)
        # a send to a peer that hung up must raise in the transport, not kill the agent
        assert ignored_signals(agent.pid) & pipe and ignored_signals(os.getpid()) & pipe
    finally:
        launcher.close()


def test_forked_agents_share_the_launchers_session_and_so_its_share_of_the_cpu(tmp_path):
    """The autogroup scheduler weighs sessions equally: agents in sessions of their own would
    outweigh ovs-vswitchd and the controllers one to one each (the datapath stalled at 8 x 16)."""
    fifo = tmp_path / "network.json"
    os.mkfifo(fifo)  # the agents block reading it: alive to be looked at
    blocked = ["--network", str(fifo), "--config", "x", "--out", str(tmp_path)]
    launcher = Launcher(tmp_path / "launcher.log")
    try:
        agents = [launcher.start(n, os.getpid(), "agents.agent", [*blocked, "--node", n], tmp_path / f"{n}.log")
                  for n in ("d1h6", "d1h7")]
        time.sleep(0.5)
        assert {os.getsid(a.pid) for a in agents} == {os.getsid(launcher.process.pid)}
        assert {os.getpgid(a.pid) for a in agents} == {a.pid for a in agents}  # each its own group
    finally:
        launcher.close()


def test_a_launcher_on_another_server_forks_signals_and_ends_its_agents(tmp_path, ssh_loopback):
    """The launcher of a cluster run's other server, reached over ssh (here: the loopback): the
    protocol crosses ssh's streams, a kill goes through it, and closing it ends the agents left."""
    from sdfl.cluster import ClusterPlan

    plan = ClusterPlan(("localhost", ssh_loopback), domains=2)
    fifo = tmp_path / "network.json"
    os.mkfifo(fifo)
    blocked = ["--network", str(fifo), "--config", "x", "--node", "d2h1", "--out", str(tmp_path)]
    launcher = Launcher(tmp_path / "launcher.log", plan=plan, server=ssh_loopback)
    assert launcher.remote and launcher.remote_pid[0] != launcher.process.pid  # the remote one, not ssh
    killed = launcher.start("d2h1", os.getpid(), "agents.agent", blocked, tmp_path / "a.log")
    left = launcher.start("d2h2", os.getpid(), "agents.agent", blocked, tmp_path / "b.log")
    time.sleep(0.5)
    killed.kill()
    assert killed.wait(30) == -signal.SIGKILL and left.poll() is None
    launcher.close()
    assert left.wait(10) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(launcher.remote_pid[0], 0)


def test_a_terminated_launcher_ends_its_agents(tmp_path):
    """sdfl clean stops a killed run's launcher on another server with SIGTERM: its agents go too."""
    fifo = tmp_path / "network.json"
    os.mkfifo(fifo)
    blocked = ["--network", str(fifo), "--config", "x", "--node", "d1h1", "--out", str(tmp_path)]
    launcher = Launcher(tmp_path / "launcher.log")
    agent = launcher.start("d1h1", os.getpid(), "agents.agent", blocked, tmp_path / "a.log")
    time.sleep(0.5)
    launcher.process.terminate()
    launcher.process.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(agent.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"agent {agent.pid} outlived its terminated launcher")
    launcher.close()


def test_a_controller_forked_from_the_controller_launcher_loads_the_framework_with_its_own_environment(tmp_path):
    """The controllers' launcher imports the domain logic but not the framework: each child runs the
    manager (which patches sockets green first) with its domain's variables from the request."""
    from controllers.launch import controller_environment

    launcher = Launcher(tmp_path / "launcher.log", role="controller", env=controller_environment({}))
    try:
        with pytest.raises(ValueError, match="the controller launcher runs controllers.manager, not 'agents.agent'"):
            launcher.start("d1h1", None, "agents.agent", [], tmp_path / "x.log")
        missing = tmp_path / "no-such-network.json"
        controller = launcher.start("controller d3", None, "controllers.manager",
                                    ["os_ken", "--ofp-tcp-listen-port", "0", "controllers.domain_app"],
                                    tmp_path / "controller.log",
                                    env={"SDFL_NETWORK": str(missing), "SDFL_DOMAIN": "3",
                                         "SDFL_EVENTS": str(tmp_path / "events.jsonl")})
        assert controller.wait(60) != 0
        assert str(missing) in (tmp_path / "controller.log").read_text()  # the app read the request's variable
    finally:
        launcher.close()


def test_a_request_whose_environment_is_not_strings_is_refused_without_a_fork(capsys):
    from sdfl.launcher import _launch

    children = {}
    _launch(b'{"node": "controller d1", "netns_pid": null, "program": "controllers.manager", "argv": [], '
            b'"log": "/dev/null", "env": {"SDFL_DOMAIN": 1}}', {"controllers.manager": None}, children)
    assert children == {} and '"refused": "controller d1"' in capsys.readouterr().out



@pytest.mark.parametrize("role, program, argv", [
    ("agent", "agents.agent", ["--config", "x", "--node", "d1h1"]),
    ("inspector", "controllers.inspector", ["--domain", "1", "--keys", "x", "--bounds", "{}"]),
])
def test_what_a_launcher_forks_loads_the_numerical_libraries_with_one_thread_each(tmp_path, role, program, argv):
    """A pool's worker spins on a core after each call it shared (numpy's OpenBLAS keeps one per
    core, started again in a forked child at its first large product): among dozens of processes
    on two cores that spinning is all waste. The libraries read their variables as they load, in
    the launcher, whose environment every child keeps."""
    fifo = tmp_path / "network.json"
    os.mkfifo(fifo)  # the child blocks reading it: alive to be looked at
    launcher = Launcher(tmp_path / "launcher.log", role=role)
    try:
        child = launcher.start("d1h1", os.getpid(), program, [*argv, "--network", str(fifo), "--out", str(tmp_path)],
                               tmp_path / "child.log")
        time.sleep(0.5)
        assert child.poll() is None
        environment = dict(v.split("=", 1) for v in open(f"/proc/{child.pid}/environ").read().split("\0") if "=" in v)
        assert {k: environment.get(k) for k in ONE_THREAD_EACH} == ONE_THREAD_EACH
    finally:
        launcher.close()

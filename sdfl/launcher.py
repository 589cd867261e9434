"""One process that pays a role's imports once and forks every process of that role (a zygote).

An agent that imports torch, numpy and scikit-learn itself costs about 270 MB and seconds of CPU;
forked from a process that imported them, it shares those pages with every other agent (copy on
write) and starts at once. Each child is still its own process in its own Mininet host: it starts
a process group of its own, enters the host's network namespace (``setns`` on ``/proc/<pid>/ns/net``,
through libc: Python 3.11 has no ``os.setns``) before it opens a socket, writes its output to its
own log, and runs the same ``main`` as ``python -m agents.agent`` or ``python -m attacks.agent``,
which stay the entry points for real hosts.

Controllers are forked the same way by a launcher of their own (``--controllers``), in the
controllers' interpreter: it imports the domain logic, numpy, river's detectors and cryptography
(1.4 of a controller's 1.9 s of start-up CPU) but not the framework, whose manager patches sockets
green before it loads anything (:mod:`controllers.manager`); each child stays in the root
namespace and runs that manager with its domain's environment. The domains' inspection services
too (``--inspectors``, in the testbed's interpreter): numpy and the aggregation rules they replay
cost each 0.27 s of CPU to import, paid once instead of once per domain.

The launcher is single-threaded (forking a threaded process copies its locks mid-use). Protocol,
JSON lines: the runner writes ``{"node", "netns_pid", "program", "argv", "log"}`` (and for a
controller ``"env"``; ``netns_pid`` null: the launcher's namespace) on its stdin; it
answers ``{"started": node, "pid": pid}`` or ``{"refused": node, "why": ...}``, and, when a child
ends, ``{"exited": node, "pid": pid, "code": code}`` (negative: killed by that signal). The runner
signals a child with ``{"signal": number, "pid": pid}`` (the launcher may be on another server:
a cluster run's runner reaches its launchers over ssh). When its stdin closes (the runner is done
or gone) or it gets SIGTERM, it kills the children left and exits.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from sdfl.cluster import ClusterPlan, read_remote_pid, remote_environment, remote_script

CLONE_NEWNET = 0x40000000
AGENT_PROGRAMS = ("agents.agent", "attacks.agent")
CONTROLLER_PROGRAMS = ("controllers.manager",)
INSPECTOR_PROGRAMS = ("controllers.inspector",)


def enter_network_namespace(pid: int) -> None:
    """Move this process into the network namespace of process ``pid`` (a Mininet host's shell)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into the network namespace of pid {pid}: {os.strerror(error)}")
    finally:
        os.close(fd)


def _agent_programs(config: Path | None) -> dict:
    """Every program's ``main(argv)``, imported before the first fork, with what they load (and
    the run's dataset and shards, when ``config`` names its dfl.json)."""
    import importlib

    import torch

    from agents import agent
    from agents.model import warm_up
    from attacks import agent as byzantine

    importlib.import_module("sklearn.datasets")  # the digits loader, shared by every child
    torch.set_num_threads(1)
    warm_up()
    if config is not None:
        from common.runconfig import RunConfig

        agent.federation_data(RunConfig.from_json(config.read_text()))
    return {"agents.agent": agent.main, "attacks.agent": byzantine.byzantine_main}


def _controller_programs() -> dict:
    """The controller manager, with what the domain app loads beside its framework imported."""
    import importlib

    from controllers import manager

    for module in ("controllers.domain", "river.anomaly", "cryptography.hazmat.primitives.asymmetric.ed25519"):
        importlib.import_module(module)
    return {"controllers.manager": manager.main}


def _inspector_programs() -> dict:
    """The inspection service, with the rules it replays and the features it measures imported."""
    from controllers import inspector

    import agents.aggregation  # noqa: F401 (imported by the service on its first report)
    import controllers.features  # noqa: F401
    import numpy.ma  # noqa: F401 (numpy's median loads it on first use: 10 % of a 3 x 4 service's CPU)
    return {"controllers.inspector": inspector.main}


ROLES = {"agent": AGENT_PROGRAMS, "controller": CONTROLLER_PROGRAMS, "inspector": INSPECTOR_PROGRAMS}
"""What each kind of launcher forks; a controller or inspector launcher is started with
``--controllers`` or ``--inspectors``, an agent launcher with the run's dfl.json."""
ONE_THREAD_EACH = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The numerical libraries' thread pools, off in every launcher and so in every process it forks
(they read these as they load). Dozens of processes already share the cores, and a pool's worker
spins on a core for a while after each call it helped with: numpy's OpenBLAS spread a dot product of
77,000 weights over a second thread whose spinning cost 1.1 s of CPU in 200 calls against 0.09 s
single-threaded, and a 3 x 4 run with a 1,024-unit hidden layer spent 9.8 s in its inspection services
with the pools, 2.0 s without (the agents 11.0 and 7.9 s)."""


def _child(request: dict, program) -> int:
    # A process group, not a session: the kernel's autogroup scheduler gives every session an
    # equal share of the CPU, so 128 agents in sessions of their own outweighed ovs-vswitchd
    # (one session, whatever its nice) 128 to 1, and the datapath and the controllers stalled for
    # seconds under load. In the launcher's session a role's children share one session's weight.
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # As the interpreter starts a standalone agent: a send to a peer that hung up is an
    # exception the transport handles, not a signal that kills the agent (SIG_DFL did, at 8 x 16).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if request["netns_pid"] is not None:
        enter_network_namespace(request["netns_pid"])
    os.environ.update(request.get("env") or {})
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, 1 << 16)  # nothing of the launcher's: its pipes belong to the runner
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    return program(request["argv"])


def _answer(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(programs: dict) -> int:
    # What is imported now stays shared: the collector never walks (so never writes) those
    # objects again, and a page only a write would copy stays one page for all the children.
    gc.freeze()
    children: dict[int, str] = {}

    def end(*_):
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        os._exit(1)

    signal.signal(signal.SIGTERM, end)
    buffer = b""
    stdin = sys.stdin.fileno()
    open_ = True
    while open_ or children:
        readable, _, _ = select.select([stdin] if open_ else [], [], [], 0.1)
        if readable:
            chunk = os.read(stdin, 1 << 16)
            if not chunk:
                open_ = False
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                _launch(line, programs, children)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            node = children.pop(pid, None)
            if node is not None:
                _answer({"exited": node, "pid": pid, "code": os.waitstatus_to_exitcode(status)})
    return 0


def _launch(line: bytes, programs: dict, children: dict[int, str]) -> None:
    try:
        request = json.loads(line)
    except ValueError as error:
        _answer({"refused": None, "why": f"not JSON: {error}"})
        return
    if isinstance(request, dict) and "signal" in request:
        if request.get("pid") in children and isinstance(request["signal"], int):
            os.kill(request["pid"], request["signal"])  # only its own children, alive (not yet reaped)
        return
    node = request.get("node") if isinstance(request, dict) else None
    env = request.get("env") if isinstance(request, dict) else None
    if not isinstance(node, str) or request.get("program") not in programs or not isinstance(
            request.get("netns_pid"), (int, type(None))) or not isinstance(request.get("argv"), list) or not (
            env is None or isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        _answer({"refused": node, "why": f"not a launch request: {line[:200]!r}"})
        return
    program = programs[request["program"]]
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = _child(request, program)
        except SystemExit as error:  # argparse's errors, as the standalone program exits
            code = error.code if isinstance(error.code, int) else int(error.code is not None)
        except BaseException:  # the child's last word goes to its log
            traceback.print_exc()
        finally:
            import logging

            logging.shutdown()
            os._exit(code if isinstance(code, int) else 1)
    children[pid] = node
    _answer({"started": node, "pid": pid})


class LaunchedProcess:
    """A forked agent or controller as the runner handles it: the part of ``subprocess.Popen`` it
    uses. Signals go through its launcher, which may be on another server."""

    def __init__(self, node: str, pid: int, launcher: Launcher) -> None:
        self.node, self.pid, self.launcher = node, pid, launcher
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"launched {self.node}", timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            self.launcher.request({"signal": int(sig), "pid": self.pid})

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class Launcher:
    """The runner's end: starts the launcher process, here or on ``server`` of a cluster ``plan``
    (over ssh, the protocol on its streams), and asks it for processes of its ``role`` (a key of
    :data:`ROLES`; controllers in ``python``, the controllers' interpreter, with ``env``)."""

    def __init__(self, log: Path, config: Path | None = None, start_timeout_s: float = 120.0,
                 plan: ClusterPlan | None = None, server: str | None = None, *, role: str = "agent",
                 python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self.log = open(log, "ab")
        env = {**(os.environ if env is None else env), **ONE_THREAD_EACH}
        self.role = role
        self.programs = ROLES[role]
        command = [python, "-m", "sdfl.launcher", *([f"--{role}s"] if role != "agent" else []),
                   *([str(config)] if config else [])]
        self.remote = plan is not None and not plan.is_local(server)
        if self.remote:
            command = plan.ssh(server, remote_script(command, remote_environment(env)))
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        start_new_session=True, env=None if self.remote else env)
        # On another server: its pid and start time there, for the run record
        self.remote_pid = (read_remote_pid(self.process.stdout, server, f"the {self.role} launcher", log)
                           if self.remote else None)
        self.start_timeout_s = start_timeout_s
        self.children: dict[int, LaunchedProcess] = {}
        self._replies: dict[str, dict] = {}
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self._lock:
                if "exited" in message:
                    self.children[message["pid"]]._exited(message["code"])
                elif "started" in message:
                    child = self.children[message["pid"]] = LaunchedProcess(message["started"], message["pid"], self)
                    self._replies[child.node] = child
                else:
                    self._replies[str(message["refused"])] = RuntimeError(message["why"])
                self._lock.notify_all()
        with self._lock:  # the launcher is gone: so are its children
            for child in self.children.values():
                if child.returncode is None:
                    child._exited(-signal.SIGKILL)
            self._lock.notify_all()

    def start(self, node: str, netns_pid: int | None, program: str, argv: list[str], log: Path,
              env: dict[str, str] | None = None) -> LaunchedProcess:
        """Fork ``node``'s ``program`` into the network namespace of ``netns_pid`` (None: the
        launcher's), its environment updated with ``env``."""
        if program not in self.programs:
            raise ValueError(f"the {self.role} launcher runs {', '.join(self.programs)}, not {program!r}")
        request = {"node": node, "netns_pid": netns_pid, "program": program, "argv": argv, "log": str(log),
                   **({"env": env} if env else {})}
        with self._lock:
            self._replies.pop(node, None)
            self.request(request)
            deadline = time.monotonic() + self.start_timeout_s
            while node not in self._replies:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {self.role} launcher did not start {node}; see {self.log.name}")
                self._lock.wait(0.1)
            reply = self._replies.pop(node)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def request(self, message: dict) -> None:
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):  # the launcher is gone (or closed): so are its children
            pass

    def close(self) -> None:
        """No more children: the launcher kills those left and exits."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m sdfl.launcher [--controllers | --inspectors | DFL_CONFIG]``: the agents'
    launcher (with the run's dfl.json, its data set and shards loaded too), the controllers' or
    the inspection services'."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--controllers"]:
        return serve(_controller_programs())
    if args[:1] == ["--inspectors"]:
        return serve(_inspector_programs())
    return serve(_agent_programs(Path(args[0]) if args else None))


if __name__ == "__main__":
    sys.exit(main())

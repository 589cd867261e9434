"""One experiment over several servers: which domain runs where, and the ssh that reaches them.

A scenario's ``[cluster]`` section lists ``servers``. The first is the machine the run starts on;
every other one is reached over ssh as ``user`` with a key (BatchMode: never a password prompt),
whatever its address, so ssh to the loopback makes a second server on one machine (the CI test).
Placement is by domain, an administrative unit: its switch, hosts, agents, controller and
inspection service share a server, in contiguous blocks as even as the counts allow. Mininet
Cluster Edition builds the network (:mod:`topologies.cluster`); the processes of a remote
domain are started here, over ssh.

Every server must see the run folder at the same path (a shared file system: NFS, the Vagrant
VMs' ``/vagrant``): the processes write their records there, and the runner and the agents'
start barrier read them while the run goes on, so results land in the run folder of the machine
that started it. :func:`preflight` checks all of it, and says what is missing, before anything
starts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from common.schema import ScenarioError

REPO = Path(__file__).resolve().parent.parent
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=accept-new",
               "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3")
LINKS = ("ssh", "gre")


class ClusterError(RuntimeError):
    """A server cannot take part in the run; the message names it and what to do."""


@dataclass(frozen=True)
class ClusterPlan:
    """Where each domain runs, and how the servers are reached and joined."""

    servers: tuple[str, ...]
    domains: int
    link: str = "ssh"
    user: str = "root"

    def __post_init__(self) -> None:
        if len(self.servers) < 2:
            raise ScenarioError("cluster.servers needs at least two servers (the first is this machine); "
                                "leave it empty to run on one machine")
        if len(set(self.servers)) != len(self.servers):
            raise ScenarioError(f"cluster.servers names a server twice: {list(self.servers)}")
        if len(self.servers) > self.domains:
            raise ScenarioError(f"cluster.servers lists {len(self.servers)} servers for {self.domains} domains: "
                                "placement is by domain, so a server would get none")
        if self.link not in LINKS:
            raise ScenarioError(f"cluster.link must be one of {', '.join(LINKS)}, not {self.link!r}")

    @classmethod
    def from_scenario(cls, scenario: dict) -> ClusterPlan | None:
        """The scenario's plan, or None when it runs on one machine."""
        section = scenario["cluster"]
        if not section["servers"]:
            return None
        return cls(tuple(section["servers"]), scenario["network"]["domains"], section["link"], section["user"])

    def server_of(self, domain: int) -> str:
        return self.servers[(domain - 1) * len(self.servers) // self.domains]

    def domains_on(self, server: str) -> list[int]:
        return [d for d in range(1, self.domains + 1) if self.server_of(d) == server]

    def is_local(self, server: str) -> bool:
        return server == self.servers[0]

    @property
    def remote_servers(self) -> tuple[str, ...]:
        return self.servers[1:]

    def mininet_name(self, server: str) -> str:
        """Mininet Cluster Edition's name: ``localhost`` is the one server it does not ssh to."""
        return "localhost" if self.is_local(server) else server

    def address(self, server: str) -> str:
        """Where the server's controllers listen: its switches and the other domains reach them there."""
        return "127.0.0.1" if server == "localhost" else server

    def placement(self) -> dict[str, str]:
        return {str(d): self.server_of(d) for d in range(1, self.domains + 1)}

    def ssh(self, server: str, command: str) -> list[str]:
        return ["ssh", *SSH_OPTIONS, f"{self.user}@{server}", command]

    def run(self, server: str, argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
        """``argv`` on ``server`` (here when it is this machine), output captured, not checked."""
        command = argv if self.is_local(server) else self.ssh(server, shlex.join(argv))
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def remote_script(argv: list[str], env: dict[str, str]) -> str:
    """A shell line that reports its pid and start time on a line, then becomes ``argv`` (same
    pid) in this repository's folder, its streams ssh's."""
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (f"echo $$ $(cut -d' ' -f22 /proc/$$/stat) && cd {shlex.quote(str(REPO))} && "
            f"exec env {assignments} {shlex.join(argv)}")


def read_remote_pid(stdout, server: str, what: str, log: Path) -> tuple[int, str]:
    """The pid and start time :func:`remote_script` reports first."""
    words = stdout.readline().split()
    if len(words) != 2 or not words[0].isdigit():
        raise ClusterError(f"could not start {what} on server {server}; see {log}")
    return int(words[0]), words[1].decode()


def remote_environment(env: dict[str, str]) -> dict[str, str]:
    """What a remote process needs of a local environment: what differs from this one's."""
    return {k: v for k, v in env.items() if os.environ.get(k) != v}


def _local_addresses() -> set[str]:
    result = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    return {word.split("/")[0] for line in result.stdout.splitlines() for word in line.split()[3:4]}


def preflight(plan: ClusterPlan, out_dir: Path, pythons: list[str]) -> None:
    """Every server reachable by key, with sudo, Mininet, a running Open vSwitch, this repository
    and the interpreters at the same paths, the run folder shared, and the tunnels' kernel
    support; else one :class:`ClusterError` listing every problem and its fix."""
    problems: list[str] = []
    first = plan.servers[0]
    if first != "localhost" and first not in _local_addresses():
        problems.append(f"{first}: cluster.servers[0] must be this machine (\"localhost\" or one of its addresses)")
    out_dir.mkdir(parents=True, exist_ok=True)
    token = f"cluster-check-{uuid.uuid4().hex}"
    (out_dir / token).write_text(token)
    try:
        for server in plan.remote_servers:
            problems += [f"{server}: {p}" for p in _check_server(plan, server, out_dir / token, pythons)]
        if plan.link == "gre" and not gre_available():
            problems.append(f"{first}: the kernel has no GRE (ip link add ... type gretap fails); "
                            "use cluster.link = \"ssh\"")
    finally:
        (out_dir / token).unlink(missing_ok=True)
    if problems:
        raise ClusterError("the cluster is not ready; nothing was started:\n  " + "\n  ".join(problems))


def _check_server(plan: ClusterPlan, server: str, token: Path, pythons: list[str]) -> list[str]:
    checks = {
        "sudo": "command -v sudo",
        "mnexec": "command -v mnexec",
        "ovs": "ovs-vsctl --timeout=5 show",
        **{f"python{i}": f"cd {shlex.quote(str(REPO))} && {shlex.quote(python)} -c 'import controllers, common'"
           for i, python in enumerate(pythons)},
        "shared": f"test \"$(cat {shlex.quote(str(token))})\" = {token.name}",
        "tun": "test -c /dev/net/tun",
    }
    if plan.link == "gre":
        checks["gre"] = ("ip link add sdflgreprobe type gretap local 127.0.0.1 remote 127.0.0.2 && "
                         "ip link del sdflgreprobe")
    script = "; ".join(f"if {command} >/dev/null 2>&1; then echo {name}=ok; else echo {name}=no; fi"
                       for name, command in checks.items())
    try:
        result = plan.run(server, ["sh", "-c", script])
    except subprocess.TimeoutExpired:
        return ["did not answer over ssh within 30 s"]
    if result.returncode == 255:
        said = result.stderr.strip().splitlines()[-1:] or ["no message"]
        if "Permission denied" in said[0]:
            return [f"refused this machine's ssh key for {plan.user} ({said[0]}): add the key "
                    f"(~/.ssh/id_*.pub; ssh-keygen makes one) to {server}'s ~{plan.user}/.ssh/authorized_keys"]
        return [f"unreachable over ssh: {said[0]}"]
    found = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    fixes = {
        "sudo": "no sudo (Mininet Cluster Edition runs its commands through it): apt-get install sudo",
        "mnexec": "no Mininet (mnexec): apt-get install mininet",
        "ovs": "Open vSwitch is not running: /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random",
        **{f"python{i}": f"no {python} that imports this repository at {REPO}: check the repository out at "
                         "the same path and run scripts/install.sh there" for i, python in enumerate(pythons)},
        "shared": f"does not see the run folder {token.parent}: it must be on a file system every server mounts "
                  "at the same path (NFS, the Vagrant VMs' /vagrant)",
        "tun": "no /dev/net/tun for the ssh tunnels: modprobe tun",
        "gre": "the kernel has no GRE (ip link add ... type gretap fails): use cluster.link = \"ssh\"",
    }
    return [fixes[name] for name in checks if found.get(name) != "ok"]


def gre_available() -> bool:
    """True when this kernel can make a gretap device (probed and removed at once)."""
    probe = subprocess.run(["ip", "link", "add", "sdflgreprobe", "type", "gretap", "local", "127.0.0.1",
                            "remote", "127.0.0.2"], capture_output=True)
    if probe.returncode != 0:
        return False
    subprocess.run(["ip", "link", "del", "sdflgreprobe"], capture_output=True)
    return True


def release_remote(user: str, server: str, processes: list[dict], bridges: list[str],
                   interfaces: list[str]) -> tuple[list[int], str | None]:
    """Undo a run's part on ``server``: its processes (pid and start time checked, so a recycled
    pid is never hit), bridges and interfaces. The pids it stopped, and why not all, if not."""
    lines = [f"p={p['pid']}; [ \"$(cut -d' ' -f22 /proc/$p/stat 2>/dev/null)\" = {shlex.quote(p['start'])} ] "
             f"&& kill -TERM -- $p && echo stopped $p" for p in processes]
    lines += ["sleep 1" if processes else "true"]
    lines += [f"p={p['pid']}; [ \"$(cut -d' ' -f22 /proc/$p/stat 2>/dev/null)\" = {shlex.quote(p['start'])} ] "
              f"&& kill -KILL -- $p" for p in processes]
    lines += [f"ovs-vsctl --timeout=5 --if-exists del-br {shlex.quote(b)}" for b in bridges]
    lines += [f"ip link del {shlex.quote(i)} 2>/dev/null" for i in interfaces]
    command = ["ssh", *SSH_OPTIONS, f"{user}@{server}", "; ".join(lines) + "; true"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return [], "did not answer within 60 s"
    stopped = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("stopped ")]
    return stopped, None if result.returncode == 0 else (result.stderr.strip() or "ssh failed")


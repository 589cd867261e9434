"""What each run created, on disk, so that ``sdfl clean`` can undo a run that was killed.

A run writes its record before it creates anything and updates it as processes start. The record
holds the run's *slot* (:func:`claim_slot`): the names and ports it creates carry it
(:mod:`topologies.layout`), so runs started at once never collide, and a killed run's slot stays
taken until ``sdfl clean`` has removed what it left. Clean-up
kills only processes a record names (checked against their start time, so a recycled PID is
never hit), deletes the record's bridges and interfaces, and then sweeps bridges and
interfaces that carry the testbed's own naming scheme and belong to no live run.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sdfl.cluster import release_remote
from topologies.layout import MAX_SLOTS, TUNNEL_TAP_BASE, TUNNEL_TAPS_PER_SLOT

LOG = logging.getLogger(__name__)

STATE_DIR = Path(os.environ.get("SDFL_STATE_DIR", "/run/sdfl"))
BRIDGE_NAME = re.compile(r"^(r\d+)?d\d+s\d+$")
INTERFACE_NAME = re.compile(r"^(r\d+)?d\d+[hs]\d+-eth\d+$")
TUNNEL_TAP = re.compile(r"^tap(\d+)$")


def is_testbed_interface(name: str) -> bool:
    """One of ours by its name: a link's end, or a tunnel tap not yet renamed (a failed tunnel)."""
    tap = TUNNEL_TAP.match(name)
    if tap:
        return TUNNEL_TAP_BASE <= int(tap.group(1)) < TUNNEL_TAP_BASE + MAX_SLOTS * TUNNEL_TAPS_PER_SLOT
    return bool(INTERFACE_NAME.match(name))


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone or a
    zombie (dead, only waiting for its parent to read its exit status: signals cannot reach it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields restart after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


@dataclass
class TrackedProcess:
    pid: int
    start: str
    role: str

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start


def track(pid: int, role: str) -> TrackedProcess:
    return TrackedProcess(pid, process_start_time(pid) or "", role)


@dataclass
class RunRecord:
    run_id: str
    out_dir: str
    runner: TrackedProcess
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    processes: list[TrackedProcess] = field(default_factory=list)
    slot: int = 0
    servers: list[dict] = field(default_factory=list)
    """Other servers of a cluster run: ``{server, user, bridges, interfaces, processes}``, the
    processes as ``{pid, start, role}`` on that server."""

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path)

    def add_process(self, pid: int, role: str) -> None:
        self.processes.append(track(pid, role))
        self.save()

    def add_server(self, server: str, user: str, bridges: list[str], interfaces: list[str]) -> None:
        self.servers.append({"server": server, "user": user, "bridges": bridges, "interfaces": interfaces,
                             "processes": []})
        self.save()

    def add_remote_process(self, server: str, pid: int, start: str, role: str) -> None:
        entry = next(s for s in self.servers if s["server"] == server)
        entry["processes"].append({"pid": pid, "start": start, "role": role})
        self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data = json.loads(path.read_text())
        return cls(
            run_id=data["run_id"],
            out_dir=data["out_dir"],
            runner=TrackedProcess(**data["runner"]),
            bridges=list(data["bridges"]),
            interfaces=list(data["interfaces"]),
            processes=[TrackedProcess(**p) for p in data["processes"]],
            slot=int(data.get("slot", 0)),
            servers=list(data.get("servers", [])),
        )


def load_records() -> list[RunRecord]:
    records = []
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            records.append(RunRecord.load(path))
        except (OSError, ValueError, KeyError, TypeError) as error:
            LOG.warning("unreadable run record %s (%s): removing it", path, error)
            path.unlink(missing_ok=True)
    return records


class NoFreeSlot(RuntimeError):
    pass


def claim_slot(record: RunRecord) -> int:
    """The lowest slot no other run record holds, saved in ``record`` under a lock, so two runs
    starting at once never get the same one."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "slots.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = {r.slot for r in load_records() if r.run_id != record.run_id}
        free = next((k for k in itertools.count() if k not in held), MAX_SLOTS)
        if free >= MAX_SLOTS:
            raise NoFreeSlot(f"all {MAX_SLOTS} run slots are held by run records in {STATE_DIR} "
                             "('sdfl clean' removes those of killed runs)")
        record.slot = free
        record.save()
    return free


def stop_processes(processes: list[TrackedProcess], grace_s: float = 3.0) -> list[TrackedProcess]:
    """SIGTERM, then SIGKILL after ``grace_s``, in reverse start order; returns those stopped."""
    alive = [p for p in reversed(processes) if p.alive()]
    for proc in alive:
        _signal(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.alive() for p in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in alive:
        if proc.alive():
            _signal(proc.pid, signal.SIGKILL)
    return alive


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def ovs_bridges() -> list[str]:
    result = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


def root_interfaces() -> list[str]:
    result = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    names = []
    for line in result.stdout.splitlines():
        parts = line.split(": ", 2)
        if len(parts) >= 2:
            names.append(parts[1].split("@", 1)[0])
    return names


def delete_bridge(name: str) -> None:
    subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", name], capture_output=True)


def delete_interface(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True)


@dataclass
class CleanReport:
    runs: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    live_runs: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.runs or self.processes or self.bridges or self.interfaces or self.resumed)


def release(record: RunRecord, report: CleanReport) -> None:
    """Undo one run: its processes, bridges and interfaces (on every server), then its record."""
    for proc in stop_processes(record.processes):
        report.processes.append(f"{proc.role} (pid {proc.pid})")
    for part in record.servers:
        stopped, problem = release_remote(part["user"], part["server"], part["processes"], part["bridges"],
                                          part["interfaces"])
        report.processes += [f"{p['role']} (pid {p['pid']} on {part['server']})" for p in part["processes"]
                             if p["pid"] in stopped]
        if problem:
            LOG.warning("could not clean server %s: %s (run 'sdfl clean' there)", part["server"], problem)
    present = set(ovs_bridges())
    for bridge in record.bridges:
        if bridge in present:
            delete_bridge(bridge)
            report.bridges.append(bridge)
    present = set(root_interfaces())
    for name in record.interfaces:
        if name in present:
            delete_interface(name)
            report.interfaces.append(name)
    record.remove()
    report.runs.append(record.run_id)


VSWITCHD_PIDFILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")


def vswitchd_pid() -> int:
    """The running ovs-vswitchd's pid (a stall fault stops and continues it)."""
    try:
        return int(VSWITCHD_PIDFILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        raise RuntimeError(f"ovs-vswitchd is not running (no pid in {VSWITCHD_PIDFILE})") from None


def _resume_stopped_vswitchd(report: CleanReport) -> None:
    """A run killed during a stall-vswitchd fault leaves it stopped: continue it."""
    try:
        pid = vswitchd_pid()
        stopped = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (RuntimeError, OSError, IndexError):
        return
    if stopped:
        os.kill(pid, signal.SIGCONT)
        report.resumed.append(f"ovs-vswitchd (pid {pid})")


def clean(include_live: bool = False) -> CleanReport:
    """Repair the machine after killed runs; live runs are left alone unless ``include_live``."""
    report = CleanReport()
    owned_bridges: set[str] = set()
    owned_interfaces: set[str] = set()
    for record in load_records():
        if record.runner.alive() and record.runner.pid != os.getpid() and not include_live:
            report.live_runs.append(record.run_id)
            owned_bridges.update(record.bridges)
            owned_interfaces.update(record.interfaces)
            continue
        release(record, report)
    for bridge in ovs_bridges():
        if BRIDGE_NAME.match(bridge) and bridge not in owned_bridges:
            delete_bridge(bridge)
            report.bridges.append(bridge)
    for name in root_interfaces():
        if is_testbed_interface(name) and name not in owned_interfaces:
            delete_interface(name)
            report.interfaces.append(name)
    if not report.live_runs:
        _resume_stopped_vswitchd(report)
    return report

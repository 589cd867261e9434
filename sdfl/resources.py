"""What a run costs the machine: CPU seconds and peak memory of its processes, by role.

A background thread samples (psutil) every process the run record names (agents, controllers,
inspection services, attackers, Mininet shells) and Open vSwitch's userspace datapath, once a
second. Peak memory is the largest sum of proportional set sizes (PSS: a page shared by n
processes, such as torch's libraries in every agent, counts 1/n in each) seen at one sample, so
it adds up to what the run really occupies; CPU is each
process's user + system time at its last sample (less what a process older than the run, such
as ovs-vswitchd, had used before), summed by role (a killed agent keeps what it used).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

OVS_PIDFILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")


def role_class(role: str) -> str:
    """``agent d1h2`` -> ``agent``; ``mininet shell c1`` -> ``mininet``."""
    return role.split()[0] if role else "other"


class ResourceSampler:
    def __init__(self, processes, interval_s: float = 1.0) -> None:
        """``processes()`` returns the run's current (pid, role) pairs."""
        import psutil

        self._psutil = psutil
        self.processes = processes
        self.interval_s = interval_s
        self._handles: dict[int, object] = {}
        self._cpu: dict[int, tuple[str, float]] = {}
        self._cpu_before: dict[int, float] = {}
        self._started = time.time()
        self.peak: dict[str, float] = {}
        self.peak_total = 0.0
        self.peak_machine_used = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resources", daemon=True)

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watched(self) -> list[tuple[int, str]]:
        watched = list(self.processes())
        try:
            watched.append((int(OVS_PIDFILE.read_text().strip()), "ovs-vswitchd"))
        except (OSError, ValueError):
            pass
        return watched

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        psutil = self._psutil
        pss_by_role: dict[str, float] = {}
        for pid, role in self._watched():
            try:
                handle = self._handles.get(pid) or self._handles.setdefault(pid, psutil.Process(pid))
                with handle.oneshot():
                    cpu = handle.cpu_times()
                    pss = handle.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            role = role_class(role)
            if pid not in self._cpu_before:  # what a process that predates the run (OVS) had already used
                self._cpu_before[pid] = (cpu.user + cpu.system) if handle.create_time() < self._started else 0.0
            self._cpu[pid] = (role, cpu.user + cpu.system - self._cpu_before[pid])
            pss_by_role[role] = pss_by_role.get(role, 0.0) + pss
        for role, pss in pss_by_role.items():
            self.peak[role] = max(self.peak.get(role, 0.0), pss)
        self.peak_total = max(self.peak_total, sum(pss_by_role.values()))
        self.peak_machine_used = max(self.peak_machine_used, float(psutil.virtual_memory().used))
        self.samples += 1

    def report(self) -> dict:
        cpu_by_role: dict[str, float] = {}
        for role, seconds in self._cpu.values():
            cpu_by_role[role] = cpu_by_role.get(role, 0.0) + seconds
        mb = 1024 * 1024
        return {
            "peak_pss_mb_total": round(self.peak_total / mb, 1),
            "peak_pss_mb_by_role": {r: round(v / mb, 1) for r, v in sorted(self.peak.items())},
            "cpu_s_by_role": {r: round(v, 2) for r, v in sorted(cpu_by_role.items())},
            "machine_peak_used_mb": round(self.peak_machine_used / mb, 1),
            "machine_memory_mb": round(self._psutil.virtual_memory().total / mb, 1),
            "cpu_cores": self._psutil.cpu_count(),
            "samples": self.samples,
        }

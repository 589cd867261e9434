"""Reachability and throughput checks run inside the emulated hosts (Mininet glue)."""

from __future__ import annotations

import subprocess

import json
import time
from dataclasses import dataclass

IPERF_PORT = 5201


@dataclass
class PingResult:
    sent: int
    received: int

    @property
    def dropped_pct(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0


def ping_all(net, timeout_s: int = 2) -> PingResult:
    """One ping from every host to every other host (Mininet's pingAll)."""
    hosts = len(net.hosts)
    sent = hosts * (hosts - 1)
    dropped_pct = net.pingAll(timeout=str(timeout_s))
    return PingResult(sent, sent - round(sent * dropped_pct / 100.0))


def ping(source, target_ip: str, count: int = 3, size: int = 56) -> PingResult:
    """``count`` echo requests of ``size`` bytes of data (beyond the MTU: IP fragments)."""
    output = source.cmd(f"ping -c{count} -i0.2 -W2 -s{size} {target_ip}")
    for line in output.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return PingResult(int(parts[0].split()[0]), int(parts[1].split()[0]))
    return PingResult(count, 0)


def iperf3(client, server, seconds: float = 3.0, attempts: int = 10) -> dict:
    """TCP throughput from ``client`` to ``server`` measured by iperf3 (its JSON summary)."""
    server_proc = server.popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT)])
    try:
        for _ in range(attempts):
            output = client.cmd(f"iperf3 -c {server.IP()} -p {IPERF_PORT} -t {seconds} -J")
            try:
                report = json.loads(output)
            except json.JSONDecodeError:
                report = {"error": output.strip()[-200:]}
            if "error" not in report:
                received = report["end"]["sum_received"]
                return {
                    "client": client.name,
                    "server": server.name,
                    "seconds": received["seconds"],
                    "bytes": received["bytes"],
                    "mbit_s": received["bits_per_second"] / 1e6,
                    "retransmits": report["end"]["sum_sent"].get("retransmits"),
                }
            time.sleep(0.3)
        raise RuntimeError(f"iperf3 {client.name} -> {server.name} failed: {report['error']}")
    finally:
        if server_proc.poll() is None:
            server_proc.terminate()
        server_proc.wait()


def vswitchd_answers(timeout_s: int = 1) -> bool:
    """Whether ovs-vswitchd answers a control request within ``timeout_s`` (a stopped or hung
    one does not)."""
    try:
        return subprocess.run(["ovs-appctl", "-T", str(timeout_s), "-t", "ovs-vswitchd", "version"],
                              capture_output=True, timeout=timeout_s + 1).returncode == 0
    except subprocess.TimeoutExpired:
        return False

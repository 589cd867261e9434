"""Starts a declared multi-domain network in Mininet, with one remote controller per domain.

What the kernel offers is detected at run time: the kernel OVS datapath where the
``openvswitch`` module exists (userspace ``netdev`` datapath otherwise), and netem for link
delay and loss. A requested delay or loss without netem is an error, never silently dropped.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import uuid
from pathlib import Path

from common.description import NetworkDescription
from topologies.layout import NetworkLayout


class CapabilityError(RuntimeError):
    """The kernel cannot provide what the network asks for."""


def kernel_datapath_available() -> bool:
    """True when the openvswitch kernel module is loaded or can be loaded."""
    if os.path.isdir("/sys/module/openvswitch"):
        return True
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(["modprobe", "-q", "openvswitch"], capture_output=True)
    return probe.returncode == 0


def choose_datapath(requested: str = "auto") -> str:
    """``kernel`` or ``user``; ``auto`` picks the kernel datapath when it exists."""
    if requested not in ("auto", "kernel", "user"):
        raise ValueError(f"datapath must be auto, kernel or user, not {requested!r}")
    if requested == "auto":
        return "kernel" if kernel_datapath_available() else "user"
    if requested == "kernel" and not kernel_datapath_available():
        raise CapabilityError(
            "the kernel datapath was requested but this kernel has no openvswitch module; "
            "use --datapath user (or auto)"
        )
    return requested


@functools.lru_cache(maxsize=1)
def netem_available() -> bool:
    """True when a netem qdisc can be attached (probed in a throw-away network namespace)."""
    if os.path.isdir("/sys/module/sch_netem"):
        return True
    if os.geteuid() != 0:
        return False
    namespace = f"sdfl-probe-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", namespace], capture_output=True).returncode != 0:
        return False
    try:
        probe = subprocess.run(
            ["tc", "-n", namespace, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
        )
        return probe.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def require_link_features(layout: NetworkLayout) -> None:
    """Refuse delay/loss settings the kernel cannot emulate."""
    for label, params in (("host", layout.host_link), ("border", layout.border_link)):
        if params.wants_netem() and not netem_available():
            raise CapabilityError(
                f"{label} links ask for delay {params.delay_ms} ms / loss {params.loss_pct} % but this "
                "kernel has no netem (sch_netem); only bandwidth can be shaped here. Remove the "
                "delay/loss settings or run in the Vagrant VM, whose kernel has netem."
            )


QUEUE_PACKETS = 1000
"""Shaped links queue as much as Linux's default txqueuelen (1000 full-size frames)."""


def link_options(params, datapath: str) -> dict:
    """TCLink options: TBF shaping, and no TX checksum offload on the userspace datapath.

    Mininet's TBF default queue holds about 1.2 ms of traffic (ten frames at 100 Mbit/s), which
    drops every burst of a model exchange; the queue here holds ``QUEUE_PACKETS`` frames.
    The userspace datapath forwards frames as the veth hands them over; with TX checksum
    offload the receiver gets TCP segments with unfilled checksums and drops them.
    """
    options = params.as_tclink_options()
    if "bw" in options:
        options["use_tbf"] = True
        options["latency_ms"] = QUEUE_PACKETS * 1514 * 8 / (options["bw"] * 1000)
    if datapath == "user":
        options["txo"] = False
    return options


def build_network(layout: NetworkLayout, datapath: str, servers: dict[int, str] | None = None,
                  tunnel: str = "ssh", user: str = "root"):
    """Create (not start) the Mininet network with one RemoteController per domain.

    With ``servers`` (domain -> server, ``localhost`` for this machine), Mininet Cluster Edition
    places each domain's switch and hosts on its server, reached over ssh as ``user``; border
    links between servers become ``tunnel`` links (:mod:`topologies.cluster`).
    """
    from mininet.link import TCLink
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController

    from topologies.multidomain import MultiDomainTopo

    require_link_features(layout)
    topo = MultiDomainTopo(
        layout=layout,
        switch_options={"datapath": "user" if datapath == "user" else "kernel", "failMode": "secure"},
        host_link_options=link_options(layout.host_link, datapath),
        border_link_options=link_options(layout.border_link, datapath),
        placement={d: {"server": s, "user": user} for d, s in servers.items()} if servers else None,
    )
    class ListeningController(RemoteController):
        """A controller already seen listening (the emulation waits for its port). Mininet's own
        check pipes the controller's binary OpenFlow HELLO through telnet into its UTF-8 reader,
        which on a busy machine now and then raised UnicodeDecodeError and failed the run, and it
        showed the controller a phantom switch."""

        def checkListening(self):
            pass

        def stop(self, *args, **kwargs):
            """End the node's shell, which RemoteController.stop leaves running (an interactive
            bash ignores SIGTERM: the run's clean-up then waited out its kill grace for it)."""
            self.terminate()

    if servers:
        from mininet.examples.cluster import MininetCluster, RemoteHost, RemoteOVSSwitch

        from topologies.cluster import ShapedGRELink, ShapedSSHLink

        link = ShapedSSHLink.for_slot(layout.slot) if tunnel == "ssh" else ShapedGRELink
        net = MininetCluster(topo=topo, servers=sorted(set(servers.values())), user=user, precheck=False,
                             host=RemoteHost, switch=RemoteOVSSwitch, link=link, controller=None,
                             autoSetMacs=False, build=False, waitConnected=False)
    else:
        net = Mininet(topo=topo, switch=OVSSwitch, link=TCLink, controller=None,
                      autoSetMacs=False, build=False, waitConnected=False)
    for domain in range(1, layout.domains + 1):
        net.addController(f"c{domain}", controller=ListeningController,
                          ip=layout.controller_address(domain), port=layout.controller_port(domain))
    net.build()
    for host in net.hosts:
        host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    return net


def start_switches(net, layout: NetworkLayout) -> None:
    """Connect each domain's switches to that domain's controller only."""
    controllers = {int(c.name[1:]): c for c in net.controllers}
    switches = [net.get(spec.name) for spec in layout.switches]
    for spec, switch in zip(layout.switches, switches):
        switch.start([controllers[spec.domain]])
    # Mininet builds OVS switches in batch mode: start() only queued the ovs-vsctl commands.
    batch_classes = {type(s) for s in switches if getattr(s, "batch", False)}
    for switch_class in batch_classes:
        switch_class.batchStartup([s for s in switches if type(s) is switch_class])


def _run_here(domain: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


MIRROR_GRO_FLUSH_NS = 2_000_000
"""How long the inspection port's receiving end may hold a stream's segments for the kernel to
coalesce them (GRO) before the inspection reads them: a model frame arrives in two or three reads
instead of one a segment. Only the mirror's copy waits; the agents' packets do not."""


def coalescing_commands(interface: str) -> list[list[str]]:
    """Let the kernel coalesce the TCP segments ``interface`` receives (veth GRO, held up to
    :data:`MIRROR_GRO_FLUSH_NS`). GRO merges only in-order segments of one connection whose
    checksums verify, as the receiver's TCP takes them; any other segment reaches the inspection
    on its own, so what the assembler compares (insertion) is unchanged."""
    return [["ethtool", "-K", interface, "gro", "on"],
            ["sh", "-c", f"echo {MIRROR_GRO_FLUSH_NS} > /sys/class/net/{interface}/gro_flush_timeout"]]


def coalescing_available() -> bool:
    """True when a veth here takes :func:`coalescing_commands` (probed on a throw-away pair)."""
    if os.geteuid() != 0:
        return False
    probe = f"sdflp{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "link", "add", probe, "type", "veth", "peer", "name", f"{probe}p"],
                      capture_output=True).returncode != 0:
        return False
    try:
        return all(subprocess.run(command, capture_output=True).returncode == 0
                   for command in coalescing_commands(f"{probe}p"))
    finally:
        subprocess.run(["ip", "link", "del", probe], capture_output=True)


DATAPATH_SEND_BUFFER = 16 * 1024 * 1024
"""The send buffer ovs-vswitchd's userspace datapath needs. It sends every packet to a kernel
interface through one packet socket, whose buffer is ``net.core.wmem_default`` when it opens it
(212,992 bytes on Debian): a burst larger than that fails to send and the packet is lost without a
count. A host's segment is resent by its TCP; the inspection port's copy never is. A 3 x 4 run
with a 1,024-unit hidden layer (300 KB frames) lost bytes of 187 mirrored streams at 212,992 bytes,
7 at 4 MiB, none at 16 MiB. paper.toml's 19 KB frames lost none at 3 x 4 either way; at 8 x 12
with 16 MiB one run skipped 3 gaps among 19,282 frames read."""


def datapath_send_buffer() -> int:
    """The send buffer of ovs-vswitchd's sending packet socket (``ss``: the one bound to no
    protocol), or, before it has opened it, what it would get (``net.core.wmem_default``)."""
    listing = subprocess.run(["ss", "-0", "-m", "-p"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        found = re.search(r"\[0\]:\*.*\"ovs-vswitchd\".*\btb(\d+)", line)
        if found:
            return int(found.group(1))
    return int(Path("/proc/sys/net/core/wmem_default").read_text())


def attach_monitors(description: NetworkDescription, run=_run_here) -> list[str]:
    """Give each domain's edge switch its inspection port: a veth whose switch end is
    ``monitor.port`` and whose other end stays in the root namespace for the inspector
    (``run(domain, argv)`` runs a command where the domain's switch is). Returns what the kernel
    could not do that the inspection does without (segments read one by one)."""
    missing = []
    for domain in description.domains:
        monitor = domain.monitor
        inside, outside = monitor.switch_interface, monitor.interface
        commands = [
            ["ip", "link", "add", inside, "type", "veth", "peer", "name", outside],
            ["sysctl", "-qw", f"net.ipv6.conf.{outside}.disable_ipv6=1"],
            ["ethtool", "-K", inside, "tx", "off"],
            ["ip", "link", "set", inside, "up"],
            ["ip", "link", "set", outside, "up"],
            ["ovs-vsctl", "add-port", monitor.switch, inside, "--", "set", "Interface", inside,
             f"ofport_request={monitor.port}"],
        ]
        for command in commands:
            result = run(domain.id, command)
            if result.returncode != 0:
                raise CapabilityError(f"domain {domain.id}'s inspection port: {' '.join(command)} failed: "
                                      f"{result.stderr.strip()}")
        for command in coalescing_commands(outside):
            result = run(domain.id, command)
            if result.returncode != 0:
                missing.append(f"domain {domain.id}: no segment coalescing (veth GRO) on its inspection port "
                               f"({' '.join(command)}: {result.stderr.strip()}); the inspection reads each segment")
                break
    return missing

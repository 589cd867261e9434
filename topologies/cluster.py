"""Mininet Cluster Edition's tunnel links, shaped like every other link of the network.

Mininet's ssh tunnel (``RemoteSSHLink``) opens ``tap9`` at both ends (``ssh -w 9:9``) and renames
them: one kernel cannot hold two ``tap9``, so two "servers" on one machine (ssh to the loopback)
could not be joined, nor could two links be made at once. Here each end gets its own number,
from a range per run slot; the rest is Mininet's: the taps made by ``ip tuntap`` as the ssh user,
``ssh -o Tunnel=Ethernet -w N:M`` from the first server, moved into their nodes and renamed to the
link's interface names. The tunnel's interfaces are ``TCIntf``s as ``TCLink``'s are, so a border
link is shaped the same whether it crosses servers or not.
"""

from __future__ import annotations

import itertools

from mininet.examples.cluster import RemoteGRELink, RemoteSSHLink
from mininet.link import TCIntf
from mininet.util import decode

from topologies.layout import TUNNEL_TAP_BASE, TUNNEL_TAPS_PER_SLOT


class _Shaped:
    """``TCLink``'s constructor: both ends ``TCIntf`` with the same parameters."""

    def __init__(self, node1, node2, port1=None, port2=None, intfName1=None, intfName2=None,
                 addr1=None, addr2=None, **params):
        super().__init__(node1, node2, port1=port1, port2=port2, intfName1=intfName1, intfName2=intfName2,
                         cls1=TCIntf, cls2=TCIntf, addr1=addr1, addr2=addr2, params1=params, params2=params)


class ShapedGRELink(_Shaped, RemoteGRELink):
    """Mininet's GRE tunnel between servers (kernels with gretap), shaped."""


class ShapedSSHLink(_Shaped, RemoteSSHLink):
    """Mininet's ssh tunnel between servers with a tap number per end, shaped."""

    numbers = itertools.count(TUNNEL_TAP_BASE)

    @classmethod
    def for_slot(cls, slot: int) -> type:
        """The class whose taps are numbered in ``slot``'s range (two runs never share a number)."""
        return type(f"ShapedSSHLinkSlot{slot}", (cls,),
                    {"numbers": itertools.count(TUNNEL_TAP_BASE + slot * TUNNEL_TAPS_PER_SLOT)})

    def makeTunnel(self, node1, node2, intfname1, intfname2, addr1=None, addr2=None):
        if node2.server == "localhost":  # the tunnel's ssh runs from node1's server to node2's
            return self.makeTunnel(node2, node1, intfname2, intfname1, addr2, addr1)
        taps = {node1: next(self.numbers), node2: next(self.numbers)}
        for node, number in taps.items():
            said = node.rcmd(f"ip tuntap add dev tap{number} mode tap user {node.user}")
            if said:
                raise RuntimeError(f"could not make tap{number} on {node.server}: {said}")
        self.cmd = ["ssh", "-n", "-o", "BatchMode=yes", "-o", "Tunnel=Ethernet", "-w",
                    f"{taps[node1]}:{taps[node2]}", f"{node2.user}@{node2.serverIP}", "echo @"]
        tunnel = node1.rpopen(self.cmd, sudo=False)
        said = decode(tunnel.stdout.read(1))
        if said != "@":  # the remote end echoes '@' once the tunnel is up
            raise RuntimeError(f"the ssh tunnel {node1.server} -> {node2.server} did not come up "
                               f"({' '.join(self.cmd)}): {said + decode(tunnel.stdout.read())!r}; "
                               "the server's sshd needs 'PermitTunnel ethernet' (or yes)")
        for node, intf, addr in ((node1, intfname1, addr1), (node2, intfname2, addr2)):
            self.moveIntf(f"tap{taps[node]}", node)
            said = node.cmd(f"ip link set tap{taps[node]} name {intf}" + (f" address {addr}" if addr else ""))
            if said:
                raise RuntimeError(f"could not rename tap{taps[node]} to {intf} on {node.server}: {said}")
        return tunnel

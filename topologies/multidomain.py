"""Mininet Topo of D domains x H hosts joined by a domain graph.

The Topo only declares nodes and links from a :class:`~topologies.layout.NetworkLayout`;
:mod:`topologies.builder` starts it; ``sdfl net`` brings it up with its controllers.
"""

from __future__ import annotations


from mininet.topo import Topo

from topologies.layout import NetworkLayout


class MultiDomainTopo(Topo):
    """Declares one edge switch per domain, its hosts, and the border links.

    Ports are given explicitly so the numbers in the network description are the ones OVS uses.
    """

    def build(self, layout: NetworkLayout, switch_options: dict | None = None,
              host_link_options: dict | None = None, border_link_options: dict | None = None,
              placement: dict | None = None):
        """``placement``: for Mininet Cluster Edition, each domain's ``{"server": ..., "user": ...}``."""
        def where(domain: int) -> dict:
            return placement[domain] if placement else {}

        for switch in layout.switches:
            self.addSwitch(switch.name, dpid=switch.dpid_hex, protocols="OpenFlow13",
                           **(switch_options or {}), **where(switch.domain))
        for host in layout.hosts:
            self.addHost(host.name, ip=f"{host.ip}/{host.prefixlen}", mac=host.mac, **where(host.domain))
            self.addLink(host.name, host.switch, port1=0, port2=host.port,
                         **(host_link_options or {}))
        for border in layout.borders:
            if border.domain < border.neighbour:
                self.addLink(border.switch, border.peer_switch, port1=border.port,
                             port2=border.peer_port, **(border_link_options or {}))


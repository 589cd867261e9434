"""Pure description of a multi-domain network: names, addresses, ports and the domain graph.

Everything downstream (controllers, agents, runner) reads the JSON this module writes and
never imports Mininet, so the same controllers and agents can run against real hosts.

Conventions (deterministic, so a description can be checked by eye):

* domain ``d`` (1-8) has one edge switch ``d<d>s1`` with dpid ``d * 256 + 1``;
* a run in *slot* ``k`` > 0 (two runs at once on one machine share its Open vSwitch and root
  namespace) names its switches ``r<k>d<d>s1``, adds ``k << 16`` to their dpids and
  ``k * SLOT_PORT_STRIDE`` to its controllers' ports; hosts live in their own namespaces and
  keep their names and addresses;
* host ``d<d>h<h>`` (h = 1-16) has IPv4 ``10.<d>.0.<h>/8`` and MAC ``02:00:00:00:<d>:<h>``
  (hex, locally administered) and sits on switch port ``h``;
* the border link from domain ``d`` to neighbour domain ``e`` leaves ``d``'s switch on port
  ``BORDER_PORT_BASE + e``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from common.description import DESCRIPTION_VERSION, BorderLink, HostSpec, NetworkDescription, SwitchSpec

MAX_DOMAINS = 8
MAX_HOSTS = 16
BORDER_PORT_BASE = 20
MONITOR_PORT = 30
"""Edge-switch port of the domain's inspection service (a veth to the root namespace)."""
DEFAULT_CONTROLLER_PORT_BASE = 6653
SLOT_PORT_STRIDE = 300
"""A domain's controller, coordination and inspection ports lie 100 apart: a slot's span."""
MAX_SLOTS = 32
TUNNEL_TAP_BASE, TUNNEL_TAPS_PER_SLOT = 1000, 256
"""A cluster run's ssh tunnels are made on taps numbered from its slot's range
(:mod:`topologies.cluster`) and renamed to the border ports' names once up."""
DOMAIN_GRAPHS = ("line", "ring", "mesh")


class LayoutError(ValueError):
    """A network that cannot be laid out (out-of-range size, unknown graph kind)."""


def domain_graph_edges(kind: str, domains: int) -> list[tuple[int, int]]:
    """Undirected edges ``(a, b)`` with ``a < b`` between domain ids ``1..domains``.

    A ring of two domains is a single link (no parallel border links).
    """
    if kind not in DOMAIN_GRAPHS:
        raise LayoutError(f"unknown domain graph {kind!r}; choose one of {', '.join(DOMAIN_GRAPHS)}")
    ids = range(1, domains + 1)
    if kind == "mesh":
        return list(itertools.combinations(ids, 2))
    edges = [(d, d + 1) for d in range(1, domains)]
    if kind == "ring" and domains >= 3:
        edges.append((1, domains))
    return edges


def next_hops(edges: list[tuple[int, int]], domains: int, partial: bool = False) -> dict[int, dict[int, int]]:
    """For every domain, the neighbour to forward to for each other domain (with ``partial``,
    for each it can reach: a cut link may split a line).

    Breadth-first distances, then the neighbour closest to the destination with the lowest id
    on ties. Every hop strictly decreases the distance, so the routes are loop-free and all
    controllers agree on them without talking to each other.
    """
    adjacency: dict[int, set[int]] = {d: set() for d in range(1, domains + 1)}
    for a, b in edges:
        adjacency[a].add(b)
        adjacency[b].add(a)
    distance: dict[int, dict[int, int]] = {}
    for source in adjacency:
        seen = {source: 0}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            for neighbour in sorted(adjacency[node]):
                if neighbour not in seen:
                    seen[neighbour] = seen[node] + 1
                    queue.append(neighbour)
        distance[source] = seen
    routes: dict[int, dict[int, int]] = {}
    for domain in adjacency:
        routes[domain] = {}
        for target in adjacency:
            if target == domain:
                continue
            if target not in distance[domain]:
                if partial:
                    continue
                raise LayoutError(f"domain {target} is unreachable from domain {domain}")
            routes[domain][target] = min(
                adjacency[domain], key=lambda n: (distance[n][target], n)
            )
    return routes


@dataclass(frozen=True)
class LinkParams:
    """Traffic shaping for a class of links; ``None`` means unshaped."""

    bw_mbit: float | None = None
    delay_ms: float | None = None
    loss_pct: float | None = None

    def wants_netem(self) -> bool:
        return bool(self.delay_ms) or bool(self.loss_pct)

    def as_tclink_options(self) -> dict:
        options: dict = {}
        if self.bw_mbit:
            options["bw"] = self.bw_mbit
        if self.delay_ms:
            options["delay"] = f"{self.delay_ms}ms"
        if self.loss_pct:
            options["loss"] = self.loss_pct
        return options


@dataclass(frozen=True)
class NetworkLayout:
    """The declared network; build it with :func:`make_layout`."""

    domains: int
    hosts_per_domain: int
    domain_graph: str
    edges: tuple[tuple[int, int], ...]
    hosts: tuple[HostSpec, ...]
    switches: tuple[SwitchSpec, ...]
    borders: tuple[BorderLink, ...]
    controller_host: str = "127.0.0.1"
    controller_hosts: tuple[str, ...] = ()
    """Per domain, where its controller listens, when domains run on different servers."""
    controller_port_base: int = DEFAULT_CONTROLLER_PORT_BASE
    host_link: LinkParams = field(default_factory=LinkParams)
    border_link: LinkParams = field(default_factory=LinkParams)
    slot: int = 0

    def controller_address(self, domain: int) -> str:
        return self.controller_hosts[domain - 1] if self.controller_hosts else self.controller_host

    def on_servers(self, addresses: tuple[str, ...]) -> NetworkLayout:
        """The same network with domain ``d``'s controller listening at ``addresses[d - 1]``."""
        if len(addresses) != self.domains:
            raise LayoutError(f"{len(addresses)} controller addresses for {self.domains} domains")
        return dataclasses.replace(self, controller_hosts=tuple(addresses))

    def controller_port(self, domain: int) -> int:
        return self.controller_port_base + self.slot * SLOT_PORT_STRIDE + domain

    def in_slot(self, slot: int) -> NetworkLayout:
        """The same network under slot ``slot``'s switch names, dpids and ports."""
        return dataclasses.replace(
            make_layout(self.domains, self.hosts_per_domain, self.domain_graph, self.controller_port_base,
                        self.host_link, self.border_link, slot=slot),
            controller_host=self.controller_host, controller_hosts=self.controller_hosts)

    def switch_of(self, domain: int) -> str:
        return next(s.name for s in self.switches if s.domain == domain)

    def hosts_in(self, domain: int) -> list[HostSpec]:
        return [h for h in self.hosts if h.domain == domain]

    def host(self, name: str) -> HostSpec:
        for spec in self.hosts:
            if spec.name == name:
                return spec
        raise KeyError(f"no host named {name!r} in this network")

    def interface_names(self) -> list[str]:
        """Root-namespace interface names this network creates (switch side of every link)."""
        names = [f"{h.switch}-eth{h.port}" for h in self.hosts]
        names += [f"{b.switch}-eth{b.port}" for b in self.borders]
        return sorted(names)

    def monitor_interfaces(self) -> list[str]:
        """Switch-side names of the inspection veths (deleting one deletes its peer)."""
        return sorted(f"{s.name}-eth{MONITOR_PORT}" for s in self.switches)

    def to_description(self, datapath: str = "unknown", monitor: bool = False) -> NetworkDescription:
        """The description read by controllers, inspection services and agents.

        With ``monitor``, each domain has an inspection port: its edge switch mirrors the
        agents' model traffic to ``monitor.port``, read at ``monitor.interface``.
        """
        routes = next_hops(list(self.edges), self.domains)
        domains = []
        for d in range(1, self.domains + 1):
            domains.append(
                {
                    "id": d,
                    "controller": {"host": self.controller_address(d), "port": self.controller_port(d)},
                    # UDP: notices from the other domains' controllers, features from the
                    # domain's inspection service (both on the controllers' host).
                    "coordination": {"host": self.controller_address(d), "port": self.controller_port(d) + 100},
                    "inspection": {"host": self.controller_address(d), "port": self.controller_port(d) + 200},
                    "switches": [
                        {"name": s.name, "dpid": s.dpid, "dpid_hex": s.dpid_hex}
                        for s in self.switches
                        if s.domain == d
                    ],
                    "hosts": [h.name for h in self.hosts_in(d)],
                    "subnet": str(domain_subnet(d)),
                    "borders": [
                        {
                            "neighbour": b.neighbour,
                            "switch": b.switch,
                            "port": b.port,
                            "peer_switch": b.peer_switch,
                            "peer_port": b.peer_port,
                        }
                        for b in self.borders
                        if b.domain == d
                    ],
                    "next_hop": {str(t): n for t, n in sorted(routes[d].items())},
                }
            )
            if monitor:
                switch = self.switch_of(d)
                domains[-1]["monitor"] = {"switch": switch, "port": MONITOR_PORT,
                                          "switch_interface": f"{switch}-eth{MONITOR_PORT}",
                                          "interface": f"{switch}-mon"}
        return NetworkDescription.from_json({
            "version": DESCRIPTION_VERSION,
            "datapath": datapath,
            "domain_graph": {"kind": self.domain_graph, "edges": [list(e) for e in self.edges]},
            "links": {
                "host": self.host_link.__dict__,
                "border": self.border_link.__dict__,
            },
            "domains": domains,
            "hosts": [h.__dict__ for h in self.hosts],
        })


def domain_subnet(domain: int) -> ipaddress.IPv4Network:
    """Addresses of one domain: a /16 inside the flat 10.0.0.0/8 the hosts share."""
    return ipaddress.IPv4Network(f"10.{domain}.0.0/16")


def host_mac(domain: int, index: int) -> str:
    return f"02:00:00:00:{domain:02x}:{index:02x}"


def make_layout(
    domains: int,
    hosts_per_domain: int,
    domain_graph: str = "ring",
    controller_port_base: int = DEFAULT_CONTROLLER_PORT_BASE,
    host_link: LinkParams | None = None,
    border_link: LinkParams | None = None,
    slot: int = 0,
) -> NetworkLayout:
    """Declare ``domains`` x ``hosts_per_domain`` hosts joined by ``domain_graph`` (in ``slot``:
    see the module's conventions)."""
    if not 1 <= domains <= MAX_DOMAINS:
        raise LayoutError(f"domains must be between 1 and {MAX_DOMAINS}, got {domains}")
    if not 1 <= hosts_per_domain <= MAX_HOSTS:
        raise LayoutError(f"hosts per domain must be between 1 and {MAX_HOSTS}, got {hosts_per_domain}")
    if not 0 <= slot < MAX_SLOTS:
        raise LayoutError(f"slot must be between 0 and {MAX_SLOTS - 1}, got {slot}")
    if not 1 <= controller_port_base <= 65535 - (slot + 1) * SLOT_PORT_STRIDE:
        raise LayoutError(f"controller port base {controller_port_base} leaves no room for slot {slot}'s ports")
    edges = tuple(domain_graph_edges(domain_graph, domains))
    prefix = f"r{slot}" if slot else ""
    switches = tuple(SwitchSpec(f"{prefix}d{d}s1", d, (slot << 16) + d * 256 + 1) for d in range(1, domains + 1))
    switch = {spec.domain: spec.name for spec in switches}
    hosts = tuple(
        HostSpec(
            name=f"d{d}h{h}",
            domain=d,
            index=h,
            ip=f"10.{d}.0.{h}",
            prefixlen=8,
            mac=host_mac(d, h),
            switch=switch[d],
            port=h,
        )
        for d in range(1, domains + 1)
        for h in range(1, hosts_per_domain + 1)
    )
    borders = []
    for a, b in edges:
        borders.append(BorderLink(a, b, switch[a], BORDER_PORT_BASE + b, switch[b], BORDER_PORT_BASE + a))
        borders.append(BorderLink(b, a, switch[b], BORDER_PORT_BASE + a, switch[a], BORDER_PORT_BASE + b))
    return NetworkLayout(
        domains=domains,
        hosts_per_domain=hosts_per_domain,
        domain_graph=domain_graph,
        edges=edges,
        hosts=hosts,
        switches=switches,
        borders=tuple(sorted(borders, key=lambda b: (b.domain, b.neighbour))),
        controller_port_base=controller_port_base,
        host_link=host_link or LinkParams(),
        border_link=border_link or LinkParams(),
        slot=slot,
    )


def write_description(description: NetworkDescription, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(description.to_json(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path

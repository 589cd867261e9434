"""The network description every process reads (``network.json``), typed and checked once.

:mod:`topologies.layout` declares a network and writes its description; controllers, inspection
services, agents and the runner load it with :func:`load_description` and look hosts up by name,
address, switch port or notice key, and domains by id, instead of walking the JSON themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DESCRIPTION_VERSION = 1


class DescriptionError(ValueError):
    """A description that is not one this version wrote: the message names the field."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    domain: int
    index: int
    ip: str
    prefixlen: int
    mac: str
    switch: str
    port: int

    @property
    def key(self) -> int:
        """The host's number in ban notices and flow cookies: domain and index in 16 bits."""
        return (self.domain << 8) | self.index


@dataclass(frozen=True)
class SwitchSpec:
    name: str
    domain: int
    dpid: int

    @property
    def dpid_hex(self) -> str:
        return f"{self.dpid:016x}"


@dataclass(frozen=True)
class BorderLink:
    """One direction of an inter-domain link as seen from ``domain``."""

    domain: int
    neighbour: int
    switch: str
    port: int
    peer_switch: str
    peer_port: int


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True)
class Monitor:
    """Where a domain's edge switch mirrors the agents' traffic to its inspection service."""

    switch: str
    port: int
    switch_interface: str
    interface: str


@dataclass(frozen=True)
class DomainView:
    """One domain: its services' endpoints, switches, hosts, borders and routes."""

    id: int
    controller: Endpoint
    coordination: Endpoint  # UDP: notices from the other domains' controllers
    inspection: Endpoint  # UDP: reports from the domain's inspection service
    switches: tuple[SwitchSpec, ...]
    hosts: tuple[HostSpec, ...]
    subnet: str
    borders: tuple[BorderLink, ...]
    next_hop: dict[int, int]
    monitor: Monitor | None = None


@dataclass(frozen=True)
class NetworkDescription:
    version: int
    datapath: str
    domain_graph: str
    edges: tuple[tuple[int, int], ...]
    domains: tuple[DomainView, ...]
    hosts: tuple[HostSpec, ...]
    source: dict = field(repr=False, compare=False, default_factory=dict)
    """The JSON it was read from: written on unchanged."""

    def to_json(self) -> dict:
        return self.source

    def __post_init__(self) -> None:
        # Indexes built once: the controller looks hosts up on every packet-in and report.
        object.__setattr__(self, "_domains", {d.id: d for d in self.domains})
        object.__setattr__(self, "_by_name", {h.name: h for h in self.hosts})
        object.__setattr__(self, "_by_ip", {h.ip: h for h in self.hosts})
        object.__setattr__(self, "_by_key", {h.key: h for h in self.hosts})
        object.__setattr__(self, "_by_port", {(h.switch, h.port): h for h in self.hosts})

    def domain(self, domain_id: int) -> DomainView:
        try:
            return self._domains[domain_id]
        except KeyError:
            raise DescriptionError(f"domain {domain_id} is not in the network description") from None

    def host(self, name: str) -> HostSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise DescriptionError(f"host {name!r} is not in the network description") from None

    def has_host(self, name: str) -> bool:
        return name in self._by_name

    def host_at(self, ip: str) -> HostSpec | None:
        """The host with address ``ip``, or None (a stranger's address)."""
        return self._by_ip.get(ip)

    def host_with_key(self, key: int) -> HostSpec | None:
        return self._by_key.get(key)

    def host_on(self, switch: str, port: int) -> HostSpec | None:
        """The host plugged into ``port`` of ``switch``, or None (a border or an empty port)."""
        return self._by_port.get((switch, port))

    def hosts_in(self, domain_id: int) -> tuple[HostSpec, ...]:
        return self.domain(domain_id).hosts

    @classmethod
    def from_json(cls, fields: dict) -> NetworkDescription:
        """Parse ``network.json``'s content; a missing or mistyped field is a DescriptionError."""
        try:
            if fields["version"] != DESCRIPTION_VERSION:
                raise DescriptionError(f"version {fields['version']!r}, not {DESCRIPTION_VERSION}")
            hosts = tuple(HostSpec(**{k: _typed(h, k, t) for k, t in _HOST_FIELDS.items()}) for h in fields["hosts"])
            by_name = {h.name: h for h in hosts}
            domains = []
            for entry in fields["domains"]:
                d = _typed(entry, "id", int)
                monitor = entry.get("monitor")
                strangers = [name for name in entry["hosts"] if name not in by_name]
                if strangers:
                    raise DescriptionError(f"domain {d} lists host {strangers[0]!r}, which is not among the hosts")
                domains.append(DomainView(
                    id=d,
                    controller=_endpoint(entry["controller"]),
                    coordination=_endpoint(entry["coordination"]),
                    inspection=_endpoint(entry["inspection"]),
                    switches=tuple(SwitchSpec(_typed(s, "name", str), d, _typed(s, "dpid", int))
                                   for s in entry["switches"]),
                    hosts=tuple(by_name[name] for name in entry["hosts"]),
                    subnet=_typed(entry, "subnet", str),
                    borders=tuple(BorderLink(d, *(_typed(b, k, t) for k, t in _BORDER_FIELDS.items()))
                                  for b in entry["borders"]),
                    next_hop={int(target): int(hop) for target, hop in entry["next_hop"].items()},
                    monitor=Monitor(**monitor) if monitor else None,
                ))
            graph = fields["domain_graph"]
            return cls(fields["version"], str(fields["datapath"]), str(graph["kind"]),
                       tuple((int(a), int(b)) for a, b in graph["edges"]), tuple(domains), hosts, fields)
        except KeyError as error:
            raise DescriptionError(f"missing field {error.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            if isinstance(error, DescriptionError):
                raise
            raise DescriptionError(str(error)) from None


_HOST_FIELDS = {"name": str, "domain": int, "index": int, "ip": str, "prefixlen": int, "mac": str, "switch": str,
                "port": int}
_BORDER_FIELDS = {"neighbour": int, "switch": str, "port": int, "peer_switch": str, "peer_port": int}


def _typed(entry: dict, key: str, kind: type):
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DescriptionError(f"field {key!r} is {value!r}, not {kind.__name__}")
    return value


def _endpoint(entry: dict) -> Endpoint:
    return Endpoint(_typed(entry, "host", str), _typed(entry, "port", int))


def load_description(path: Path | str) -> NetworkDescription:
    """Read and check ``network.json``; errors name the file."""
    try:
        return NetworkDescription.from_json(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, DescriptionError) as error:
        raise DescriptionError(f"{path}: {error}") from None

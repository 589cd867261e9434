import json

import pytest

from topologies.layout import (
    BORDER_PORT_BASE,
    LayoutError,
    LinkParams,
    domain_graph_edges,
    make_layout,
    next_hops,
    write_description,
)


def test_domain_graph_edges_per_kind():
    assert domain_graph_edges("line", 4) == [(1, 2), (2, 3), (3, 4)]
    assert domain_graph_edges("ring", 4) == [(1, 2), (2, 3), (3, 4), (1, 4)]
    assert domain_graph_edges("ring", 2) == [(1, 2)]  # no parallel border links
    assert len(domain_graph_edges("mesh", 5)) == 10
    assert domain_graph_edges("mesh", 1) == []


@pytest.mark.parametrize("kind", ["line", "ring", "mesh"])
@pytest.mark.parametrize("domains", range(1, 9))
def test_next_hops_reach_every_domain_without_loops(kind, domains):
    edges = domain_graph_edges(kind, domains)
    neighbours = {d: set() for d in range(1, domains + 1)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    routes = next_hops(edges, domains)
    for source in range(1, domains + 1):
        for target in range(1, domains + 1):
            if source == target:
                continue
            path, here = [source], source
            while here != target:
                nxt = routes[here][target]
                assert nxt in neighbours[here]
                assert nxt not in path, f"loop {path + [nxt]}"
                path.append(nxt)
                here = nxt
            if kind == "mesh":
                assert len(path) == 2
            if kind == "ring":
                assert len(path) - 1 <= domains // 2


def test_names_addresses_ports_are_deterministic():
    layout = make_layout(3, 4, "ring")
    host = layout.host("d2h3")
    assert (host.ip, host.mac, host.switch, host.port) == ("10.2.0.3", "02:00:00:00:02:03", "d2s1", 3)
    assert [s.name for s in layout.switches] == ["d1s1", "d2s1", "d3s1"]
    assert layout.switches[1].dpid_hex == "0000000000000201"
    border = next(b for b in layout.borders if b.domain == 1 and b.neighbour == 3)
    assert (border.port, border.peer_switch, border.peer_port) == (BORDER_PORT_BASE + 3, "d3s1", BORDER_PORT_BASE + 1)
    assert layout.controller_port(2) == 6655
    assert make_layout(3, 4, "ring") == layout


def test_description_round_trips_through_json(tmp_path):
    layout = make_layout(3, 2, "line", border_link=LinkParams(bw_mbit=50))
    path = write_description(layout.to_description("user"), tmp_path / "network.json")
    description = json.loads(path.read_text())
    assert description["datapath"] == "user"
    assert [h["name"] for h in description["hosts"]] == ["d1h1", "d1h2", "d2h1", "d2h2", "d3h1", "d3h2"]
    d1 = description["domains"][0]
    assert d1["controller"] == {"host": "127.0.0.1", "port": 6654}
    assert d1["next_hop"] == {"2": 2, "3": 2}
    assert [b["neighbour"] for b in d1["borders"]] == [2]
    assert description["links"]["border"]["bw_mbit"] == 50


def test_interface_names_cover_every_switch_port():
    layout = make_layout(2, 2, "line")
    assert layout.interface_names() == ["d1s1-eth1", "d1s1-eth2", "d1s1-eth22", "d2s1-eth1", "d2s1-eth2", "d2s1-eth21"]


@pytest.mark.parametrize("args, message", [
    ((0, 2, "ring"), "domains must be between 1 and 8"),
    ((9, 2, "ring"), "domains must be between 1 and 8"),
    ((2, 17, "ring"), "hosts per domain must be between 1 and 16"),
    ((2, 2, "star"), "unknown domain graph 'star'"),
])
def test_bad_sizes_are_rejected_with_a_clear_message(args, message):
    with pytest.raises(LayoutError, match=message):
        make_layout(*args)


def test_netem_settings_are_marked():
    assert LinkParams(delay_ms=5).wants_netem()
    assert not LinkParams(bw_mbit=10).wants_netem()
    assert LinkParams(bw_mbit=10, delay_ms=2, loss_pct=1).as_tclink_options() == {"bw": 10, "delay": "2ms", "loss": 1}

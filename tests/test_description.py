"""The typed network description: what the layout writes is what every process loads, and a
description that is not one this version wrote is an error naming its field."""

import json

import pytest

from common.description import DescriptionError, NetworkDescription, load_description
from topologies.layout import make_layout, write_description


def test_a_written_description_loads_back_with_every_lookup(tmp_path):
    layout = make_layout(3, 4, "ring")
    path = write_description(layout.to_description("user", monitor=True), tmp_path / "network.json")
    description = load_description(path)
    assert [d.id for d in description.domains] == [1, 2, 3]
    assert description.host("d2h3").ip == "10.2.0.3" and description.host_at("10.2.0.3").name == "d2h3"
    assert description.host_at("10.9.9.9") is None
    assert description.host("d2h3").key == (2 << 8) | 3 and description.host_with_key((2 << 8) | 3).name == "d2h3"
    d2 = description.domain(2)
    assert [h.name for h in d2.hosts] == ["d2h1", "d2h2", "d2h3", "d2h4"] == [h.name for h in description.hosts_in(2)]
    assert d2.controller.address == ("127.0.0.1", layout.controller_port(2))
    assert {b.neighbour for b in d2.borders} == {1, 3} and d2.next_hop == {1: 1, 3: 3}
    assert d2.monitor.interface == "d2s1-mon" and d2.switches[0].dpid == 2 * 256 + 1
    assert description.edges == ((1, 2), (2, 3), (1, 3)) and description.datapath == "user"


def test_unknown_names_are_errors_naming_them():
    description = make_layout(1, 2, "line").to_description()
    with pytest.raises(DescriptionError, match="domain 4 is not"):
        description.domain(4)
    with pytest.raises(DescriptionError, match="host 'd1h9' is not"):
        description.host("d1h9")


@pytest.mark.parametrize("spoil, message", [
    (lambda d: d.pop("hosts"), "missing field 'hosts'"),
    (lambda d: d.update(version=2), "version 2, not 1"),
    (lambda d: d["hosts"][0].update(port="1"), "field 'port' is '1', not int"),
    (lambda d: d["domains"][0]["controller"].update(port=True), "field 'port' is True, not int"),
    (lambda d: d["domains"][0]["hosts"].append("d7h7"), "domain 1 lists host 'd7h7', which is not"),
])
def test_a_spoilt_description_is_a_clear_error(tmp_path, spoil, message):
    fields = json.loads(json.dumps(make_layout(1, 2, "line").to_description().to_json()))
    spoil(fields)
    with pytest.raises(DescriptionError, match=message):
        NetworkDescription.from_json(fields)
    path = tmp_path / "network.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(DescriptionError, match=f"{path}: .*{message[:12]}"):
        load_description(path)


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "network.json"
    path.write_text("{not json")
    with pytest.raises(DescriptionError, match="network.json: Expecting property name"):
        load_description(path)

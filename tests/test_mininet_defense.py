"""FU-HST's enforcement in the real stack: a ban notice crosses domains and becomes drop rules."""

from __future__ import annotations

import dataclasses
import json
import socket
import time

import pytest

from controllers.coordination import Evidence, MessageType, Notice, Stream, encode_notice
from controllers.defense import DefenseConfig
from sdfl.emulation import Emulation
from sdfl.jsonl import read_jsonl
from sdfl.probes import ping
from topologies.layout import make_layout

pytestmark = pytest.mark.mininet


def test_a_ban_notice_cuts_the_node_off_at_the_other_domains_border_and_nothing_else(tmp_path):
    layout = make_layout(2, 2, "line")
    defense = dataclasses.asdict(DefenseConfig())
    with Emulation(layout, tmp_path, poll_interval=0.5, watched_ports=(7000,), defense=defense) as emulation:
        net = emulation.net
        assert ping(net.get("d1h2"), layout.host("d2h1").ip).received == 3  # before: reachable
        description = json.loads(emulation.description_path.read_text())
        d2 = next(d for d in description["domains"] if d["id"] == 2)
        notice = encode_notice(Notice(MessageType.BAN, origin=1, seq=1, round=7,
                                      entries=(Evidence((1 << 8) | 2, Stream.UPDATE, 0.93, 2, 3),)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(notice, (d2["coordination"]["host"], d2["coordination"]["port"]))
        deadline = time.monotonic() + 10
        while not any(r.get("type") == "ban" for r in read_jsonl(emulation.events_path(2))):
            assert time.monotonic() < deadline, "domain 2 never acted on the ban notice"
            time.sleep(0.2)
        assert ping(net.get("d1h2"), layout.host("d2h1").ip, count=5).received == 0
        assert ping(net.get("d1h1"), layout.host("d2h1").ip).received == 3  # its neighbour is not hit
        assert ping(net.get("d1h2"), layout.host("d1h1").ip).received == 3  # home domain: no ban of its own
        counters = emulation.fresh_counters(since=time.time())
        inspector_alive = all(p.poll() is None for p in emulation.inspectors.values())
    [ban] = [r for r in read_jsonl(tmp_path / "controller-d2.jsonl") if r.get("type") == "ban"]
    assert (ban["node"], ban["origin"], ban["round"], ban["evidence"]) == ("d1h2", 1, 7, [2, 3])
    assert counters[2]["banned_transit"]["d1h2"] >= 5  # the drop rule counted what it stopped
    assert inspector_alive

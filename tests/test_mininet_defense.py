"""FU-HST's enforcement in the real stack: a signed ban decision crosses domains and becomes drop
rules; forged and replayed ones are rejected; a restarted controller keeps the ban."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controllers.coordination import Evidence, MessageType, Notice, Stream
from controllers.ledger import Ledger
from controllers.defense import DefenseConfig
from sdfl.emulation import Emulation
from common.jsonl import read_jsonl
from common.keys import SIGNING, controller_party, domain_public_keys, key_path, read_keys, write_run_keys
from sdfl.probes import ping
from sdfl.runner import frame_bounds
from sdfl.scenario import load_scenario
from topologies.layout import make_layout

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.mininet


def _wait_for(path, kind, count=1, timeout=10.0, message=""):
    deadline = time.monotonic() + timeout
    while len(found := [r for r in read_jsonl(path) if r.get("type") == kind]) < count:
        assert time.monotonic() < deadline, message or f"no {kind!r} record in {path.name}"
        time.sleep(0.2)
    return found


def _impersonate_switch(address, dpid: int) -> None:
    """Speak OpenFlow 1.3 as a switch claiming ``dpid`` would: HELLO, then a FEATURES_REPLY to the
    controller's FEATURES_REQUEST; then hang up (``!BBHI``: version, type, length, xid)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(struct.pack("!BBHI", 4, 0, 8, 1))
        buffer = b""
        while True:
            chunk = sock.recv(4096)
            assert chunk, "the controller hung up before asking for features"
            buffer += chunk
            while len(buffer) >= 8:
                _, kind, length, xid = struct.unpack_from("!BBHI", buffer)
                buffer = buffer[length:]
                if kind == 5:  # FEATURES_REQUEST
                    sock.sendall(struct.pack("!BBHIQIBB2xII", 4, 6, 32, xid, dpid, 0, 254, 0, 0, 0))
                    time.sleep(0.5)
                    return


@pytest.mark.parametrize("controller", ["os-ken", "ryu", "os-ken-4"], indirect=True)
def test_an_authentic_ban_notice_cuts_the_node_off_a_forged_or_replayed_one_does_not_and_a_restart_keeps_it(
        tmp_path, controller):
    layout = make_layout(2, 2, "line")
    write_run_keys(tmp_path, layout.domains, {})
    keys_of_d1 = read_keys(key_path(tmp_path, controller_party(1)))
    public = domain_public_keys(keys_of_d1)
    domain_1 = Ledger(1, keys_of_d1[SIGNING], public)  # we speak as domain 1's controller, with its key file
    impostor = Ledger(1, bytes(32), public)  # claims to be domain 1 without its key
    ban = Notice(MessageType.BAN, origin=1, seq=0, round=7,
                 entries=(Evidence((1 << 8) | 2, Stream.UPDATE, 0.93, 2, 3),))
    defense = DefenseConfig()
    events = tmp_path / "controller-d2.jsonl"
    with Emulation(layout, tmp_path, poll_interval=0.5, watched_ports=(7000,), defense=defense,
                   keyed=True, frame_bounds=frame_bounds(load_scenario(None)), controller=controller) as emulation:
        net = emulation.net
        assert ping(net.get("d1h2"), layout.host("d2h1").ip).received == 3  # before: reachable
        description = json.loads(emulation.description_path.read_text())
        d2 = next(d for d in description["domains"] if d["id"] == 2)
        address = (d2["coordination"]["host"], d2["coordination"]["port"])
        # A local process claims d2s1's dpid and hangs up: the real d2s1 must stay this domain's switch.
        _impersonate_switch((layout.controller_host, layout.controller_port(2)), layout.switches[1].dpid)
        [impersonation] = _wait_for(events, "switch_rejected")
        assert impersonation["why"] == "dpid already connected"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(impostor.decide(ban, time.time()).raw, address)
            [forged] = _wait_for(events, "notice_rejected")
            genuine = domain_1.decide(ban, time.time()).raw
            sock.sendto(genuine, address)
            _wait_for(events, "ban", message="domain 2 never acted on the authentic ban decision")
            sock.sendto(genuine, address)  # the same bytes again: a replay
            [replayed] = _wait_for(events, "notice_duplicate")
        assert "signature does not verify" in forged["why"] and "decision 1 of domain 1 is held" in replayed["why"]
        # A local user (uid nobody) forges inspection reports against d2h1 and garbles one.
        inspection = (d2["inspection"]["host"], d2["inspection"]["port"])
        forger = ("import socket, sys; from controllers.reports import InspectionReport, ReportChannel; "
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a = (sys.argv[1], int(sys.argv[2])); "
                  "r = InspectionReport(9, {}, {'d2h1': ['forged', 'forged']}); "
                  "[s.sendto(ReportChannel(bytes(32)).seal(r), a) for _ in range(3)]; s.sendto(b'{not json', a)")
        subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", forger, *map(str, inspection)],
                       check=True, cwd=str(ROOT), timeout=30)
        rejected = _wait_for(events, "report_rejected", count=4)
        assert all("forged or altered" in r["why"] for r in rejected)
        assert ping(net.get("d1h2"), layout.host("d2h1").ip, count=5).received == 0
        assert ping(net.get("d1h1"), layout.host("d2h1").ip).received == 3  # its neighbour is not hit
        assert ping(net.get("d1h2"), layout.host("d1h1").ip).received == 3  # home domain: no ban of its own
        assert ping(net.get("d1h1"), layout.host("d2h1").ip).received == 3  # the forged reports banned no one
        assert emulation.controllers[2].poll() is None
        counters = emulation.fresh_counters(since=time.time())
        inspector_alive = all(p.poll() is None for p in emulation.inspectors.values())

        emulation.kill_controller(2)  # its switch keeps forwarding on the rules it has
        assert ping(net.get("d1h1"), layout.host("d2h1").ip).received == 3
        emulation.restart_controller(2)
        started = _wait_for(events, "started", count=2)[1]
        _wait_for(events, "ready", count=2, timeout=30, message="d2s1 never reconnected to the restarted controller")
        time.sleep(0.5)
        assert started["restored"] and started["banned"] == ["d1h2"]
        assert ping(net.get("d1h2"), layout.host("d2h1").ip, count=5).received == 0  # the ban is back in force
        assert ping(net.get("d1h1"), layout.host("d2h1").ip).received == 3
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(genuine, address)  # the restarted controller remembers what it accepted
            assert "is held already" in _wait_for(events, "notice_duplicate", count=2)[1]["why"]
    [ban_record] = [r for r in read_jsonl(events) if r.get("type") == "ban"]
    assert (ban_record["node"], ban_record["origin"], ban_record["round"], ban_record["evidence"]) == \
        ("d1h2", 1, 7, [2, 3])
    assert counters[2]["banned_transit"]["d1h2"] >= 5  # the drop rule counted what it stopped
    assert inspector_alive


def test_a_spoofed_frame_is_dropped_at_the_edge_and_counted_against_the_spoofer_only(tmp_path):
    layout = make_layout(1, 3, "line")
    spoofer, victim, impersonated = layout.host("d1h2"), layout.host("d1h1"), layout.host("d1h3")
    capture = tmp_path / "victim.pcap"
    with Emulation(layout, tmp_path, poll_interval=0.5, watched_ports=(7000,)) as emulation:
        net = emulation.net
        sniffer = net.get("d1h1").popen(["tcpdump", "-i", "d1h1-eth0", "-U", "-w", str(capture),
                                         f"src host {impersonated.ip}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        # An update "from d1h3" as d1h2 would forge it: d1h3's address, sent from d1h2's port.
        sent = net.get("d1h2").cmd(
            f"{sys.executable} -c \"from scapy.all import Ether, IP, TCP, sendp; "
            f"sendp(Ether(src='{spoofer.mac}', dst='{victim.mac}') / IP(src='{impersonated.ip}', dst='{victim.ip}') "
            f"/ TCP(sport=40000, dport=7000, flags='S'), iface='d1h2-eth0', count=20, verbose=0); print('sent')\"")
        assert "sent" in sent, sent
        counters = emulation.fresh_counters(since=time.time())[1]["hosts"]
        time.sleep(0.5)
        sniffer.terminate()
        sniffer.wait()
    assert counters["d1h2"]["dropped_packets"] >= 20  # counted against the port it came from
    assert counters["d1h3"]["packets"] == 0 and counters["d1h3"]["dropped_packets"] == 0  # nothing on its name
    read = subprocess.run(["tcpdump", "-r", str(capture)], capture_output=True, text=True)
    assert read.returncode == 0 and read.stdout.strip() == ""  # the victim never saw one


IMPOSSIBLE = ["round 4000000000 is not a round of this run (1-20)"]


@pytest.mark.parametrize("controller", ["os-ken", "ryu"], indirect=True)
def test_a_controller_down_for_10_s_while_two_bans_happen_holds_both_signed_within_a_poll_after_restart(
        tmp_path, controller):
    """Domains 1 and 2 each ban a host of their own (two inspection reports of impossible frames,
    sealed with each inspection service's key, as the service would send them) while domain 3's
    controller is killed: both signed decisions are lost to it. Restarted, it asks its peers for
    what it missed and holds both, verified, before one poll interval has passed."""
    from common.keys import inspector_party
    from controllers.reports import InspectionReport, ReportChannel

    layout = make_layout(3, 2, "ring")
    write_run_keys(tmp_path, layout.domains, {})
    poll = 0.5
    with Emulation(layout, tmp_path, poll_interval=poll, watched_ports=(7000,), defense=DefenseConfig(),
                   keyed=True, frame_bounds=frame_bounds(load_scenario(None)), controller=controller) as emulation:
        description = json.loads(emulation.description_path.read_text())
        emulation.kill_controller(3)
        killed = time.time()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for domain, node in ((1, "d1h2"), (2, "d2h1")):
                view = next(d for d in description["domains"] if d["id"] == domain)
                key = read_keys(key_path(tmp_path, inspector_party(domain)))[controller_party(domain)]
                channel = ReportChannel(key)
                for round_ in (1, 2):
                    sock.sendto(channel.seal(InspectionReport(round_, {}, {node: IMPOSSIBLE})),
                                (view["inspection"]["host"], view["inspection"]["port"]))
                _wait_for(tmp_path / f"controller-d{domain}.jsonl", "ban", message=f"domain {domain} kept {node}")
        assert not (tmp_path / "controller-d3.ledger").exists() or not read_jsonl(tmp_path / "controller-d3.ledger")
        time.sleep(max(0.0, 10.0 - (time.time() - killed)))
        emulation.restart_controller(3)
        events = tmp_path / "controller-d3.jsonl"
        started = _wait_for(events, "started", count=2)[1]
        deadline = time.monotonic() + 10
        while len(held := read_jsonl(tmp_path / "controller-d3.ledger")) < 2:
            assert time.monotonic() < deadline, "the restarted controller never caught up"
            time.sleep(0.05)
        bans = {r["node"]: r for r in _wait_for(events, "ban", count=2)}
    keys_of_d3 = read_keys(key_path(tmp_path, controller_party(3)))
    auditor = Ledger(3, None, domain_public_keys(keys_of_d3))
    for line in held:
        auditor.receive(bytes.fromhex(line["entry"]))  # each signature verifies, each extends its chain
    assert sorted((line["origin"], line["kind"]) for line in held) == [(1, "ban"), (2, "ban")]
    assert all(line["held_at"] - started["time"] <= poll for line in held), (started["time"], held)
    assert (bans["d1h2"]["origin"], bans["d2h1"]["origin"]) == (1, 2)  # dropped at domain 3's borders
    assert any(r["type"] == "ledger_sync" for r in read_jsonl(tmp_path / "controller-d1.jsonl"))

"""Agents exchanging models over real TCP on loopback addresses (no root, no Mininet)."""

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from agents.agent import run_agent
from attacks.agent import poisoner_in_process
from agents.transport import Inbox, Listener, Sender
from agents.wire import ModelFrame, encode, tag
from common.description import HostSpec, NetworkDescription
from common.jsonl import read_jsonl
from common.runconfig import RunConfig
from sdfl.scenario import load_scenario

SHAPES = ((4, 3), (3,))


def frame(sender, round_):
    return ModelFrame(sender, round_, 5, tuple(np.full(s, round_, dtype=np.float32) for s in SHAPES))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_frames_arrive_by_round_and_garbage_is_rejected_without_harm():
    port = free_port()
    inbox = Inbox(["a", "b"])
    listener = Listener(("127.0.0.1", port), inbox, max_payload=10_000, expected_shapes=SHAPES, idle_timeout=0.5)
    senders = [Sender(n, ("127.0.0.1", port), connect_timeout=1) for n in ("a", "b")]
    try:
        with socket.create_connection(("127.0.0.1", port)) as rogue:
            rogue.sendall(b"GET / HTTP/1.1\r\n\r\n")
        deadline = time.monotonic() + 5
        senders[1].send(encode(frame("b", 1)), deadline)
        senders[0].send(encode(frame("a", 1)), deadline)
        senders[0].send(encode(frame("a", 2)), deadline)  # early: kept for round 2
        got = inbox.collect(1, deadline)
        assert [(f.sender, f.round) for f in got] == [("a", 1), ("b", 1)]
        assert [f.sender for f in inbox.collect(2, time.monotonic() + 0.3)] == ["a"]  # b never sent
        assert any("bad magic" in r for r in listener.rejections)
        with socket.create_connection(("127.0.0.1", port)) as stranger:
            stranger.sendall(encode(frame("zz", 3)))
        assert inbox.collect(3, time.monotonic() + 0.3) == []
        assert inbox.rejected == ["frame from non-neighbour 'zz'"]
    finally:
        for s in senders:
            s.close()
        listener.close()


def test_a_stalled_sender_is_cut_off():
    port = free_port()
    listener = Listener(("127.0.0.1", port), Inbox(["a"]), 10_000, SHAPES, idle_timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(encode(frame("a", 1))[:20])  # half a frame, then nothing
            time.sleep(1.0)
        assert any("stalled" in r for r in listener.rejections)
    finally:
        listener.close()


def test_only_frames_tagged_with_their_senders_key_are_accepted():
    port = free_port()
    keys = {"a": b"k" * 32, "b": b"q" * 32}
    inbox = Inbox(["a", "b"])
    listener = Listener(("127.0.0.1", port), inbox, 10_000, SHAPES, idle_timeout=2, keys=keys)
    try:
        for data in (encode(frame("a", 1)),  # no tag at all
                     tag(encode(frame("a", 1), tagged=True), keys["b"]),  # b's key, claiming to be a
                     tag(encode(frame("a", 1), tagged=True), keys["a"])[:-1] + b"x"):  # altered
            with socket.create_connection(("127.0.0.1", port)) as forger:
                forger.sendall(data)
        with socket.create_connection(("127.0.0.1", port)) as honest:
            honest.sendall(tag(encode(frame("b", 1), tagged=True), keys["b"]))
            got = inbox.collect(1, time.monotonic() + 2)
        assert [f.sender for f in got] == ["b"]
        reasons = " | ".join(listener.rejections)
        assert "not authenticated" in reasons and reasons.count("tag does not verify") == 2
    finally:
        listener.close()


def test_a_slow_loris_sender_is_cut_off_even_though_it_never_goes_idle():
    port = free_port()
    listener = Listener(("127.0.0.1", port), Inbox(["a"]), 10_000, SHAPES, idle_timeout=5, frame_timeout=0.6)
    try:
        with socket.create_connection(("127.0.0.1", port)) as loris:
            data = encode(frame("a", 1))
            began = time.monotonic()
            try:
                for byte in data[:30]:
                    loris.sendall(bytes([byte]))  # a byte every 0.1 s: never idle for 5 s
                    time.sleep(0.1)
            except OSError:
                pass  # closed on us: what should happen
        assert any("stalled" in r and "not completed within 0.6 s" in r for r in listener.rejections)
        assert time.monotonic() - began < 4
    finally:
        listener.close()


def test_urgent_bytes_stay_in_the_stream_as_the_mirror_reads_them():
    """A sender marking a byte urgent would have the kernel take it out of the receiver's stream
    while the inspection's mirror reads it in place: the receiver keeps it inline."""
    port = free_port()
    inbox = Inbox(["a"])
    listener = Listener(("127.0.0.1", port), inbox, 10_000, SHAPES, idle_timeout=5)
    try:
        data = encode(frame("a", 1))
        with socket.create_connection(("127.0.0.1", port)) as sender:
            sender.sendall(data[:40])
            time.sleep(0.1)
            sender.send(data[40:41], socket.MSG_OOB)
            time.sleep(0.1)
            sender.sendall(data[41:])
            got = inbox.collect(1, time.monotonic() + 3)
        assert [(f.sender, f.round) for f in got] == [("a", 1)] and listener.rejections == []
    finally:
        listener.close()


def test_connections_from_strangers_and_beyond_the_per_peer_cap_are_refused():
    port = free_port()
    inbox = Inbox(["a"])
    listener = Listener(("127.0.0.1", port), inbox, 10_000, SHAPES, idle_timeout=5,
                        names_by_ip={"127.0.0.1": "a", "127.0.0.2": "z"})
    held = []
    try:
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) as stranger:
            stranger.sendall(b"hello")
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(Listener.MAX_CONNECTIONS_PER_PEER + 1)]
        time.sleep(0.5)
        reasons = " | ".join(listener.rejections)
        assert "127.0.0.2: not a neighbour's address" in reasons
        assert reasons.count("connections at once") == 1
    finally:
        for conn in held:
            conn.close()
        listener.close()


def test_a_neighbour_that_reconnects_is_expected_again_from_the_next_round():
    inbox = Inbox(["a", "b"], grace_s=0.1)
    inbox.put(frame("a", 1))
    inbox.collect(1, time.monotonic() + 0.2)
    assert inbox.absent == {"b"}
    inbox.returned("b")  # its restarted agent connected during round 2
    inbox.put(frame("a", 2))
    assert [f.sender for f in inbox.collect(2, time.monotonic() + 0.3)] == ["a"]
    assert inbox.absent == set()  # not absent: round 3 waits for it again
    inbox.put(frame("b", 3))  # stale: held by b's sender until we listened again
    threading.Timer(0.2, inbox.put, args=(frame("a", 5),)).start()  # the current round's
    assert inbox.latest_round(time.monotonic() + 5, settle_s=0.5) == 5


def test_a_neighbour_whose_host_refuses_us_after_taking_frames_is_cut_off():
    server = socket.create_server(("127.0.0.1", 0))
    sender = Sender("me", server.getsockname(), connect_timeout=0.5)
    try:
        sender.send(encode(frame("me", 1)), time.monotonic() + 5)
        conn, _ = server.accept()
        conn.recv(1 << 16)
        conn.close()  # its agent dies: its sockets close and nobody listens on the port any more
        server.close()
        time.sleep(0.2)
        sender.send(encode(frame("me", 2)), time.monotonic() + 5)
        until = time.monotonic() + 5
        while not sender.cut_off() and time.monotonic() < until:
            time.sleep(0.05)
        assert sender.cut_off()
    finally:
        sender.close()


NODES = ["d1h1", "d1h2", "d2h1"]


def run_three_agents(out, overrides, attacks=()):
    """The three NODES as agent threads on their own loopback addresses, all neighbours."""
    hosts = tuple(HostSpec(n, 1, i + 1, f"127.0.{i + 1}.1", 8, f"02:00:00:00:01:{i + 1:02x}", "d1s1", i + 1)
                  for i, n in enumerate(NODES))
    description = NetworkDescription(1, "none", "line", (), (), hosts)
    scenario = load_scenario(None, [f"dfl.port={free_port()}", *overrides])
    config = RunConfig(scenario, tuple(NODES), {n: tuple(m for m in NODES if m != n) for n in NODES},
                       tuple(attacks))
    poisoners = {n for a in attacks for n in a["nodes"]}
    threads = [threading.Thread(target=run_agent, args=(description, config, n, out, None,
                                                        poisoner_in_process if n in poisoners else None))
               for n in NODES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def test_three_agents_train_together_over_loopback_tcp(tmp_path):
    run_three_agents(tmp_path, ["dfl.rounds=3", "dfl.round_timeout_s=10"])
    for node in NODES:
        records = read_jsonl(tmp_path / f"agent-{node}.jsonl")
        assert [r["round"] for r in records] == [1, 2, 3]
        assert all(r["missing"] == [] and len(r["received_from"]) == 2 for r in records)
        assert records[-1]["bytes_sent"] == 2 * 3 * records[-1]["frame_bytes"]
        assert records[-1]["accuracy"] > 0.5


def test_a_rejected_stream_excuses_its_sender_for_the_round():
    inbox = Inbox(["a", "b"])
    inbox.put(frame("a", 1))
    inbox.excuse("b")
    began = time.monotonic()
    assert [f.sender for f in inbox.collect(1, began + 30)] == ["a"]
    assert time.monotonic() - began < 5
    inbox.put(frame("a", 2))  # the excuse was for one round only
    assert [f.sender for f in inbox.collect(2, time.monotonic() + 0.3)] == ["a"]


def test_agents_reject_a_garbage_sender_and_go_on_without_waiting_for_it(tmp_path):
    garbage = {"kind": "garbage", "category": "poisoning", "nodes": ["d2h1"], "rounds": [1, 2],
               "params": {"mode": "inf"}}
    run_three_agents(tmp_path, ["dfl.rounds=2", "dfl.round_timeout_s=30", "dfl.round_period_s=0"], [garbage])
    for node in ("d1h1", "d1h2"):
        records = read_jsonl(tmp_path / f"agent-{node}.jsonl")
        assert [r["missing"] for r in records] == [["d2h1"], ["d2h1"]]
        assert all(any("NaN or Inf" in x for x in r["rejections"]) for r in records)
        assert all(r["round_time_s"] < 15 for r in records)  # excused, not waited for until the deadline
        assert records[-1]["attack"] is None
    assert [r["attack"] for r in read_jsonl(tmp_path / "agent-d2h1.jsonl")] == ["garbage", "garbage"]


def test_a_neighbour_that_missed_a_round_costs_one_deadline_then_one_grace_then_nothing():
    inbox = Inbox(["a", "b"], grace_s=0.2)
    inbox.put(frame("a", 1))
    began = time.monotonic()
    assert [f.sender for f in inbox.collect(1, began + 0.5)] == ["a"]  # b missing: the deadline
    assert inbox.absent == {"b"}
    inbox.put(frame("a", 2))
    began = time.monotonic()
    assert [f.sender for f in inbox.collect(2, began + 30)] == ["a"]
    assert 0.2 <= time.monotonic() - began < 5  # only the grace, not the 30 s deadline
    inbox.put(frame("a", 3))
    began = time.monotonic()
    assert [f.sender for f in inbox.collect(3, began + 30)] == ["a"]
    assert time.monotonic() - began < 0.2  # missed two rounds running: not waited for at all
    inbox.put(frame("a", 4))
    inbox.put(frame("b", 4))  # b is back on time: present again
    assert [f.sender for f in inbox.collect(4, time.monotonic() + 30)] == ["a", "b"]
    assert inbox.absent == set()


def test_after_a_stall_of_the_whole_network_a_late_frame_brings_its_sender_back():
    """Every frame of the stalled rounds came late: each node ran those rounds alone and marked
    every neighbour absent. A late frame still proves its sender alive, so it is sent to and
    waited for again (a federation that stayed split would aggregate alone to the end)."""
    inbox = Inbox(["a", "b"], grace_s=0.1, probe_every=5)
    for round_ in (1, 2):
        inbox.collect(round_, time.monotonic() + 0.1)
    assert inbox.absent == {"a", "b"}
    assert not inbox.worth_sending("a", 3) and inbox.worth_sending("a", 5)  # probed every 5th round
    inbox.put(frame("a", 2))  # too late for round 2, but a is alive
    assert inbox.worth_sending("a", 3) and not inbox.worth_sending("b", 3)
    inbox.put(frame("a", 3))
    assert [f.sender for f in inbox.collect(3, time.monotonic() + 0.1)] == ["a"]
    assert inbox.absent == {"b"}
    threading.Timer(0.3, inbox.put, [frame("a", 4)]).start()
    began = time.monotonic()
    assert [f.sender for f in inbox.collect(4, began + 30)] == ["a"]  # waited for, not skipped
    assert 0.3 <= time.monotonic() - began < 5


def test_a_neighbour_ahead_of_us_is_not_waited_for_nor_marked_absent():
    """It ran on alone while we were away; its frame for our round is not coming. We run on
    without waiting and it waits for us: the two meet again in its round."""
    inbox = Inbox(["a", "b"], grace_s=0.1)
    inbox.put(frame("a", 1))
    inbox.put(frame("b", 4))
    began = time.monotonic()
    assert [f.sender for f in inbox.collect(1, began + 30)] == ["a"]
    assert time.monotonic() - began < 5 and inbox.absent == set()
    inbox.put(frame("a", 4))
    assert [f.sender for f in inbox.collect(4, time.monotonic() + 30)] == ["a", "b"]  # its frame was kept


def test_frames_of_far_rounds_do_not_fill_the_inbox_or_push_out_the_current_ones():
    inbox = Inbox(["a", "b"])
    inbox.put(frame("a", 1))
    for round_ in range(1000, 1100):  # a hostile neighbour's frames of rounds to come
        inbox.put(frame("b", round_))
    assert len(inbox._frames) <= Inbox.MAX_ROUNDS_KEPT
    assert [f.sender for f in inbox.collect(1, time.monotonic() + 0.2)] == ["a"]


def test_a_neighbour_that_acknowledges_nothing_is_cut_off_and_not_waited_for():
    """A banned neighbour's kernel never acknowledges our bytes; one that stopped reading with a
    full window looks the same. Its frame is not waited for; a live neighbour's is."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent = Sender("b", server.getsockname(), connect_timeout=1)
    live_port = free_port()
    inbox = Inbox(["a", "b"])
    listener = Listener(("127.0.0.1", live_port), Inbox(["me"]), 10_000_000, None, idle_timeout=5)
    live = Sender("a", ("127.0.0.1", live_port), connect_timeout=1)
    try:
        big = b"x" * 4_000_000  # far beyond what a never-reading peer's buffers take
        deadline = time.monotonic() + 20
        silent.send(big, deadline)
        live.send(encode(frame("me", 1)), deadline)
        conn, _ = server.accept()  # connected, and never read from
        assert not silent.cut_off(after_s=0.5)  # too early to tell
        time.sleep(0.7)
        assert silent.cut_off(after_s=0.5) and not live.cut_off(after_s=0.5)
        inbox.put(frame("a", 1))
        began = time.monotonic()
        got = inbox.collect(1, deadline, cut_off=lambda n: {"a": live, "b": silent}[n].cut_off(after_s=0.5))
        assert [f.sender for f in got] == ["a"] and time.monotonic() - began < 1.0  # not the 20 s deadline
        conn.close()
    finally:
        for sender in (silent, live):
            sender.close()
        listener.close()
        server.close()


def test_a_neighbour_not_yet_listening_is_not_judged_cut_off():
    """At start-up a neighbour still importing torch refuses connections: that is no ban."""
    sender = Sender("a", ("127.0.0.1", free_port()), connect_timeout=0.2)
    try:
        sender.send(b"frame", time.monotonic() + 1.5)
        time.sleep(0.8)
        assert not sender.cut_off(after_s=0.3)
    finally:
        sender.close()


@pytest.mark.mininet
def test_a_neighbour_that_goes_silent_after_acknowledging_our_frame_is_cut_off(scratch_network):
    """Banned after it received our frame: nothing of ours is left unacknowledged, yet its frame
    is not coming. The idle connection's keep-alive probes go unanswered and give it away."""
    namespace, outside, inside, port = "sdfl-keepalive", "kaout0", "kain0", 7311
    ip = scratch_network.host(namespace, outside, inside, "10.250.0.1", "10.250.0.2")
    server = sender = None
    try:
        server = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c",
                                   "import socket, time\n"
                                   f"s = socket.create_server(('10.250.0.2', {port}))\n"
                                   "c, _ = s.accept()\ntime.sleep(60)"])
        sender = Sender("b", ("10.250.0.2", port), connect_timeout=1)
        sender.send(b"x" * 1000, time.monotonic() + 20)
        until = time.monotonic() + 10
        while not (sender._socket is not None and sender._delivered()) and time.monotonic() < until:
            time.sleep(0.05)
        time.sleep(1.5)  # a keep-alive probe went out and was answered
        assert sender._delivered() and not sender.cut_off()
        subprocess.run(ip + ["link", "set", inside, "down"], check=True)  # its kernel goes silent
        until = time.monotonic() + 10
        while not sender.cut_off() and time.monotonic() < until:
            time.sleep(0.1)
        assert sender.cut_off()
    finally:
        if sender is not None:
            sender.close()
        if server is not None:
            server.kill()
            server.wait()

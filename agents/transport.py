"""Moving frames between agents over TCP, with size caps, timeouts and deadlines.

Each agent listens on its own address. Outgoing: one persistent connection per neighbour,
fed by its own thread, so a slow or dead neighbour delays nobody else. Incoming: one thread per
connection decodes frames with :class:`agents.wire.FrameReader`; a connection that sends
garbage, exceeds the size cap or stalls mid-frame is closed and logged, and the agent goes on.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import queue
import select
import socket
import struct
import termios
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

from agents.wire import TAG_BYTES, FrameError, FrameReader, ModelFrame, tag

LOG = logging.getLogger(__name__)
RECV_CHUNK = 1 << 16
UNREACHABLE_AFTER_S = 2.0
"""A connected neighbour whose kernel has left a frame of ours unacknowledged this long is cut
off (banned or gone): a slow but live host still acknowledges within milliseconds."""
WriteHook = Callable[[socket.socket, bytes], None]
"""Called with the connection and the frame just before a sender writes it (a behaviour's)."""
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 1, 1, 2
"""Once all we sent is acknowledged, an idle connection is probed after 1 s; two unanswered
probes a second apart (about 3 s of silence) and the kernel gives the connection up."""


class Inbox:
    """Frames by round, from the listed neighbours only; later rounds are kept for later.

    A neighbour that missed a round (dead, cut off by a ban, or rejected) is *absent*: the next
    round waits for it only ``grace_s`` beyond the others, so one lost neighbour costs one round
    deadline, not one per round; once it has missed two rounds running it is not waited for at
    all (a banned node would cost every round its grace). Any frame it sends makes it present
    again from the next round, even one too late for its round: after a stall of the whole
    network every node has missed every other's frame, and the federation must find itself
    again. A neighbour we hold a later round's frame of is ahead of us: its frame for this round
    is not coming, so it is not waited for (the lagging node then runs its rounds without a
    wait and catches up, instead of paying a deadline per round). A neighbour the caller knows
    to be cut off is not waited for at all.
    """

    MAX_ROUNDS_KEPT = 4
    """Frames of at most this many rounds are kept, the earliest (a frame of a later round is
    dropped, its round only noted): a hostile neighbour cannot fill memory with frames of rounds
    to come, nor push out the frames of the rounds honest neighbours are in."""

    def __init__(self, neighbours: list[str], grace_s: float = 1.0, probe_every: int = 5) -> None:
        self.neighbours = set(neighbours)
        self.grace_s = grace_s
        self.probe_every = probe_every
        self.absent: set[str] = set()
        self._missed: dict[str, int] = {}  # absent neighbour -> rounds missed in a row
        self._frames: dict[int, dict[str, ModelFrame]] = defaultdict(dict)
        self._current = 0
        self._excused: set[str] = set()
        self._returned: set[str] = set()  # heard from this round: expected again next round
        self._latest: dict[str, int] = {}  # neighbour -> the highest round it sent us a frame for
        self._changed = threading.Condition()
        self.rejected: list[str] = []

    def returned(self, name: str) -> None:
        """``name`` connected to us (a restarted agent rejoining) or sent a frame while absent:
        send to it and wait for it from the next round on, even if it misses the one being
        collected."""
        with self._changed:
            if name in self.neighbours:
                self.absent.discard(name)
                self._missed.pop(name, None)
                self._returned.add(name)

    def worth_sending(self, name: str, round_: int) -> bool:
        """Whether ``round_``'s frame goes to ``name``: a present neighbour, or one absent for a
        single round (we wait its grace for it, it waits its grace for us); one absent longer
        (dead, or cut off by a ban) only every ``probe_every`` rounds: retrying it every round
        is traffic nobody receives."""
        with self._changed:
            return name not in self.absent or self._missed[name] == 1 or round_ % self.probe_every == 0

    def latest_round(self, deadline: float, settle_s: float) -> int | None:
        """The highest round any neighbour has sent us a frame for: where a restarted agent
        rejoins. It waits until ``deadline`` for a first frame, then ``settle_s`` more: the first
        may be stale (a neighbour's frame of an earlier round, held until we listened again),
        the current round's come once the neighbours know we are back. None if nothing came."""
        with self._changed:
            while not self._frames and time.monotonic() < deadline:
                self._changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            settled = min(deadline, time.monotonic() + settle_s)
            while self._frames and time.monotonic() < settled:
                self._changed.wait(min(0.1, max(0.0, settled - time.monotonic())))
            return max(self._frames, default=None)

    def excuse(self, name: str) -> None:
        """Stop waiting for ``name`` in the round being (or next to be) collected: its stream
        was just rejected, so its frame is not coming."""
        with self._changed:
            if name in self.neighbours:
                self._excused.add(name)
                self._changed.notify_all()

    def put(self, frame: ModelFrame) -> None:
        with self._changed:
            if frame.sender not in self.neighbours:
                self.rejected.append(f"frame from non-neighbour {frame.sender!r}")
                LOG.warning("dropped a frame from %s: not a neighbour", frame.sender)
                return
            if frame.sender in self.absent:
                self.returned(frame.sender)  # alive after all (the condition's lock is re-entrant)
            self._latest[frame.sender] = max(frame.round, self._latest.get(frame.sender, 0))
            if frame.round >= self._current:  # earlier: too late for its round
                self._frames[frame.round][frame.sender] = frame
                while len(self._frames) > self.MAX_ROUNDS_KEPT:
                    del self._frames[max(self._frames)]
            self._changed.notify_all()

    def collect(self, round_: int, deadline: float,
                cut_off: Callable[[str], bool] = lambda name: False) -> list[ModelFrame]:
        """The round's frames once every neighbour's arrived, or whatever came by ``deadline``;
        ``cut_off(name)``, asked every 0.1 s, names a neighbour whose frame is not coming (after a
        ban its neighbours would otherwise each wait out a deadline, at different rounds, and fall
        out of step with each other for good)."""
        with self._changed:
            self._current = round_

            def wait_for(awaited: set[str], until: float) -> None:
                while {n for n in awaited - set(self._frames[round_]) - self._excused
                       if not cut_off(n) and self._latest.get(n, 0) <= round_}:
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        return
                    self._changed.wait(min(remaining, 0.1))

            wait_for(self.neighbours - self.absent, deadline)
            probed = round_ % self.probe_every == 0
            wait_for({n for n in self.absent if self._missed[n] == 1 or probed},
                     min(deadline, time.monotonic() + self.grace_s))
            frames = list(self._frames.pop(round_, {}).values())
            ahead = {n for n, latest in self._latest.items() if latest > round_}
            self.absent = self.neighbours - {f.sender for f in frames} - self._returned - ahead
            self._missed = {n: self._missed.get(n, 0) + 1 for n in self.absent}
            self._excused.clear()
            self._returned.clear()
            for old in [r for r in self._frames if r < round_]:
                del self._frames[old]
            return sorted(frames, key=lambda f: f.sender)


class Listener:
    """Accepts neighbours' connections and feeds their frames into an :class:`Inbox`.

    What a hostile host can cost it is bounded: a connection from an address that is no
    neighbour's is closed at once; a neighbour's address gets at most
    ``MAX_CONNECTIONS_PER_PEER`` at a time; a frame larger than the model's is refused from its
    16-byte prefix; and a frame must arrive whole within ``frame_timeout`` of its first byte,
    so a slow-loris sender dribbling a byte at a time is cut off. With ``keys`` (peer name ->
    key shared with it) only frames whose tag verifies under their sender's key are accepted.
    """

    MAX_CONNECTIONS_PER_PEER = 4

    def __init__(self, address: tuple[str, int], inbox: Inbox, max_payload: int, expected_shapes,
                 idle_timeout: float, names_by_ip: dict[str, str] | None = None,
                 keys: dict[str, bytes] | None = None, frame_timeout: float | None = None) -> None:
        self.inbox = inbox
        self.names_by_ip = names_by_ip or {}
        self.max_payload = max_payload
        self.expected_shapes = expected_shapes
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout or idle_timeout
        self.keys = keys
        self.bytes_received = 0
        self.bytes_from: dict[str, int] = defaultdict(int)  # by neighbour: what crossed the network from it
        self.rejections: list[str] = []
        self._connections: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._server = socket.create_server(address, reuse_port=False)
        # Urgent data stays in the stream (accepted connections inherit it from their first
        # byte): by default the kernel takes an urgent byte out, so a sender marking bytes urgent
        # would show the inspection's mirror, which reads every byte, one stream and us another.
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        self._server.settimeout(0.5)
        self._closed = threading.Event()
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            name = self.names_by_ip.get(peer[0])
            if self.names_by_ip and name not in self.inbox.neighbours:
                self._refuse(conn, peer, "not a neighbour's address")
                continue
            with self._lock:
                if self._connections[peer[0]] >= self.MAX_CONNECTIONS_PER_PEER:
                    crowded = True
                else:
                    crowded = False
                    self._connections[peer[0]] += 1
            if crowded:
                self._refuse(conn, peer, f"more than {self.MAX_CONNECTIONS_PER_PEER} connections at once")
                continue
            if name is not None:
                self.inbox.returned(name)
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True).start()

    def _refuse(self, conn: socket.socket, peer, reason: str) -> None:
        conn.close()
        LOG.warning("refused a connection from %s: %s", peer[0], reason)
        with self._lock:
            self.rejections.append(f"{peer[0]}: {reason}")

    def _serve(self, conn: socket.socket, peer) -> None:
        reader = FrameReader(self.max_payload, self.expected_shapes, self.keys)
        frame_began: float | None = None
        try:
            with conn:
                while not self._closed.is_set():
                    if reader.pending_bytes and frame_began is None:
                        frame_began = time.monotonic()
                    elif not reader.pending_bytes:
                        frame_began = None
                    left = self.idle_timeout if frame_began is None else \
                        self.frame_timeout - (time.monotonic() - frame_began)
                    if left <= 0:
                        self._reject(peer, f"stalled: {reader.pending_bytes} bytes of a frame not completed within "
                                           f"{self.frame_timeout:g} s")
                        return
                    conn.settimeout(left)
                    try:
                        data = conn.recv(RECV_CHUNK)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    with self._lock:
                        self.bytes_received += len(data)
                        self.bytes_from[self.names_by_ip.get(peer[0], peer[0])] += len(data)
                    try:
                        frames = reader.feed(data)
                    except FrameError as error:
                        self._reject(peer, str(error))
                        return
                    for frame in frames:
                        self.inbox.put(frame)
        finally:
            with self._lock:
                self._connections[peer[0]] -= 1

    def _reject(self, peer, reason: str) -> None:
        LOG.warning("closed connection from %s: %s", peer, reason)
        with self._lock:
            self.rejections.append(f"{peer[0]}: {reason}")
        if peer[0] in self.names_by_ip:
            self.inbox.excuse(self.names_by_ip[peer[0]])

    def close(self) -> None:
        self._closed.set()
        self._server.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """A receiver never writes back, so a readable socket means it closed (or reset) ours:
    sending into it would vanish without an error."""
    return bool(select.select([sock], [], [], 0)[0])


class Sender:
    """A persistent connection to one neighbour, fed from a queue by its own thread."""

    def __init__(self, name: str, address: tuple[str, int], connect_timeout: float,
                 source_ip: str | None = None, before_write: WriteHook | None = None) -> None:
        self.name = name
        self.before_write = before_write
        self.address = address
        self.source = (source_ip, 0) if source_ip else None
        self.connect_timeout = connect_timeout
        self.bytes_sent = 0
        self.failures = 0
        self._sending_since: float | None = None  # when the oldest unacknowledged frame was queued
        self._queue: queue.Queue[tuple[bytes, float] | None] = queue.Queue()
        self._socket: socket.socket | None = None
        self._error = 0  # the socket's pending error once seen (reading it clears it)
        self._refused = False  # its host answered "nobody listens here": the agent is gone
        self._connecting_since: float | None = None  # when the current (re)connect began
        self._thread = threading.Thread(target=self._run, name=f"send-{name}", daemon=True)
        self._thread.start()

    def send(self, data: bytes, deadline: float) -> None:
        if self._sending_since is None or self._delivered():
            self._sending_since = time.monotonic()
        self._queue.put((data, deadline))

    def greet(self, deadline: float) -> None:
        """Connect without sending: a neighbour's listener then knows we are back (a restarted
        agent rejoining, see :meth:`Inbox.returned`)."""
        self._queue.put((b"", deadline))

    def idle(self) -> bool:
        """True when everything queued was delivered or given up."""
        return self._queue.unfinished_tasks == 0

    def cut_off(self, after_s: float = UNREACHABLE_AFTER_S) -> bool:
        """True when the neighbour is banned or gone: a frame has been on its way for ``after_s``
        over an established connection and the peer's kernel has still not acknowledged all of
        it, or everything was acknowledged and then the peer's kernel stopped answering the
        connection's keep-alive probes (a node banned after it received our frame, whose own
        frame is now not coming), or its host refuses our connection after it had taken frames
        (its agent died). Before a first delivery nothing is judged (a neighbour still starting
        refuses connections)."""
        return self.why_cut_off(after_s) is not None

    def why_cut_off(self, after_s: float = UNREACHABLE_AFTER_S) -> str | None:
        """Why :meth:`cut_off` holds, or None: the round record names it per neighbour."""
        if self._refused:
            return "refused: its agent is gone"
        since, sock, connecting = self._sending_since, self._socket, self._connecting_since
        if sock is None and connecting is not None and self.bytes_sent > 0 and \
                time.monotonic() - connecting > after_s:
            # It took frames before, and now no SYN of ours is answered: banned (its edge drops
            # everything) after its listener closed our connection, or its host is gone.
            return f"unreachable: reconnecting for {time.monotonic() - connecting:.1f} s"
        if since is None or sock is None:
            return None
        if self._delivered():
            return "keep-alive unanswered" if self._silent(sock) else None
        waiting = time.monotonic() - since
        if waiting <= after_s:
            return None
        # Slow is not gone: a peer whose kernel acknowledged part of what is in flight lately
        # (a congested datapath) is waited for; one that acknowledged nothing, or shut its
        # window, is not.
        silent_s = _seconds_since_last_ack(sock)
        if silent_s is not None and silent_s <= after_s:
            return None
        return f"no acknowledgement for {min(waiting, silent_s or waiting):.1f} s"

    def _silent(self, sock: socket.socket) -> bool:
        try:
            self._error = self._error or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:  # closed under us by the sender thread
            return False
        return self._error == errno.ETIMEDOUT

    def _delivered(self) -> bool:
        """Everything queued was written and the peer's kernel acknowledged every byte."""
        sock = self._socket
        if not self.idle():
            return False
        if sock is None:
            return True
        try:
            return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] == 0
        except OSError:  # closed under us by the sender thread
            return True

    def _connect(self, deadline: float) -> socket.socket | None:
        delay = 0.05
        self._connecting_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(self.address, timeout=self.connect_timeout,
                                                source_address=self.source)
                sock.settimeout(max(1.0, deadline - time.monotonic()))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
                self._error = 0
                self._refused = False
                self._connecting_since = None
                return sock
            except ConnectionRefusedError:
                self._refused = self.bytes_sent > 0  # before its first frame it may be starting
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except OSError:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        return None

    def _deliver(self, data: bytes, deadline: float) -> bool:
        for _attempt in range(2):  # one reconnect after a broken connection
            if self._socket is not None and _closed_by_peer(self._socket):
                self._socket.close()
                self._socket = None
            if self._socket is None:
                self._socket = self._connect(deadline)
                if self._socket is None:
                    return False
            try:
                self._socket.settimeout(max(0.5, deadline - time.monotonic()))
                if self.before_write is not None and data:
                    self.before_write(self._socket, data)
                self._socket.sendall(data)
                self.bytes_sent += len(data)
                return True
            except OSError:
                self._socket.close()
                self._socket = None
        return False

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            # A frame past its round's deadline is of no use to anyone (and would tell a
            # restarted neighbour a stale round to rejoin in): it is given up, not sent late.
            if time.monotonic() >= item[1] or not self._deliver(*item):
                self.failures += 1
                LOG.warning("could not deliver to %s before the round deadline", self.name)
            self._queue.task_done()
        if self._socket is not None:
            self._socket.close()

    def close(self, deadline: float | None = None) -> None:
        """Stop the thread, waiting for it until ``deadline`` (monotonic; default 2 s from now).
        Its last frame's fate is already known, so a thread stuck on a cut-off peer is left to
        die with the (daemon) thread rather than hold the agent's exit."""
        self._queue.put(None)
        self._thread.join(timeout=max(0.0, (deadline or time.monotonic() + 2.0) - time.monotonic()))


_TCP_INFO = struct.Struct("8B13I")
"""The head of Linux's ``struct tcp_info``: eight u8 fields, then u32 fields from ``tcpi_rto``
to ``tcpi_last_ack_recv`` (index 4: ``tcpi_unacked``, 12: ms since the last ACK came in)."""


def _seconds_since_last_ack(sock: socket.socket) -> float | None:
    """How long the peer has acknowledged nothing of what is in flight; None when nothing is in
    flight (what waits is unsent: the peer's window is shut, it stopped reading, which a
    Byzantine receiver could do every round) or the kernel does not say."""
    try:
        info = _TCP_INFO.unpack_from(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size))
    except (OSError, struct.error):
        return None
    unacked, last_ack_ms = info[8 + 4], info[8 + 12]
    return last_ack_ms / 1000.0 if unacked else None


class Transport(Protocol):
    """What moves a round's bytes between a node and its neighbours: :meth:`send` this node's
    frame, then :meth:`collect` the neighbours' (TCP here, memory in :mod:`agents.simulation`)."""

    def send(self, round_: int, data: bytes) -> None: ...

    def collect(self, round_: int) -> list[ModelFrame]: ...

    def counters(self) -> dict: ...


class TcpTransport:
    """The agent process's transport: a listener on its own address, a sender per neighbour,
    frames tagged per receiver when ``keys`` (neighbour -> shared key) are given."""

    def __init__(self, name: str, addresses: dict[str, tuple[str, int]], neighbours: list[str],
                 *, shapes, round_timeout_s: float, keys: dict[str, bytes] | None = None,
                 before_write: WriteHook | None = None) -> None:
        self.keys = keys
        self.round_timeout_s = round_timeout_s
        self.inbox = Inbox(neighbours)
        # No frame may be larger than the model in float64 (the widest dtype the wire carries).
        max_payload = sum(int(math.prod(shape)) for shape in shapes) * 8
        self.listener = Listener(addresses[name], self.inbox, max_payload, shapes, idle_timeout=round_timeout_s,
                                 names_by_ip={address[0]: n for n, address in addresses.items()}, keys=keys,
                                 frame_timeout=round_timeout_s)
        self.senders = {peer: Sender(peer, addresses[peer], connect_timeout=2.0, source_ip=addresses[name][0],
                                     before_write=before_write)
                        for peer in neighbours}
        self.deadline = 0.0
        self.waited_s = 0.0
        self.frame_bytes = 0

    def send(self, round_: int, data: bytes) -> None:
        self.deadline = time.monotonic() + self.round_timeout_s
        self.frame_bytes = len(data) + (TAG_BYTES if self.keys is not None else 0)
        for peer, sender in self.senders.items():
            if self.inbox.worth_sending(peer, round_):
                sender.send(tag(data, self.keys[peer]) if self.keys is not None else data, self.deadline)

    def collect(self, round_: int) -> list[ModelFrame]:
        """The neighbours' frames of the round; returns once this node's frame was delivered to
        every neighbour too (or given up)."""
        collecting_from = time.monotonic()
        frames = self.inbox.collect(round_, self.deadline, cut_off=lambda peer: self.senders[peer].cut_off())
        self.waited_s = time.monotonic() - collecting_from
        # A neighbour absent or cut off never acknowledges: waiting for delivery to it would cost
        # every round a deadline.
        while (not all(s.idle() or s.cut_off() for p, s in self.senders.items() if p not in self.inbox.absent)
               and time.monotonic() < self.deadline):
            time.sleep(0.005)
        return frames

    def counters(self) -> dict:
        cut_off = {peer: why for peer, sender in sorted(self.senders.items()) if (why := sender.why_cut_off())}
        return {"bytes_sent": sum(s.bytes_sent for s in self.senders.values()),
                "bytes_received": self.listener.bytes_received, "bytes_received_from": dict(self.listener.bytes_from),
                "frame_bytes": self.frame_bytes,
                "rejections": list(self.listener.rejections), "cut_off": cut_off}

    def rejoin(self, settle_s: float) -> int | None:
        """A restarted node: greet every neighbour (their listeners then expect it again) and
        return the highest round they send it frames for, or None within two round deadlines."""
        deadline = time.monotonic() + 2 * self.round_timeout_s
        for sender in self.senders.values():
            sender.greet(deadline)
        return self.inbox.latest_round(deadline, settle_s=settle_s)

    def close(self) -> None:
        closing_by = time.monotonic() + 2.0  # one wait for all: not 2 s per stuck sender in turn
        for sender in self.senders.values():
            sender.close(closing_by)
        self.listener.close()

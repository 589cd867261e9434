"""Signed decisions in hash-chained ledgers, and who may decide what (pure, time passed in).

Domains are separate administrations and need not trust each other. Every decision a domain
controller sends another (a ban, an unban, an accusation, a suspicion digest, a link state) is a
:class:`Decision`: the coordination notice (:mod:`controllers.coordination`), the time it was
decided, the digest of the origin's previous decision, and the origin's Ed25519 signature over
all of it (``cryptography``; keys from :mod:`common.keys`). Layout::

    notice body (header + entries) | decided_at u64 (ms) | previous digest (16 bytes) | signature (64 bytes)

So each origin's decisions form a chain that no one but the origin can extend and no one at all
can alter, and any third domain can check who decided what. :class:`Ledger` holds every origin's
chain at one controller: it accepts a decision only if its signature verifies and it extends the
chain it names; a second, different decision with a sequence number already held is
*equivocation*, kept as proof (:class:`Equivocation`); a decision beyond a gap is held until the
gap is filled. Peers compare what they hold with a signed :class:`Heads` message (sent by a
restarted controller, and on a gap) and answer with what the other lacks, so every correct
domain ends with the same chains: no notice is lost to a controller that was down.

:class:`Authority` says what of the ledger is in force at a domain: a domain's ban of its *own*
host, lifted only by its own unban; a remote host's drop at the borders once a quorum of other
domains accuse it (which its home domain cannot lift); a border link's state only from the two
domains it joins. A decision outside its origin's authority stays in the ledger, refused, as
evidence against its origin.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from common.description import NetworkDescription, load_description
from common.keys import KEY_DIR, PUBLIC_FILE, domain_public_keys
from controllers.coordination import (HEADER, LINK_TYPES, Evidence, MessageError, MessageType, Notice,
                                      decode_notice, encode_notice)

SIGNATURE_BYTES = 64
DIGEST_BYTES = 16
TRAILER = struct.Struct(">Q16s")  # decided_at (ms), previous digest
GENESIS = bytes(DIGEST_BYTES)
"""The previous digest of an origin's first decision."""
HEADS_MAGIC = b"SH"
HEADS_HEADER = struct.Struct(">2sBB")  # magic, requester, count
HEAD = struct.Struct(">BI")  # origin, highest sequence number held
MAX_PENDING = 256
"""Decisions held per origin while a gap before them is open."""


def _signer(seed: bytes):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


def _verifier(public: bytes):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(public)


def _check(verifiers: dict, origin: int, signature: bytes, body: bytes, what: str) -> None:
    from cryptography.exceptions import InvalidSignature

    verifier = verifiers.get(origin)
    if verifier is None:
        raise MessageError(f"{what} names origin domain {origin}, which is not a domain of this network")
    try:
        verifier.verify(signature, body)
    except InvalidSignature:
        raise MessageError(f"{what}: signature does not verify: forged or altered "
                           f"(claims origin domain {origin})") from None


@dataclass(frozen=True)
class Decision:
    """One signed decision, as its origin sent it (``raw``)."""

    notice: Notice
    decided_at: float
    previous: bytes
    raw: bytes

    @property
    def origin(self) -> int:
        return self.notice.origin

    @property
    def seq(self) -> int:
        return self.notice.seq

    @property
    def digest(self) -> bytes:
        """What the origin's next decision links to: the signed bytes' SHA-256, truncated."""
        return hashlib.sha256(self.raw[:-SIGNATURE_BYTES]).digest()[:DIGEST_BYTES]


def decode_decision(data: bytes) -> Decision:
    """A decision's fields, unverified; anything malformed raises :class:`MessageError`."""
    if len(data) < HEADER.size + TRAILER.size + SIGNATURE_BYTES:
        raise MessageError(f"{len(data)} bytes is shorter than a signed decision "
                           f"({HEADER.size + TRAILER.size + SIGNATURE_BYTES} at least)")
    body_end = len(data) - SIGNATURE_BYTES - TRAILER.size
    notice = decode_notice(data[:body_end])
    if notice.seq < 1:
        raise MessageError("sequence number 0: decisions are numbered from 1")
    decided_ms, previous = TRAILER.unpack_from(data, body_end)
    return Decision(notice, decided_ms / 1000.0, previous, bytes(data))


@dataclass(frozen=True)
class Heads:
    """What a domain holds: the highest sequence number of each origin's chain. Signed, so only
    the domain it names can ask for a catch-up in its name."""

    requester: int
    heads: dict[int, int]


def decode_heads(data: bytes, verifiers: dict) -> Heads:
    if len(data) < HEADS_HEADER.size + SIGNATURE_BYTES:
        raise MessageError(f"{len(data)} bytes is shorter than a heads message")
    magic, requester, count = HEADS_HEADER.unpack_from(data)
    if magic != HEADS_MAGIC:
        raise MessageError(f"bad magic {magic!r}: not a heads message")
    if len(data) != HEADS_HEADER.size + count * HEAD.size + SIGNATURE_BYTES:
        raise MessageError(f"heads message is {len(data)} bytes but {count} heads need "
                           f"{HEADS_HEADER.size + count * HEAD.size + SIGNATURE_BYTES}")
    _check(verifiers, requester, data[-SIGNATURE_BYTES:], data[:-SIGNATURE_BYTES], "heads message")
    heads = dict(HEAD.unpack_from(data, HEADS_HEADER.size + i * HEAD.size) for i in range(count))
    return Heads(requester, heads)


class Equivocation(MessageError):
    """Two different decisions signed by one origin under one sequence number (or a decision
    that does not extend the chain it names): the proof is both."""

    def __init__(self, held: Decision, other: Decision) -> None:
        super().__init__(f"equivocation: domain {other.origin} signed two different decisions "
                         f"numbered {other.seq}")
        self.held = held
        self.other = other


class Duplicate(MessageError):
    """A decision already held: a relay's copy, or a replay. Harmless, never applied twice."""


@dataclass(frozen=True)
class Received:
    """What a decision brought: those now appended in order (it, and any it unblocked), or, when
    it lies beyond a gap, nothing yet and the origin whose chain needs a catch-up."""

    appended: tuple[Decision, ...]
    gap_in: int | None = None


class Ledger:
    """Every origin's chain of decisions, as one domain's controller holds them.

    ``seed``: this domain's Ed25519 seed (None: an auditor's ledger, which only checks);
    ``public``: every domain's public key, by domain. ``entries``: decisions held before (a
    restarted controller's file), replayed in order.
    """

    def __init__(self, domain: int, seed: bytes | None, public: dict[int, bytes], entries=()) -> None:
        self.domain = domain
        self._signer = _signer(seed) if seed is not None else None
        self.verifiers = {d: _verifier(key) for d, key in public.items()}
        self.chains: dict[int, list[Decision]] = {d: [] for d in sorted(public)}
        self.pending: dict[int, dict[int, Decision]] = {d: {} for d in sorted(public)}
        self.equivocations: list[Equivocation] = []
        for raw in entries:
            self.receive(raw)

    def head(self, origin: int) -> int:
        return len(self.chains.get(origin, ()))

    def heads(self) -> dict[int, int]:
        return {origin: len(chain) for origin, chain in self.chains.items()}

    def equivocators(self) -> set[int]:
        return {e.other.origin for e in self.equivocations}

    def decide(self, notice: Notice, now: float) -> Decision:
        """This domain's next decision: numbered, linked to its last, signed, appended."""
        chain = self.chains[self.domain]
        decision = self.sign(Notice(notice.type, self.domain, len(chain) + 1, notice.round, notice.entries,
                                    notice.links), now, chain[-1].digest if chain else GENESIS)
        chain.append(decision)
        return decision

    def sign(self, notice: Notice, now: float, previous: bytes) -> Decision:
        """``notice`` signed as it stands (origin, number) and linked to ``previous``, not appended.
        An honest controller only ever calls :meth:`decide`; a Byzantine one
        (:mod:`controllers.byzantine`) signs a second decision under a number it used, or one in
        another domain's name."""
        body = encode_notice(notice) + TRAILER.pack(round(now * 1000), previous)
        return decode_decision(body + self._signer.sign(body))

    def receive(self, data: bytes) -> Received:
        """A decision from the wire or a file. Raises :class:`MessageError` (malformed, forged,
        of an unknown origin), :class:`Duplicate` or :class:`Equivocation` (the proof is kept)."""
        decision = decode_decision(data)
        _check(self.verifiers, decision.origin, data[-SIGNATURE_BYTES:], data[:-SIGNATURE_BYTES],
               f"decision {decision.seq} of domain {decision.origin}")
        chain = self.chains[decision.origin]
        if decision.seq <= len(chain):
            held = chain[decision.seq - 1]
            if held.raw == decision.raw:
                raise Duplicate(f"duplicate: decision {decision.seq} of domain {decision.origin} is held "
                                "already (a relay's copy or a replay)")
            self._equivocation(held, decision)
        if decision.seq > len(chain) + 1:
            pending = self.pending[decision.origin]
            held = pending.get(decision.seq)
            if held is not None and held.raw != decision.raw:
                self._equivocation(held, decision)
            if len(pending) < MAX_PENDING:
                pending[decision.seq] = decision
            return Received((), gap_in=decision.origin)
        appended = [self._append(decision)]
        pending = self.pending[decision.origin]
        try:
            while (following := pending.pop(len(chain) + 1, None)) is not None:
                appended.append(self._append(following))
        except Equivocation:
            pending.clear()  # the proof is kept; what came after a fork waits for a catch-up
        return Received(tuple(appended))

    def _append(self, decision: Decision) -> Decision:
        chain = self.chains[decision.origin]
        if not chain and decision.previous != GENESIS:
            raise MessageError(f"decision 1 of domain {decision.origin} links to a predecessor: not a chain's start")
        if chain and decision.previous != chain[-1].digest:
            # It links to a decision numbered seq - 1 that is not the one held: the origin signed two.
            self._equivocation(chain[-1], decision)
        chain.append(decision)
        return decision

    def _equivocation(self, held: Decision, other: Decision):
        proof = Equivocation(held, other)
        self.equivocations.append(proof)
        raise proof

    def heads_message(self) -> bytes:
        """A signed :class:`Heads` of this domain: sent to a peer, it asks for what it lacks."""
        heads = self.heads()
        body = HEADS_HEADER.pack(HEADS_MAGIC, self.domain, len(heads))
        body += b"".join(HEAD.pack(origin, seq) for origin, seq in sorted(heads.items()))
        return body + self._signer.sign(body)

    def missing(self, heads: Heads) -> list[bytes]:
        """The decisions this ledger holds beyond ``heads``, in chain order."""
        return [d.raw for origin, chain in sorted(self.chains.items()) for d in chain[heads.heads.get(origin, 0):]]

    def behind(self, heads: Heads) -> bool:
        """Whether the peer that sent ``heads`` holds decisions this ledger lacks."""
        return any(seq > self.head(origin) for origin, seq in heads.heads.items() if origin in self.chains)


@dataclass(frozen=True)
class Drop:
    """A remote host dropped at a domain's borders: by whose decisions, and the one that made
    it so (the home domain's ban, or the accusation that completed the quorum) with its evidence."""

    by: tuple[int, ...]
    decision: Decision
    evidence: Evidence


def default_quorum(domains: int) -> int:
    """Accusers needed to drop a remote host: f + 1 for the f = (n - 1) // 3 Byzantine domains
    that n domains tolerate, and never fewer than two: no single domain decides about another's
    host."""
    return max(2, (domains - 1) // 3 + 1)


class Authority:
    """Who may decide what, and what of a ledger is in force at ``domain``.

    A node's home domain bans and unbans it (``BAN``/``UNBAN`` of its own host); another domain
    may only accuse it (``ACCUSE``) and withdraw its own accusation (``UNBAN`` of a remote host).
    A remote host is dropped here when its home domain's ban stands or ``quorum`` other domains'
    accusations do; an equivocating domain's accusations no longer count. A link state counts
    only from the two domains the link joins.
    """

    def __init__(self, description: NetworkDescription, domain: int, quorum: int) -> None:
        self.description = description
        self.domain = domain
        self.quorum = quorum

    def _home(self, node_key: int) -> tuple[str | None, int | None]:
        host = self.description.host_with_key(node_key)
        return (host.name, host.domain) if host else (None, None)

    def refusal(self, decision: Decision) -> str | None:
        """Why ``decision`` is outside its origin's authority, or None."""
        notice, origin = decision.notice, decision.origin
        if notice.type in LINK_TYPES:
            foreign = [link for link in notice.links if origin not in link]
            return f"domain {origin} announced link(s) {foreign} it is not an end of" if foreign else None
        for entry in notice.entries:
            name, home = self._home(entry.node_key)
            if name is None:
                return f"names node key {entry.node_key}, no host of this network"
            if notice.type is MessageType.BAN and home != origin:
                return f"domain {origin} may not ban {name}, a host of domain {home} (it may accuse it)"
            if notice.type is MessageType.ACCUSE and home == origin:
                return f"domain {origin} accuses its own host {name}: a home domain bans"
        return None

    def in_force(self, ledger: Ledger) -> tuple[dict[str, Drop], set[tuple[int, int]]]:
        """Remote hosts dropped here (:class:`Drop`), and the border links that are down."""
        home_ban: dict[str, tuple[Decision, Evidence]] = {}
        accusers: dict[str, dict[int, tuple[Decision, Evidence]]] = {}
        link_down: dict[tuple[int, int], set[int]] = {}
        cheats = ledger.equivocators()
        for origin, chain in sorted(ledger.chains.items()):
            for decision in chain:
                if self.refusal(decision) is not None:
                    continue
                notice = decision.notice
                if notice.type in LINK_TYPES:
                    for link in notice.links:
                        says_down = link_down.setdefault(tuple(sorted(link)), set())
                        (says_down.add if notice.type is MessageType.LINK_DOWN else says_down.discard)(origin)
                    continue
                for entry in notice.entries:
                    name, home = self._home(entry.node_key)
                    if home == origin and notice.type in (MessageType.BAN, MessageType.UNBAN):
                        if notice.type is MessageType.BAN:
                            home_ban[name] = (decision, entry)
                        else:
                            home_ban.pop(name, None)
                    elif notice.type is MessageType.ACCUSE:
                        accusers.setdefault(name, {})[origin] = (decision, entry)
                    elif notice.type is MessageType.UNBAN:
                        accusers.get(name, {}).pop(origin, None)
        dropped: dict[str, Drop] = {}
        for name, (decision, entry) in home_ban.items():
            dropped[name] = Drop((decision.origin,), decision, entry)
        for name, by in accusers.items():
            counted = {origin: made for origin, made in by.items() if origin not in cheats}
            if len(counted) >= self.quorum and name not in dropped:
                decision, entry = max(counted.values(), key=lambda made: made[0].decided_at)
                dropped[name] = Drop(tuple(sorted(counted)), decision, entry)
        local = {h.name for h in self.description.hosts_in(self.domain)}
        return ({n: d for n, d in sorted(dropped.items()) if n not in local},
                {link for link, by in link_down.items() if by})


def read_ledger(path: Path) -> list[dict]:
    """A controller's ledger file, line by line (none if it does not exist). A partly written
    last line (a controller killed mid-write) is left out: its decision comes back from a peer."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return []
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return [json.loads(line) for line in lines]


class LedgerAuditError(ValueError):
    """A ledger file that does not hold what its origins signed; the text names the entry."""


@dataclass(frozen=True)
class Audit:
    """What ``sdfl ledger verify`` found: every domain's chain, and any proven equivocation."""

    chains: dict[int, list[Decision]]
    refusals: dict[tuple[int, int], str]
    equivocations: list[tuple[str, Equivocation]]
    files: dict[str, int]


def audit(files: dict[str, Path], public: dict[int, bytes], authority: Authority) -> Audit:
    """Check every line of every ledger file: valid JSON, a decision whose signature verifies
    and that extends its origin's chain, fields that say what the signed bytes say. Raises
    :class:`LedgerAuditError` naming the file, line, origin and number at fault. Two files
    holding different decisions under one origin and number prove that origin equivocated."""
    chains: dict[int, list[Decision]] = {}
    equivocations: list[tuple[str, Equivocation]] = []
    counts = {}
    for name, path in sorted(files.items()):
        ledger = Ledger(0, None, public)
        raw_lines = Path(path).read_text(encoding="utf-8").splitlines()
        counts[name] = len(raw_lines)
        for number, text in enumerate(raw_lines, start=1):
            where = f"{name} line {number}"
            try:
                line = json.loads(text)
                decision = decode_decision(bytes.fromhex(line["entry"]))
            except (ValueError, KeyError, TypeError) as error:
                raise LedgerAuditError(f"{where}: not a ledger entry ({error})") from None
            where += f" (domain {decision.origin}'s decision {decision.seq})"
            try:
                ledger.receive(decision.raw)
            except Equivocation as proof:
                raise LedgerAuditError(f"{where}: {proof} within one file") from None
            except MessageError as error:
                raise LedgerAuditError(f"{where}: {error}") from None
            said = (line.get("origin"), line.get("seq"), line.get("kind"), line.get("decided_at"))
            signed = (decision.origin, decision.seq, decision.notice.type.name.lower(), decision.decided_at)
            if said != signed:
                raise LedgerAuditError(f"{where}: the line says {said}, the signed entry {signed}")
            if line.get("in_force") != (authority.refusal(decision) is None):
                raise LedgerAuditError(f"{where}: in_force is {line.get('in_force')}, its authority says otherwise")
        for origin, chain in ledger.chains.items():
            held = chains.setdefault(origin, [])
            for decision in chain:
                if decision.seq > len(held):
                    held.append(decision)
                elif held[decision.seq - 1].raw != decision.raw:
                    equivocations.append((name, Equivocation(held[decision.seq - 1], decision)))
    refusals = {(d.origin, d.seq): why for chain in chains.values() for d in chain
                if (why := authority.refusal(d)) is not None}
    return Audit(chains, refusals, equivocations, counts)


def audit_run(folder: Path) -> tuple[Audit, NetworkDescription]:
    """:func:`audit` of every ``controller-dN.ledger`` of a run folder, against the run's public
    keys and its network; a folder without them is a ValueError naming what is missing."""
    description = load_description(folder / "network.json")
    public_file = folder / KEY_DIR / PUBLIC_FILE
    if not public_file.is_file():
        raise ValueError(f"{public_file} is missing: the domains' public keys are needed to check signatures")
    public = domain_public_keys({k: bytes.fromhex(v) for k, v in json.loads(public_file.read_text()).items()})
    files = {p.name: p for p in sorted(folder.glob("controller-d*.ledger"))}
    if not files:
        raise ValueError(f"{folder}: no controller-dN.ledger file (a run of this version with keys writes one)")
    return audit(files, public, Authority(description, 0, default_quorum(len(description.domains)))), description

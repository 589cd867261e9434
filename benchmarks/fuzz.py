"""Fuzzing the testbed's parsers of hostile input: the model wire format (whole frames and
byte streams in any chunking, plain and authenticated), the coordination-message decoder (and
its authenticated, replay-checking channel), the controller's packet-in parser, the inspection
service's path from a mirrored frame to a report, the inspection reports' channel and the
scenario loader.

Each input must end in a value or in the parser's own named error (:class:`FrameError`,
:class:`MessageError`, :class:`PacketError`, :class:`ScenarioError`), within 10 s (a hang);
anything else is a crash.
Inputs are hypothesis-generated: raw bytes, valid messages with bytes flipped, cut or inserted,
model frames built field by field with hostile dimensions, dtypes and values, and scenario text
and ``--set`` overrides over the real keys. The test suite runs a bounded, deterministic number
of inputs (``tests/test_fuzz.py``); this script runs many more and prints the counts:

    .venv/bin/python benchmarks/fuzz.py --examples 20000
"""

from __future__ import annotations

import argparse
import math
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.wire import (DTYPES, HEADER_FIXED, MAGIC, MAX_NDIM, PREFIX, VERSION, FrameError,  # noqa: E402
                         FrameReader, ModelFrame, decode, encode, tag)
from common.keys import SIGNING, controller_party, domain_public_keys, run_keys  # noqa: E402
from controllers.coordination import (Evidence, MessageError, MessageType, Notice,  # noqa: E402
                                      Stream, decode_notice, encode_notice)
from controllers.ledger import Duplicate, Ledger  # noqa: E402
from controllers.inspector import DomainInspection, FrameBounds  # noqa: E402
from controllers.packets import PacketError, parse_packet_in  # noqa: E402
from controllers.reports import InspectionReport, ReportChannel  # noqa: E402
from sdfl.scenario import SCHEMA, ScenarioError, load_scenario  # noqa: E402
from topologies.layout import make_layout  # noqa: E402

MAX_PAYLOAD = 1 << 20  # an agent's cap in the fuzz runs: a frame claiming more is refused from its prefix
KEY = bytes(range(32))  # the key every fuzzed sender shares with the receiver


class EverySendersKey(dict):
    """Keys for whatever sender a fuzzed frame names (so the tag check itself is reached)."""

    def get(self, name, default=None):
        return KEY


def frames(tagged: bool = False) -> st.SearchStrategy[bytes]:
    shapes = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3)

    def build(sender, round_, samples, shapes, seed):
        body = encode(ModelFrame(sender, round_, samples, tuple(np.random.default_rng(seed).normal(size=s).astype(
            np.float32) for s in shapes)), tagged=tagged)
        return tag(body, KEY) if tagged else body
    return st.builds(
        build, st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=16),
        st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), shapes, st.integers(0, 2**16))


def handmade_frames() -> st.SearchStrategy[bytes]:
    """Frames built field by field as an attacker would, past every check of encode(): dimensions
    of 0, 2**16 or 2**32-1, unknown dtype codes, and payloads sized to the shapes holding each
    dtype's extremes (values beyond float32, NaN, Inf, subnormals)."""
    dimension = st.one_of(st.integers(0, 4), st.sampled_from([2**16, 2**32 - 1]))
    shape = st.lists(dimension, max_size=MAX_NDIM + 1).map(tuple)
    extreme = st.sampled_from([0.0, -0.0, 1.0, 3e38, -1e39, 1e300, 5e-324, float("nan"), float("inf")])

    def build(sender, dtype_code, shapes, values, tail):
        header = (struct.pack(">B", len(sender)) + sender + HEADER_FIXED.pack(7, 120, dtype_code, len(shapes))
                  + b"".join(struct.pack(f">B{len(s)}I", len(s), *s) for s in shapes))
        dtype = DTYPES.get(dtype_code, np.dtype("<f4"))
        needed = sum(math.prod(s) for s in shapes)
        with np.errstate(over="ignore"):
            payload = np.resize(np.array(values, dtype), needed).tobytes() if needed <= 4096 else b""
        payload += tail
        return PREFIX.pack(MAGIC, VERSION, 0, len(header), len(payload)) + header + payload
    return st.builds(build, st.sampled_from([b"d1h1", b"", b"\xff"]), st.sampled_from([*DTYPES, 0, 255]),
                     st.lists(shape, max_size=3), st.lists(extreme, min_size=1, max_size=4),
                     st.sampled_from([b"", b"\x00"]))


def notices() -> st.SearchStrategy[bytes]:
    entry = st.builds(Evidence, st.integers(0, 0xFFFF), st.sampled_from(list(Stream)),
                      st.floats(0, 1), st.integers(0, 255), st.integers(0, 255))
    link = st.tuples(st.integers(0, 255), st.integers(0, 255))
    return st.builds(lambda type_, origin, seq, round_, entries, links: encode_notice(
        Notice(type_, origin, seq, round_, tuple(entries), tuple(links))),
        st.sampled_from(list(MessageType)), st.integers(0, 255), st.integers(0, 2**32 - 1),
        st.integers(0, 0xFFFF), st.lists(entry, max_size=5), st.lists(link, max_size=5))


DOMAIN_KEYS = run_keys(b"fuzz", 4, {})
PUBLIC = domain_public_keys(DOMAIN_KEYS[controller_party(1)])


def signed_decisions() -> st.SearchStrategy[bytes]:
    """Decisions as a domain signs them: numbered from 1, chained, under its own key."""
    return st.builds(lambda body, origin: Ledger(origin, DOMAIN_KEYS[controller_party(origin)][SIGNING], PUBLIC)
                     .decide(decode_notice(body), 1.0).raw, notices(), st.integers(1, 4))


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A valid message with one edit: a byte changed, a cut, or bytes inserted."""
    def edit(data: bytes, where: int, what: int, inserted: bytes) -> bytes:
        at = where % (len(data) + 1)
        if what == 0 and data:
            at %= len(data)
            return data[:at] + bytes([data[at] ^ (1 + where % 255)]) + data[at + 1:]
        if what == 1:
            return data[:at]
        return data[:at] + inserted + data[at:]
    return st.builds(edit, valid, st.integers(0, 2**16), st.integers(0, 2), st.binary(min_size=1, max_size=16))


def check_frame(data: bytes) -> str:
    try:
        frame = decode(data, max_payload=MAX_PAYLOAD)
    except FrameError:
        return "rejected"
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in frame.tensors), \
        "a decoded frame carries other than finite float32 values"
    return "accepted"


def check_stream(chunks: list[bytes], keys=None) -> str:
    """Chunks of a byte stream fed to one reader (verifying tags with ``keys``): frames, or a
    named error and no more input."""
    reader = FrameReader(max_payload=MAX_PAYLOAD, keys=keys)
    try:
        for chunk in chunks:
            reader.feed(chunk)
            assert reader.pending_bytes <= MAX_PAYLOAD + 4096 + 32, "the reader buffers past its cap"
    except FrameError:
        assert reader.failed and reader.pending_bytes == 0
        return "rejected"
    return "accepted"


def check_notice(data: bytes) -> str:
    try:
        notice = decode_notice(data)
    except MessageError:
        return "rejected"
    assert encode_notice(notice) == data, "a decoded notice does not encode back to its bytes"
    return "accepted"


def check_signed_decision(data: bytes) -> str:
    """A fresh ledger of four domains: a decision is accepted only if its origin's signature
    verifies, and the same bytes a second time never are (a replay)."""
    ledger = Ledger(1, DOMAIN_KEYS[controller_party(1)][SIGNING], PUBLIC)
    try:
        ledger.receive(data)
    except MessageError:
        return "rejected"
    try:
        ledger.receive(data)
    except Duplicate:
        return "accepted"
    raise AssertionError("the same decision was accepted twice")


def headers() -> st.SearchStrategy[bytes]:
    """Ethernet frames from a host: ARP, IPv4 with TCP/UDP/ICMP or anything, tagged or not,
    with options and payloads behind the ports (what hung os-ken's parser), cut anywhere."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw

    def build(kind, tagged, port, option, payload, ihl, proto):
        ip = IP(src="10.1.0.1", dst="10.2.0.1", ihl=ihl, proto=proto) if proto else IP(src="10.1.0.1", dst="10.2.0.1")
        layer = {0: ARP(op=1, psrc="10.1.0.1", pdst="10.1.0.2"),
                 1: ip / TCP(dport=port, flags="S", options=[(option, b"")]),
                 2: ip / UDP(dport=port), 3: ip / ICMP(type=port % 256)}[kind]
        return bytes((Ether() / Dot1Q(vlan=port % 4096) if tagged else Ether()) / layer / Raw(payload))
    return st.builds(build, st.integers(0, 3), st.booleans(), st.sampled_from([7000, 4789, 179, 6653, 0, 65535]),
                     st.integers(0, 255), st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 15)),
                     st.one_of(st.none(), st.sampled_from([1, 6, 17, 0, 255])))


def check_packet_in(data: bytes) -> str:
    """What a switch hands the controller: at most its first 128 bytes."""
    try:
        parse_packet_in(data[:128])
    except PacketError:
        return "rejected"
    return "accepted"


def mirrored(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Frames (or garbage) a host sends towards the agents' port, as one mirrored TCP segment."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    return st.builds(lambda payload, src, seq, syn: bytes(Ether() / IP(src=f"10.1.0.{src}", dst="10.1.0.2") / TCP(
        sport=40000, dport=7000, seq=seq, flags="S" if syn else "PA") / payload),
        valid, st.integers(1, 4), st.integers(0, 2**32 - 1), st.booleans())


def check_inspection(segments: list[bytes]) -> str:
    """Mirrored segments into a domain's inspection: counted, violations noted, never raised."""
    inspection = DomainInspection(INSPECTED_NETWORK, 1, FrameBounds(((2, 3), (2,)), 20, 1000), 1.0, 2,
                                  ReportChannel(KEY), started=0.0)
    for i, data in enumerate(segments):
        inspection.segment(float(i), data)
        for sealed in inspection.reports(float(i)):
            ReportChannel(KEY, seq=0).open(sealed)
    counts = inspection.counts
    return "rejected" if counts.unparsed or counts.violations or counts.ignored else "accepted"


INSPECTED_NETWORK = make_layout(1, 3, "line").to_description("user", monitor=True)


def reports() -> st.SearchStrategy[bytes]:
    features = st.dictionaries(st.sampled_from(["d1h1", "d1h2"]), st.fixed_dictionaries(
        {k: st.floats(0, 1) for k in ("off_norm", "off_home")}), max_size=2)
    return st.builds(lambda round_, f, v: ReportChannel(KEY, seq=0).seal(InspectionReport(round_, f, v)),
                     st.integers(0, 2**40), features,
                     st.dictionaries(st.text(max_size=5), st.lists(st.text(max_size=10), max_size=2), max_size=2))


def check_report(data: bytes) -> str:
    try:
        ReportChannel(KEY, seq=0).open(data)
    except MessageError:
        return "rejected"
    return "accepted"


def check_scenario_text(text: str, folder: Path) -> str:
    path = folder / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_scenario(path)
    except ScenarioError:
        return "rejected"
    return "accepted"


def check_overrides(overrides: list[str]) -> str:
    try:
        load_scenario(None, overrides)
    except ScenarioError:
        return "rejected"
    return "accepted"


def dotted_keys(schema: dict = SCHEMA, prefix: str = "") -> list[str]:
    keys = []
    for key, spec in schema.items():
        keys += dotted_keys(spec, f"{prefix}{key}.") if isinstance(spec, dict) else [f"{prefix}{key}"]
    return keys


def overrides() -> st.SearchStrategy[list[str]]:
    keys = st.one_of(st.sampled_from(dotted_keys() + ["attacks.0.kind", "attacks.0.scale", "attacks.1.nodes"]),
                     st.text(max_size=12))
    values = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats().map(repr),
                       st.booleans().map(str).map(str.lower),
                       st.text(max_size=12).map(repr), st.text(max_size=12),
                       st.lists(st.integers(-5, 5), max_size=3).map(str), st.just("[]"), st.just("{}"))
    return st.lists(st.builds(lambda k, v: f"{k}={v}", keys, values), max_size=4)


def scenario_texts() -> st.SearchStrategy[str]:
    line = st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(dotted_keys()),
                     st.one_of(st.integers(-10, 10**6).map(str), st.floats(allow_nan=False).map(repr),
                               st.sampled_from(['"ring"', '"mesh"', "true", "[]", '"x"', "-1", "0"])))
    table = st.builds(lambda name, lines: f"[{name}]\n" + "\n".join(lines),
                      st.sampled_from(["network", "dfl", "defense", "bogus"]), st.lists(line, max_size=4))
    return st.one_of(st.text(max_size=200), st.lists(st.one_of(line, table), max_size=5).map("\n".join),
                     st.just("[[attacks]]\nkind = 'sign-flip'\nfraction = 2.0"))


def targets(folder: Path) -> dict:
    """name -> (strategy, check): what is fuzzed and how each input is judged."""
    return {
        "wire frame": (st.one_of(st.binary(max_size=2048), mutated(frames()), frames(), handmade_frames()),
                       check_frame),
        "wire stream": (st.lists(st.one_of(frames(), mutated(frames()), st.binary(max_size=64)), max_size=4)
                        .flatmap(lambda parts: st.lists(st.integers(1, 64), min_size=1, max_size=8).map(
                            lambda cuts, data=b"".join(parts): _chunks(data, cuts))), check_stream),
        "authenticated wire stream": (
            st.lists(st.one_of(frames(tagged=True), mutated(frames(tagged=True)), frames(), st.binary(max_size=64)),
                     max_size=4).flatmap(lambda parts: st.lists(st.integers(1, 64), min_size=1, max_size=8).map(
                         lambda cuts, data=b"".join(parts): _chunks(data, cuts))),
            lambda chunks: check_stream(chunks, EverySendersKey())),
        "coordination notice": (st.one_of(st.binary(max_size=256), mutated(notices()), notices()), check_notice),
        "signed decision": (st.one_of(st.binary(max_size=256), mutated(signed_decisions()), signed_decisions()),
                            check_signed_decision),
        "packet-in": (st.one_of(st.binary(max_size=160), mutated(headers()), headers()), check_packet_in),
        "inspector frame": (st.lists(st.one_of(mirrored(st.one_of(frames(), mutated(frames()), handmade_frames(),
                                                                  st.binary(max_size=64))),
                                               mutated(mirrored(frames())), st.binary(max_size=80)),
                                     min_size=1, max_size=4), check_inspection),
        "inspection report": (st.one_of(st.binary(max_size=256), mutated(reports()), reports()), check_report),
        "scenario file": (scenario_texts(), lambda text: check_scenario_text(text, folder)),
        "scenario --set": (overrides(), check_overrides),
    }


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    chunks, at, i = [], 0, 0
    while at < len(data):
        size = cuts[i % len(cuts)]
        chunks.append(data[at:at + size])
        at, i = at + size, i + 1
    return chunks


def fuzz(strategy, check, examples: int, derandomize: bool = False) -> dict[str, int]:
    """Run ``check`` on ``examples`` generated inputs; counts of each outcome (a crash raises)."""
    counts: dict[str, int] = {}

    @settings(max_examples=examples, deadline=10_000, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value):
        outcome = check(value)
        counts[outcome] = counts.get(outcome, 0) + 1

    run()
    return counts


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="inputs per target")
    parser.add_argument("--target", action="append", help="fuzz only this target (repeatable; default: all)")
    args = parser.parse_args(argv)
    crashes = 0
    with tempfile.TemporaryDirectory() as folder:
        chosen = targets(Path(folder))
        unknown = set(args.target or ()) - set(chosen)
        if unknown:
            parser.error(f"unknown target {sorted(unknown)[0]!r}; known: {', '.join(chosen)}")
        for name, (strategy, check) in chosen.items():
            if args.target and name not in args.target:
                continue
            began = time.monotonic()
            try:
                counts = fuzz(strategy, check, args.examples)
                outcome = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            except Exception as error:  # a crash: hypothesis has shrunk it to a minimal input
                crashes += 1
                outcome = f"CRASH: {type(error).__name__}: {error}"
            print(f"{name}: {sum(counts.values()) if 'CRASH' not in outcome else '?'} inputs tried, {outcome}, "
                  f"{time.monotonic() - began:.0f} s", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"crashes: {crashes}; peak memory {peak_mb:.0f} MB")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())

"""What a domain's inspection costs per mirrored segment and per round, without root or a network.

One domain of an ``--domains`` x ``--hosts`` ring (paper.toml's model, 4,810 float32 weights a
frame): every round each local host sends its model to every other local host and to one host of
each neighbouring domain, cut into 1,448-byte TCP segments as a 1,500-byte MTU cuts them, with
one ACK-only segment back for every two, as the mirror delivers them; then the round's reports.
CPU time (``time.process_time``) of :meth:`DomainInspection.segment` over every segment and of
:meth:`DomainInspection.reports` per round.

    .venv/bin/python benchmarks/inspection_speed.py [--domains 3 --hosts 4 --rounds 10]
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = ((64, 64), (64,), (10, 64), (10,))
MSS = 1448
ACK_EVERY = 2


def tcp_frame(src: str, dst: str, sport: int, dport: int, seq: int, flags: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4/TCP frame as the mirror port delivers it (checksums left zero: nobody checks)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 20 + len(payload), 0, 0x4000, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    return bytes(12) + b"\x08\x00" + ip + tcp + payload


def stream_frames(src: str, dst: str, sport: int, data: bytes) -> list[bytes]:
    """A connection's SYN, its data cut at the MSS, and the receiver's ACKs."""
    frames = [tcp_frame(src, dst, sport, 7000, 999, 0x02, b"")]
    for i, at in enumerate(range(0, len(data), MSS)):
        frames.append(tcp_frame(src, dst, sport, 7000, 1000 + at, 0x18, data[at:at + MSS]))
        if i % ACK_EVERY == ACK_EVERY - 1:
            frames.append(tcp_frame(dst, src, 7000, sport, 1, 0x10, b""))
    return frames


def main(argv: list[str] | None = None) -> int:
    from agents.wire import ModelFrame, encode
    from controllers.inspector import DomainInspection, FrameBounds
    from controllers.reports import ReportChannel
    from topologies.layout import make_layout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    description = make_layout(args.domains, args.hosts, "ring").to_description("user", monitor=True)
    local = description.hosts_in(1)
    remote = [h for h in description.hosts if h.domain in (2, args.domains) and h.name.endswith("h1")]
    inspection = DomainInspection(description, 1, FrameBounds(SHAPES, args.rounds, 10_000), wait_s=1.0,
                                  baseline_rounds=3, channel=ReportChannel(bytes(32)), started=0.0)
    rng = np.random.default_rng(0)
    segments = frames = 0
    segment_cpu = report_cpu = 0.0
    for round_ in range(1, args.rounds + 1):
        burst = []
        for i, sender in enumerate(local):
            tensors = tuple(rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES)
            data = encode(ModelFrame(sender.name, round_, 100, tensors))
            receivers = [h for h in local if h is not sender] + (remote if i == 0 else [])
            for j, receiver in enumerate(receivers):
                burst += stream_frames(sender.ip, receiver.ip, 40000 + 100 * round_ + j, data)
                frames += 1
        segments += len(burst)
        began = time.process_time()
        for data in burst:
            inspection.segment(float(round_), data)
        segment_cpu += time.process_time() - began
        began = time.process_time()
        inspection.reports(float(round_) + 0.5)
        report_cpu += time.process_time() - began
    print(json.dumps({
        "segments": segments, "model_frames": frames, "frames_decoded": inspection.counts.frames,
        "us_per_segment": round(1e6 * segment_cpu / segments, 2),
        "ms_per_round_report": round(1e3 * report_cpu / args.rounds, 2),
        "cpu_s": round(segment_cpu + report_cpu, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every record type a run's processes write to their JSON-lines files, defined once.

A record is a JSON object with ``type`` (an :class:`Event`), ``time`` (Unix seconds, or a
simulated round's number) and the fields its type requires, plus any extra detail its writer
adds. Writers build records with :func:`event`, which refuses a record that lacks a required
field; readers select them with :func:`of_kind` or :func:`read_events`. So a record's name and
shape live here, and a misspelt type is an AttributeError, not a silently empty plot.

Files: ``agent-<node>.jsonl`` (agents), ``controller-d<d>.jsonl`` (controllers),
``inspector-d<d>.jsonl`` (inspection services), ``traffic.jsonl`` (traffic attackers),
``events.jsonl`` (the runner).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Iterable

from common.jsonl import read_jsonl


class Event(str, Enum):
    """A record type and the fields every record of it carries."""

    def __new__(cls, value: str, fields: tuple[str, ...] = ()):
        member = str.__new__(cls, value)
        member._value_ = value
        member.fields = fields
        return member

    # agents
    ROUND = "round", ("node", "round", "accuracy", "loss", "train_loss", "received_from", "missing", "attack")
    REJOINED = "rejoined", ("node", "checkpoint_round", "round")
    # traffic attackers
    TRAFFIC_SENT = "traffic_sent", ("kind", "src_ip", "dst_ip", "rate_pps")
    # controllers
    STARTED = "started", ("domain", "pid", "poll_interval", "restored", "banned", "down_links")
    READY = "ready", ("domain", "dpid", "switch")
    SWITCH_DISCONNECTED = "switch_disconnected", ("dpid",)
    SWITCH_REJECTED = "switch_rejected", ("dpid", "why")
    PACKET_IN_UNPARSED = "packet_in_unparsed", ("dpid", "in_port", "bytes", "why")
    REPORT_REJECTED = "report_rejected", ("from", "bytes", "why")
    HEARTBEAT = "heartbeat", ()  # controllers' and inspection services' beats: their own counters
    COUNTERS = "counters", ("requested_at", "all_rules", "domain", "dpid", "hosts", "transit", "banned_transit")
    LINK_UP = "link_up", ("link", "origin")
    LINK_DOWN = "link_down", ("link", "origin")
    NOTICE_SENT = "notice_sent", ("to", "kind", "bytes")
    NOTICE_RECEIVED = "notice_received", ("origin", "seq", "kind", "bytes")
    NOTICE_REJECTED = "notice_rejected", ("from", "bytes", "why")
    NOTICE_DUPLICATE = "notice_duplicate", ("from", "bytes", "why")
    DECISION_REFUSED = "decision_refused", ("origin", "seq", "kind", "why")
    EQUIVOCATION = "equivocation", ("origin", "seq", "held", "other")
    LEDGER_SYNC = "ledger_sync", ("peer", "sent", "asked_back")
    ACCUSATION = "accusation", ("domain", "node", "round", "score", "features")
    BYZANTINE_ACT = "byzantine_act", ("act", "round", "origin", "seq", "to", "kind", "expected")
    DEFENSE_STATS = "defense_stats", ("detector_cpu_s", "notice_bytes_sent", "notice_bytes_received", "banned")
    SCORES = "scores", ("stream", "round", "warming_up", "threshold", "scores")
    VERDICT = "verdict", ("node", "stream", "round", "evidence")
    ECHO = "echo", ("node", "round", "aggregated", "set_aside")
    BAN = "ban", ("domain", "node", "stream", "round", "score", "evidence", "origin", "features")
    UNBAN = "unban", ("domain", "node", "origin")
    FATAL = "fatal", ("handler",)
    # inspection services
    INSPECTOR_STARTED = "inspector_started", ("domain",)
    SEGMENT_UNPARSED = "segment_unparsed", ("bytes", "why")
    FRAME_VIOLATION = "frame_violation", ("sender", "why")
    UPDATE_FEATURES = "update_features", ("round", "features", "violations")
    STREAM_REJECTED = "stream_rejected", ("why",)
    # the runner
    NETWORK_UP = "network_up", ("datapath",)
    ATTACK_PLAN = "attack_plan", ("attacks", "malicious")
    AGENTS_STARTED = "agents_started", ("nodes",)
    AGENTS_READY = "agents_ready", ("nodes", "absent", "seconds")
    ATTACK = "attack", ("node", "kind", "category")
    AGENT_DIED = "agent_died", ("node", "exit_code")
    AGENT_REJOINED = "agent_rejoined", ("node",)
    SERVICE_STALLED = "service_stalled", ("service",)
    SERVICE_LIVE = "service_live", ("service",)
    FAULT = "fault", ("kind", "started")
    FAULT_ENDED = "fault_ended", ("kind",)
    TIMEOUT = "timeout", ("nodes",)
    TEARDOWN = "teardown", ()


def event(kind: Event, now: float, /, **fields) -> dict:
    """A record of ``kind`` at ``now``; a required field missing is a ValueError naming it."""
    missing = [name for name in kind.fields if name not in fields]
    if missing:
        raise ValueError(f"a {kind.value!r} record needs {missing}")
    return {"type": kind.value, "time": now, **fields}


def of_kind(records: Iterable[dict], *kinds: Event) -> list[dict]:
    """The records of those kinds, in order."""
    wanted = {kind.value for kind in kinds}
    return [r for r in records if r.get("type") in wanted]


def read_events(path: Path | str, *kinds: Event) -> list[dict]:
    """The records of those kinds in a JSON-lines file (none if it does not exist)."""
    return of_kind(read_jsonl(path), *kinds)

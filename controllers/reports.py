"""Inspection reports: what a domain's inspection service tells its own controller, once a round.

A report is JSON (``seq``, ``round``, per-sender update ``features``, per-sender frame
``violations``, and the update features of ``remote`` senders whose models crossed a border into the
domain) followed by an 8-byte tag (:func:`message_tag`) under the key the domain's inspector and
controller share (:mod:`common.keys`). The controller's report port listens on loopback, where
any local user can send to it, so :meth:`ReportChannel.open` checks the tag before it parses a
byte, then the shape of every field, then that ``seq`` rose: a forged, garbled or replayed
report is a :class:`~controllers.coordination.MessageError`, never a ban or a crash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass, field

from controllers.coordination import MessageError
from controllers.features import UPDATE_FEATURES

MAX_REPORT_BYTES = 60_000
"""A report of a few dozen senders is a few KB; a datagram is at most 64 KB."""

TAG_BYTES = 8


def message_tag(key: bytes, body: bytes) -> bytes:
    """A report's tag: HMAC-SHA256 under the inspector's and controller's key, truncated."""
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


@dataclass(frozen=True)
class InspectionReport:
    round: int
    features: dict[str, dict[str, float]]
    violations: dict[str, list[str]] = field(default_factory=dict)
    """Frames a sender published that no honest agent could: why, per frame."""
    remote: dict[str, dict[str, float]] = field(default_factory=dict)
    """Update features of other domains' senders *of the round before*, from what crossed the
    domain's borders (:func:`controllers.inspector.remote_report`): the evidence of an accusation."""
    inputs: dict[str, list[str]] = field(default_factory=dict)
    """Per local sender of ``features``, the senders whose models of the round before it was seen to
    receive: where its update started, so an echo of a since-banned sender's model is told apart
    (:meth:`controllers.defense.DomainDefense.on_round`)."""


class ReportChannel:
    """One end of the inspector-to-controller channel of a domain.

    The inspector's numbers start at its start time in microseconds, so a restarted inspector
    never reuses one; the controller keeps the highest it accepted (in its persisted state).
    """

    def __init__(self, key: bytes, seq: int | None = None, seen: int = 0) -> None:
        self.key = key
        self.seq = int(time.time() * 1e6) if seq is None else seq
        self.seen = seen

    def seal(self, report: InspectionReport) -> bytes:
        self.seq += 1
        body = json.dumps({"seq": self.seq, "round": report.round, "features": report.features,
                           "violations": report.violations, "remote": report.remote,
                           "inputs": report.inputs}, sort_keys=True).encode()
        return body + message_tag(self.key, body)

    def open(self, data: bytes) -> InspectionReport:
        if not TAG_BYTES < len(data) <= MAX_REPORT_BYTES:
            raise MessageError(f"{len(data)} bytes is not the size of an inspection report")
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        if not hmac.compare_digest(tag, message_tag(self.key, body)):
            raise MessageError("tag does not verify: a forged or altered inspection report")
        try:
            fields = json.loads(body)
        except ValueError as error:
            raise MessageError(f"not JSON: {error}") from None
        report = _checked(fields)
        if fields["seq"] <= self.seen:
            raise MessageError(f"replayed: seq {fields['seq']}, already accepted up to {self.seen}")
        self.seen = fields["seq"]
        return report


def _checked(fields) -> InspectionReport:
    """The report a verified body describes, or the first field that is not what it must be."""
    if not isinstance(fields, dict) or set(fields) != {"seq", "round", "features", "violations", "remote", "inputs"}:
        raise MessageError("not an inspection report: wrong fields")
    for name in ("seq", "round"):
        if not isinstance(fields[name], int) or isinstance(fields[name], bool) or fields[name] < 0:
            raise MessageError(f"{name} must be a non-negative integer")
    for name in ("features", "remote"):
        if not isinstance(fields[name], dict) or not all(
                isinstance(f, dict) and set(f) == set(UPDATE_FEATURES)
                and all(isinstance(v, (float, int)) and math.isfinite(v) and 0 <= v <= 1 for v in f.values())
                for f in fields[name].values()):
            raise MessageError(f"{name} must map senders to {', '.join(UPDATE_FEATURES)} in [0, 1]")
    for name in ("violations", "inputs"):
        if not isinstance(fields[name], dict) or not all(
                isinstance(v, list) and all(isinstance(item, str) for item in v) for v in fields[name].values()):
            raise MessageError(f"{name} must map senders to lists of strings")
    return InspectionReport(fields["round"], fields["features"], fields["violations"], fields["remote"],
                            fields["inputs"])

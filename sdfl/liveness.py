"""Which of a run's services stopped showing signs of life, when, and for how long (pure).

Controllers and inspection services write a ``heartbeat`` record every second or so; the
runner reads when each last wrote (its file's modification time) and whether ``ovs-vswitchd``
answers a control request, and feeds both here. A service silent for ``stall_after_s`` is
*stalled* from its last sign of life until its next one; every stall is kept for
``summary.json`` and the report, named by service, so a late ban or a slow round can be told
from a hung process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stall:
    service: str
    start: float
    end: float | None = None

    def to_record(self) -> dict:
        return {"service": self.service, "start": self.start, "end": self.end,
                "seconds": None if self.end is None else round(self.end - self.start, 2)}


class LivenessWatch:
    def __init__(self, stall_after_s: float = 3.0) -> None:
        self.stall_after_s = stall_after_s
        self.last: dict[str, float] = {}
        self.open: dict[str, Stall] = {}
        self.stalls: list[Stall] = []

    def alive(self, service: str, when: float) -> str | None:
        """A sign of life of ``service`` at ``when``; a message if it ends a stall."""
        self.last[service] = max(when, self.last.get(service, when))
        stall = self.open.get(service)
        if stall is None or when <= stall.start:
            return None
        del self.open[service]
        stall.end = when
        return f"{service} is live again after {stall.end - stall.start:.1f} s"

    def forget(self, service: str) -> None:
        """Stop watching a service that is down on purpose (a fault killed it)."""
        self.last.pop(service, None)
        stall = self.open.pop(service, None)
        if stall is not None:
            self.stalls.remove(stall)

    def check(self, now: float) -> list[str]:
        """Messages for the services that have just stalled."""
        messages = []
        for service, last in sorted(self.last.items()):
            if service not in self.open and now - last >= self.stall_after_s:
                self.open[service] = stall = Stall(service, last)
                self.stalls.append(stall)
                messages.append(f"{service} stalled: no sign of life for {now - last:.1f} s")
        return messages

    def report(self, now: float) -> list[dict]:
        """Every stall of the run; one still open ends at ``now`` as far as anyone knows."""
        return [{**s.to_record(), "still_stalled": s.end is None} if s.end is not None
                else {**Stall(s.service, s.start, now).to_record(), "still_stalled": True} for s in self.stalls]

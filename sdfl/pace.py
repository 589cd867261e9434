"""How far a long run is: elapsed time and what remains at the pace so far."""

from __future__ import annotations


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def pace(done: int, total: int, elapsed_s: float) -> str:
    """``'1 min 05 s, about 2 min 10 s left'`` once ``done`` of ``total`` took ``elapsed_s``."""
    if done <= 0:
        return duration(elapsed_s)
    if done >= total:
        return f"{duration(elapsed_s)}, done"
    return f"{duration(elapsed_s)}, about {duration(elapsed_s / done * (total - done))} left"

"""Typed settings with defaults and checks, shared by the scenario file and the attack catalog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the key."""


@dataclass(frozen=True)
class Field:
    kind: type
    default: Any
    check: Callable[[Any], str | None] | None = None
    help: str = ""


def between(low, high) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def one_of(*choices) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


def positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def strings(v) -> str | None:
    return None if all(isinstance(item, str) for item in v) else "must be a list of strings"


def coerce(value: Any, field: Field, where: str) -> Any:
    """``value`` as the field's type (ints widen to floats), checked; else a ScenarioError."""
    if field.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (field.kind in (int, float) and isinstance(value, bool)) or not isinstance(value, field.kind):
        raise ScenarioError(f"{where} must be {field.kind.__name__}, got {value!r}")
    problem = field.check(value) if field.check else None
    if problem:
        raise ScenarioError(f"{where} {problem}, got {value!r}")
    return value

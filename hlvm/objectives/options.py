"""An objective's options: each one's default and the values it takes, checked with one line naming the problem.

hlvm's own: the papers' code takes its settings from ``argparse``; here every
objective module lists its options (``OPTIONS``) with their defaults, and
:func:`check_value` refuses a value of the wrong kind with a
:class:`hlvm.errors.ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hlvm.errors import ConfigError

__all__: list[str] = []


@dataclass(frozen=True)
class Opt:
    """One objective option: its default and what values it takes."""

    default: Any
    kind: str = "float"  # float | int | bool | choice
    low: float = 0.0
    strict: bool = False  # > low instead of >= low
    choices: tuple[str, ...] = ()


def weight(default: float) -> Opt:
    """A term's weight: a finite number >= 0."""
    return Opt(default)


def check_value(name: str, key: str, spec: Opt, v: Any) -> Any:
    """``v`` as option ``key`` of objective ``name`` takes it (an int, a float, a bool, a choice), else ConfigError."""
    if spec.kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{name}'s {key} must be true or false, got {v!r}")
        return v
    if spec.kind == "choice":
        if v not in spec.choices:
            raise ConfigError(f"{name}'s {key} must be one of {', '.join(spec.choices)}, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        if spec.kind == "int":
            raise ConfigError(f"{name}'s {key} must be an integer >= {int(spec.low)}, got {v!r}")
        raise ConfigError(f"objective coefficient {key} must be a finite number >= 0, got {v!r}")
    if spec.kind == "int":
        if v != int(v) or v < spec.low:
            raise ConfigError(f"{name}'s {key} must be an integer >= {int(spec.low)}, got {v!r}")
        return int(v)
    if v < 0:
        raise ConfigError(f"objective coefficient {key} must be a finite number >= 0, got {v!r}")
    if spec.strict and not v > spec.low:
        raise ConfigError(f"{name}'s {key} must be > {spec.low:g}, got {v}")
    return float(v)

"""Python values <-> D-Bus variants: the one place a{sv} is built or unwrapped.

sdbus hands an a{sv} over as {key: (signature, value)}; the engine wants plain
values, and callers want typed ones back (t for counts, at for id lists...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Variant = tuple[str, object]


def plain(values: Mapping[str, Variant]) -> dict[str, Any]:
    """a{sv} -> plain values."""
    return {key: value for key, (_sig, value) in values.items()}


def variants(info: Mapping[str, Any]) -> dict[str, Variant]:
    """Plain values -> a{sv}; None is left out (a{sv} has no null)."""
    return {key: _variant(value) for key, value in info.items() if value is not None}


def _variant(value: object) -> Variant:
    sig = _signature(value)
    if isinstance(value, list | tuple):
        return sig, [str(v) for v in value] if sig == "as" else list(value)
    if sig == "s":
        return sig, str(value)
    return sig, value


def _signature(value: object) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "t" if value >= 0 else "x"
    if isinstance(value, float):
        return "d"
    if isinstance(value, list | tuple):
        return "at" if _int_list(list(value)) else "as"
    return "s"


def _int_list(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def usec(ts: float | None) -> int:
    """Unix time in seconds -> systemd's microsecond timestamps (0: never)."""
    return int(ts * 1_000_000) if ts else 0

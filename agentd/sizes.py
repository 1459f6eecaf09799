"""Sizes as systemd reads MemoryMax= (binary units): one grammar for agentd's
templates and limits and for agentctl's options.

Dependency-free: agentctl imports it without the engine.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'512M' -> bytes (also 512MiB, 512MB, 1.5G; K, M, G, T are powers of 1024).

    ValueError, with a message for a person, if TEXT is not a positive size."""
    m = _SIZE_RE.match(text.strip().upper())
    if not m:
        raise ValueError(f"invalid size {text!r}: use e.g. 512M or 2G")
    try:
        value = int(Decimal(m.group(1)) * _UNITS[m.group(2)])
    except InvalidOperation:
        raise ValueError(f"invalid size {text!r}: use e.g. 512M or 2G") from None
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be more than zero")
    return value

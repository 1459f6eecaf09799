"""agentctl's parameter types and option callbacks: text on the command line -> values.

Sizes (--memory-max), percentages (--cpu-quota), task ids and repeatable
options that also take comma-separated lists. A bad value is a usage error
(exit 2) raised by click before any call reaches agentd.

parse_size is agentctl's own on purpose: agentd.templates.parse_size reads
template files with a narrower grammar (whole numbers, K/M/G/T only), while
the command line has always also taken 1.5G, 512MiB and 512MB and refused 0.
Importing agentd's would change what `agent create --memory-max` accepts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?$")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'512M' -> bytes, binary units as systemd reads MemoryMax= (also 512MiB, 1.5G)."""
    m = _SIZE_RE.match(text.strip().upper())
    if not m:
        raise ValueError(f"invalid size {text!r}: use e.g. 512M or 2G")
    try:
        value = int(Decimal(m.group(1)) * _SIZE_UNITS[m.group(2)])
    except InvalidOperation:
        raise ValueError(f"invalid size {text!r}: use e.g. 512M or 2G") from None
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be more than zero")
    return value


class SizeType(click.ParamType):
    """A size in bytes, written as parse_size reads it."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class PercentType(click.ParamType):
    """A positive percentage: 50 or 150%."""

    name = "PCT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().removesuffix("%")
        if not text.isdigit() or int(text) <= 0:
            self.fail(f"invalid percentage {value!r}: use e.g. 50 or 150%", param, ctx)
        return int(text)


class TaskIdType(click.ParamType):
    """A task id as `task submit` prints it (a leading '#' is accepted)."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().removeprefix("#")
        if not (text.isascii() and text.isdigit()) or int(text) >= 1 << 64:
            self.fail(
                f"invalid task id {value!r}: a number, as `task submit` prints it", param, ctx
            )
        return int(text)


TASK_ID = TaskIdType()


def split(values: Sequence[str]) -> list[str]:
    """Repeatable options also take comma-separated lists: --needs a,b == --needs a --needs b."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def split_option(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> list[str]:
    """click callback: a repeatable option's values, commas split."""
    return split(values)


def split_ids(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> list[int]:
    """click callback: a repeatable option's task ids, commas split."""
    return [TASK_ID.convert(v, param, ctx) for v in split(values)]

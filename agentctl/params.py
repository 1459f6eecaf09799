"""agentctl's parameter types and option callbacks: text on the command line -> values.

Sizes (--memory-max), percentages (--cpu-quota), task and memory chunk ids,
users (--owner) and repeatable options that also take comma-separated lists.
A bad value is a usage error (exit 2) raised by click before any call reaches
agentd.

Sizes are read by agentd.sizes.parse_size, the one grammar agentd's templates
use too (512M, 512MiB, 1.5G; never 0).
"""

from __future__ import annotations

import pwd
from collections.abc import Sequence
from typing import Any

import click

from agentd.sizes import parse_size


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
    what = "task id"
    printed_by = "task submit"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().removeprefix("#")
        if not (text.isascii() and text.isdigit()) or int(text) >= 1 << 64:
            self.fail(
                f"invalid {self.what} {value!r}: a number, as `{self.printed_by}` prints it",
                param,
                ctx,
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


class ChunkIdType(click.ParamType):
    """A memory chunk id as `memory list` and `memory search` print it ('#' accepted)."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().removeprefix("#")
        if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 1 << 64:
            self.fail(
                f"invalid chunk id {value!r}: a number, as `memory list` prints it", param, ctx
            )
        return int(text)


CHUNK_ID = ChunkIdType()


class UserType(click.ParamType):
    """A user, by UID or by a name this machine knows; the value is the UID."""

    name = "UID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit() and int(text) < 0xFFFFFFFF:
            return int(text)
        try:
            return pwd.getpwnam(text).pw_uid
        except KeyError:
            self.fail(f"no user {value!r}: give a UID or a user name", param, ctx)

"""A pytest plugin, after cockpit's: a test that leaves asyncio tasks or child
processes behind fails.

asyncio.run() cancels whatever is still pending when its main coroutine
returns, which hides a forgotten task; so every loop a test creates is one of
ours, and it notes the tasks still pending at the moment the main coroutine
finished. Children are compared by parent PID in /proc before and after.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

GUARDED = ("unit", "inference")  # tests/<dir>: integration tests own a machine process


class _Loop(asyncio.SelectorEventLoop):
    def __init__(self, leaks: list[str]) -> None:
        super().__init__()
        self._leaks = leaks
        self._main_done = False

    def run_until_complete(self, future: Any) -> Any:
        try:
            return super().run_until_complete(future)
        finally:
            if not self._main_done:  # asyncio.run's first call runs main
                self._main_done = True
                self._leaks += [repr(t) for t in asyncio.all_tasks(self) if not t.done()]


class _Policy(asyncio.DefaultEventLoopPolicy):
    def __init__(self) -> None:
        super().__init__()
        self.leaks: list[str] = []

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _Loop(self.leaks)


def children() -> set[int]:
    me, out = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if Path(str(request.node.fspath)).parent.name not in GUARDED:
        yield
        return
    before = children()
    policy, old = _Policy(), asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(policy)
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(old)
    leaked = children() - before
    problems = []
    if policy.leaks:
        problems.append(f"left asyncio tasks pending: {policy.leaks}")
    if leaked:
        problems.append(f"left child processes running: {sorted(leaked)}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)

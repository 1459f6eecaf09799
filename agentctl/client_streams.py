"""What agentd pushes to agentctl rather than answers: TaskChanged signals gathered
for `task wait`, and the JSON lines of a stream agentd hands over as a file
descriptor (chat, model reload).

AgentdClient (agentctl.client) subscribes and calls; this module only collects
and reads, so it needs neither sdbus nor the client: sdbus stays in
agentctl.client alone (tests/unit/test_agentctl_layout.py), and so does the
translation of every failure into ClientError (translate, _call, and the error
lines of a stream), which is why json_lines yields an error line like any other.
Split out of agentctl.client to keep it under the 500-line house limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncGenerator
from typing import Any

from agentd.api.interfaces import BUS_NAME

STREAM_LINE_LIMIT = 1 << 20  # bytes of one JSON line (a chat token event is far smaller)


class TaskWatch:
    """TaskChanged signals seen since the watch began, for `task wait`.

    Made by AgentdClient.watch_tasks, whose matches are in place before the
    caller's first DescribeTask, so a change in between is not missed. agentd
    leaving or taking its bus name (a restart: signals are lost meanwhile)
    wakes every waiter, which should then ask again.
    """

    def __init__(self) -> None:
        self.changed: set[int] = set()
        self.restarted = False
        self._wake = asyncio.Event()

    def on_task_changed(self, msg: Any) -> None:
        task, _status, _event = msg.get_contents()
        self.changed.add(int(task))
        self._wake.set()

    def on_owner_changed(self, msg: Any) -> None:
        bus_name, _old, _new = msg.get_contents()
        if bus_name == BUS_NAME:
            self.restarted = True
            self._wake.set()

    async def wait(self, task: int, timeout: float) -> bool:
        """Until TASK changed (or agentd restarted) since the last call, at most TIMEOUT
        seconds. True if so (the flag is consumed), False if the time ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while task not in self.changed and not self.restarted:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
        self.changed.discard(task)
        self.restarted = False
        return True


async def json_lines(fd: int) -> AsyncGenerator[dict[str, Any], None]:
    """Each JSON line of the stream on FD (which it takes over and closes) until
    the end of the stream; the caller decides which line ends it."""
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=STREAM_LINE_LIMIT)
    try:
        while line := await reader.readline():
            yield json.loads(line)
    finally:
        writer.close()

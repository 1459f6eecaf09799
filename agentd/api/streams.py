"""Streams handed out as file descriptors: chat tokens, reload progress, an
agent's streamed thinking (Runtime.ThinkStream).

A stream goes back as the read end of a fresh socketpair; agentd writes JSON
lines on its end from a background task. If the caller closes its end, the
next write fails, the stream is closed, and the request is cancelled in the
inference service. An agentd error in the middle of a stream is its last line,
{"event": "error", "error": NAME, "message": ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket

from ..errors import AgentdError
from ..modelclient import ModelStream

log = logging.getLogger("agentd")


class Streams:
    """Background writers of JSON-line streams handed out as file descriptors."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def open(self, events: ModelStream) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.shutdown(socket.SHUT_WR)  # the caller only reads
        ours.shutdown(socket.SHUT_RD)
        task = asyncio.get_running_loop().create_task(self._pump(ours, events))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        fd = theirs.detach()
        # sd-bus duplicates the descriptor into the reply, which is built once
        # this method returns: close ours on the next loop turn.
        asyncio.get_running_loop().call_soon(_close, fd)
        return fd

    async def _pump(self, sock: socket.socket, events: ModelStream) -> None:
        _reader, writer = await asyncio.open_connection(sock=sock)
        try:
            async with contextlib.aclosing(events):
                try:
                    async for event in events:
                        writer.write(json.dumps(event).encode() + b"\n")
                        await writer.drain()
                except AgentdError as e:
                    error = {"event": "error", "error": e.name, "message": str(e)}
                    writer.write(json.dumps(error).encode() + b"\n")
                    await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller went away: closing the events cancels the request
        except Exception:
            log.exception("stream writer failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        socket.close(fd)

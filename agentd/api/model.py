"""The Model interface: the shared model, chat, usage and quotas.

A stream (chat tokens, reload progress) goes back as the read end of a fresh
socketpair; agentd writes JSON lines on its end from a background task. If
the caller closes its end, the next write fails, the stream is closed, and the
request is cancelled in the inference service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

from sdbus import dbus_method_async_override

from ..errors import AgentdError
from ..modelclient import ModelStream
from ..quotas import Meter
from ..thinking import Thinking, parse_messages, parse_options
from .access import Callers, rule
from .interfaces import ModelInterface
from .marshal import Variant, plain, variants
from .rows import QuotaRow, UsageRow

log = logging.getLogger("agentd")


def flatten(show: dict[str, Any]) -> dict[str, Any]:
    """The service's show answer as one flat dict (its sections' keys are distinct)."""
    out: dict[str, Any] = {"state": show.get("state", "unknown")}
    for section in ("model", "config", "stats"):
        out.update(show.get(section) or {})
    return out


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


class ModelObject(ModelInterface):
    def __init__(self, thinking: Thinking, meter: Meter, callers: Callers) -> None:
        super().__init__()
        self.thinking = thinking
        self.meter = meter
        self.callers = callers
        self.streams = Streams()

    @dbus_method_async_override()
    @rule("model.show")
    async def describe(self) -> dict[str, Variant]:
        return variants(flatten(await self.thinking.show()))

    @dbus_method_async_override()
    @rule("model.reload")
    async def reload(self, path: str) -> int:
        events = self.thinking.reload(await self.callers.current(), path)
        return self.streams.open(events)

    @dbus_method_async_override()
    @rule("model.chat")
    async def chat(self, agent: str, messages: str, options: dict[str, Variant]) -> int:
        caller = await self.callers.current()
        target = self.thinking.chat_agent(caller, agent)
        events = self.thinking.generate(
            target, caller.uid, "chat", parse_messages(messages), parse_options(plain(options))
        )
        return self.streams.open(events)

    @dbus_method_async_override()
    @rule("quota.list")
    async def list_quotas(self) -> list[QuotaRow]:
        return [QuotaRow(*q.as_row()) for q in self.meter.quotas(await self.callers.current())]

    @dbus_method_async_override()
    @rule("usage.list")
    async def list_usage(self, days: int) -> list[UsageRow]:
        return [UsageRow(*r) for r in self.meter.usage_by_day(await self.callers.current(), days)]

    @dbus_method_async_override()
    @rule("quota.set")
    async def set_quota(self, kind: str, subject: str, tokens: int, period: str) -> None:
        self.meter.set(await self.callers.current(), kind, subject, tokens, period)

    @dbus_method_async_override()
    @rule("quota.reset")
    async def reset_quota(self, kind: str, subject: str) -> None:
        self.meter.reset(await self.callers.current(), kind, subject)

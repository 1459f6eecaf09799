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
from ..models.admin import ModelAdmin
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
    # the embedding model (agent memory): its keys would clash with the chat model's
    for key, value in (show.get("embedding") or {}).items():
        out[f"embedding_{key}"] = value
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
    def __init__(
        self, thinking: Thinking, meter: Meter, callers: Callers, admin: ModelAdmin | None = None
    ) -> None:
        super().__init__()
        self.thinking = thinking
        self.meter = meter
        self.callers = callers
        self.streams = Streams()
        self.admin = admin  # agentd.models: the catalog's admin operations

    def job_event(self, event: dict[str, Any]) -> None:
        """agentd.models.admin's job events as signals."""
        if event["event"] == "progress":
            unit = "permille" if event["phase"] == "loading" else "bytes"
            self.model_job_progress.emit(
                (event["job"], event["model"], event["phase"], unit, event["done"], event["total"])
            )
        else:
            self.model_job_removed.emit(
                (event["job"], event["model"], event["result"], event["message"])
            )

    def _admin(self) -> ModelAdmin:
        if self.admin is None:
            raise AgentdError("model administration is not available")
        return self.admin

    @dbus_method_async_override()
    @rule("model.list")
    async def list_models(self) -> str:
        return json.dumps(self._admin().list(await self.callers.current()))

    @dbus_method_async_override()
    @rule("model.install")
    async def install_model(self, name: str, source: str) -> int:
        return self._admin().install(await self.callers.current(), name, source)

    @dbus_method_async_override()
    @rule("model.install")
    async def install_model_file(self, path: str, name: str) -> int:
        return self._admin().install_file(await self.callers.current(), path, name)

    @dbus_method_async_override()
    @rule("model.use")
    async def use_model(self, name: str) -> int:
        return self._admin().use(await self.callers.current(), name)

    @dbus_method_async_override()
    @rule("model.remove")
    async def remove_model(self, name: str) -> None:
        self._admin().remove(await self.callers.current(), name)

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

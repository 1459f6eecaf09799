"""The Model interface: the shared model, chat, usage and quotas.

A stream (chat tokens, reload progress) goes back as a file descriptor
(agentd.api.streams).
"""

from __future__ import annotations

import json
from typing import Any

from sdbus import dbus_method_async_override

from ..errors import AgentdError
from ..limits import NAME, SHORT
from ..models.admin import ModelAdmin
from ..quotas import Meter
from ..thinking import Thinking, parse_messages, parse_options
from .access import Callers, rule
from .interfaces import ModelInterface
from .marshal import Variant, plain, variants
from .rows import QuotaRow, UsageRow
from .streams import Polled, Streams

MAX_CHAT_WAIT_MS = 20_000  # ChatRead's long poll: under sd-bus's 25 s default call timeout


def flatten(show: dict[str, Any]) -> dict[str, Any]:
    """The service's show answer as one flat dict (its sections' keys are distinct)."""
    out: dict[str, Any] = {"state": show.get("state", "unknown")}
    for section in ("model", "config", "stats"):
        out.update(show.get(section) or {})
    # the embedding model (agent memory): its keys would clash with the chat model's
    for key, value in (show.get("embedding") or {}).items():
        out[f"embedding_{key}"] = value
    return out


class ModelObject(ModelInterface):
    def __init__(
        self, thinking: Thinking, meter: Meter, callers: Callers, admin: ModelAdmin | None = None
    ) -> None:
        super().__init__()
        self.thinking = thinking
        self.meter = meter
        self.callers = callers
        self.streams = Streams()
        self.polled = Polled()  # ChatStart/ChatRead: Cockpit's page
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
    @rule("model.chat")
    async def chat_start(self, agent: str, messages: str, options: dict[str, Variant]) -> int:
        caller = await self.callers.current()
        target = self.thinking.chat_agent(caller, agent)
        self.polled.room(caller.uid)
        events = self.thinking.generate(
            target, caller.uid, "chat", parse_messages(messages), parse_options(plain(options))
        )
        return await self.polled.open(caller.uid, events)

    @dbus_method_async_override()
    @rule("model.chat_stream")
    async def chat_read(self, stream: int, wait_ms: int) -> str:
        caller = await self.callers.current()
        wait_s = min(wait_ms, MAX_CHAT_WAIT_MS) / 1000
        return json.dumps(await self.polled.read(caller.uid, stream, wait_s))

    @dbus_method_async_override()
    @rule("model.chat_stream")
    async def chat_cancel(self, stream: int) -> None:
        await self.polled.cancel((await self.callers.current()).uid, stream)

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

    @dbus_method_async_override()
    @rule("plan.list")
    async def list_plans(self) -> str:
        plans = self.meter.registry.plans
        return json.dumps(plans.listing(await self.callers.current()), ensure_ascii=False)

    @dbus_method_async_override()
    @rule("plan.show", limits={"plan": NAME, "user": NAME})
    async def describe_plan(self, plan: str, user: str) -> str:
        plans = self.meter.registry.plans
        return json.dumps(plans.show(await self.callers.current(), plan, user), ensure_ascii=False)

    @dbus_method_async_override()
    @rule("plan.assign", limits={"kind": SHORT, "subject": NAME, "plan": NAME})
    async def assign_plan(self, kind: str, subject: str, plan: str) -> None:
        self.meter.registry.plans.assign(await self.callers.current(), kind, subject, plan)

"""AgentdClient's calls of the Model interface (the model, chat, quotas, quota
plans and usage), as a mixin.

Split out of agentctl.client to keep it under the 500-line house limit. Like
agentctl.client_sessions: every call goes through agentctl.client's _call (the
one translation point), and a stream agentd hands over (chat, model reload)
through its _json_stream, where an error line becomes a ClientError;
AgentdClient hands both over as class attributes and makes the proxy `model`.
`agentctl model install/use/rm` drive the proxy's jobs themselves
(agentctl.commands.model), through the same _call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from . import marshal
from .marshal import CHAT_OPTIONS, unwrap, variants


class ModelCalls:
    model: Any  # the ModelInterface proxy, made by AgentdClient
    _translated: Callable[[Awaitable[Any]], Awaitable[Any]]
    _stream: Callable[[int], AsyncIterator[dict[str, Any]]]
    _reply: Callable[[str, type[Any], str], Any]

    async def describe_model(self) -> dict[str, Any]:
        return unwrap(await self._translated(self.model.describe()))

    async def reload_model(self, path: str = "") -> AsyncIterator[dict[str, Any]]:
        """Progress events, then done (or a ClientError)."""
        async for event in self._stream(await self._translated(self.model.reload(path))):
            yield event

    async def chat(
        self, agent: str, messages: list[dict[str, str]], options: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """queued, token... then done; an error line becomes a ClientError."""
        fd = await self._translated(
            self.model.chat(
                agent, json.dumps(messages), variants(options or {}, CHAT_OPTIONS, "chat option")
            )
        )
        async for event in self._stream(fd):
            yield event

    async def list_quotas(self) -> list[dict[str, Any]]:
        return marshal.quotas(await self._translated(self.model.list_quotas()))

    async def list_usage(self, days: int = 7) -> list[dict[str, Any]]:
        return marshal.usage(await self._translated(self.model.list_usage(days)))

    async def set_quota(self, kind: str, subject: str, tokens: int, period: str) -> None:
        await self._translated(self.model.set_quota(kind, subject, tokens, period))

    async def reset_quota(self, kind: str, subject: str) -> None:
        await self._translated(self.model.reset_quota(kind, subject))

    # -- quota plans (agentd.plans) -------------------------------------------------
    async def list_plans(self) -> dict[str, Any]:
        """plans, default_plan, yours and (for an administrator) assignments."""
        found: dict[str, Any] = self._reply(
            await self._translated(self.model.list_plans()), dict, "ListPlans"
        )
        return found

    async def describe_plan(self, plan: str = "", user: str = "") -> dict[str, Any]:
        """Plan PLAN; or, PLAN empty, USER's plan (empty: the caller's)."""
        found: dict[str, Any] = self._reply(
            await self._translated(self.model.describe_plan(plan, user)), dict, "DescribePlan"
        )
        return found

    async def assign_plan(self, kind: str, subject: str, plan: str) -> None:
        """Give user or group SUBJECT PLAN ("": take its plan away)."""
        await self._translated(self.model.assign_plan(kind, subject, plan))

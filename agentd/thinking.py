"""Agents think through the shared model, within their quotas.

Two ways in: an owner chats with an agent (its template's system prompt is
the persona; tokens stream back), and an agent's runtime asks the model while
it works on a task (one answer, optionally constrained to a JSON schema). Both
are checked against the agent's and its owner's quotas first and metered in
the usage table after, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from .agent import Agent
from .audit import AuditLog
from .chat import MAX_CHARS, check_messages
from .errors import AgentdError, InvalidArgument, ModelUnavailable
from .modelclient import Interrupted, ModelClient, ModelStream
from .policy import Caller, Policy
from .quotas import Meter
from .registry import Registry
from .templates import Catalog

MAX_TOKENS = 4096
THINK_ATTEMPTS = 2  # a think is retried once if the service dies under it
THINK_TIMEOUT_S = 150  # under the runtime's D-Bus call timeout (agentd.runtime)


@dataclass(frozen=True)
class Options:
    max_tokens: int = 256
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    persona: bool = True

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.json_schema is not None:
            out["json_schema"] = self.json_schema
        return out


def parse_options(raw: dict[str, Any]) -> Options:
    unknown = set(raw) - {"max_tokens", "temperature", "json_schema", "persona"}
    if unknown:
        raise InvalidArgument(f"unknown option(s): {', '.join(sorted(unknown))}")
    max_tokens = raw.get("max_tokens", 256)
    temperature = raw.get("temperature", 0.0)
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise InvalidArgument(f"max_tokens must be 1..{MAX_TOKENS}")
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise InvalidArgument("temperature must be between 0 and 2")
    schema = raw.get("json_schema") or None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise InvalidArgument(f"json_schema is not JSON: {e}") from None
    if schema is not None and not isinstance(schema, dict):
        raise InvalidArgument("json_schema must be a JSON object")
    return Options(max_tokens, float(temperature), schema, bool(raw.get("persona", True)))


def parse_messages(text: str) -> list[dict[str, str]]:
    """JSON [{"role": ..., "content": ...}, ...] -> checked list (agentd.chat's rules)."""
    if len(text) > MAX_CHARS * 4:
        raise InvalidArgument("messages are too long")
    try:
        messages = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"messages are not JSON: {e}") from None
    try:
        return check_messages(messages)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


class Thinking:
    def __init__(
        self,
        registry: Registry,
        meter: Meter,
        client: ModelClient,
        audit: AuditLog,
        policy: Policy | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.registry = registry
        self.meter = meter
        self.client = client
        self.audit = audit
        self.policy = policy or registry.policy
        self.catalog = catalog or registry.catalog

    def _persona(self, agent: Agent, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The template's system prompt first, unless the caller gave one."""
        if messages and messages[0]["role"] == "system":
            return messages
        try:
            prompt = self.catalog.template(agent.template).system_prompt
        except AgentdError:  # template gone or broken: no persona
            prompt = ""
        prompt = prompt or f"You are {agent.name}, a helpful assistant."
        return [{"role": "system", "content": prompt}, *messages]

    def chat_agent(self, caller: Caller, name: str) -> Agent:
        """The agent CALLER may chat with: its owner's or an admin's."""
        return self.registry.get(caller, name, "model.chat")

    def generate(
        self,
        agent: Agent,
        actor_uid: int,
        kind: str,
        messages: list[dict[str, str]],
        options: Options,
        task_id: int | None = None,
    ) -> ModelStream:
        """Check the quotas now (QuotaExceeded before anything starts), then
        return the stream of the service's events."""
        self.meter.check(agent, actor_uid)
        if options.persona:
            messages = self._persona(agent, messages)
        request = {"op": "generate", "agent": agent.name, "messages": messages, **options.wire()}
        return self._stream(agent, kind, request, task_id)

    async def _stream(
        self, agent: Agent, kind: str, request: dict[str, Any], task_id: int | None
    ) -> ModelStream:
        """The usage row is written at the end whatever happens (ok, error, or
        the consumer went away, which cancels the request in the service)."""
        started = time.monotonic()
        prompt = completion = 0
        status = "cancelled"
        try:
            async with contextlib.aclosing(self.client.request(request)) as events:
                async for event in events:
                    if event.get("event") == "queued":
                        prompt = int(event.get("prompt_tokens", 0))
                    elif event.get("event") == "done":
                        prompt = int(event.get("prompt_tokens", prompt))
                        completion = int(event.get("completion_tokens", 0))
                        status = "ok"
                    yield event
        except Interrupted as e:
            completion, status = e.completion_tokens, "error"
            raise
        except Exception:
            status = "error"
            raise
        finally:
            if prompt or completion or status == "ok":
                self.meter.record(
                    agent, kind, prompt, completion, status, time.monotonic() - started, task_id
                )

    async def think(
        self,
        agent: Agent,
        messages: list[dict[str, str]],
        options: Options,
        task_id: int | None = None,
    ) -> dict[str, Any]:
        """One whole answer for the agent's runtime, within THINK_TIMEOUT_S."""
        try:
            return await asyncio.wait_for(
                self._think(agent, messages, options, task_id), THINK_TIMEOUT_S
            )
        except TimeoutError:
            raise ModelUnavailable(
                f"the model did not answer within {THINK_TIMEOUT_S} s (is it overloaded?)"
            ) from None

    async def _think(
        self, agent: Agent, messages: list[dict[str, str]], options: Options, task_id: int | None
    ) -> dict[str, Any]:
        """Retried once if the service dies under it: nothing was shown to anyone yet."""
        for attempt in range(1, THINK_ATTEMPTS + 1):
            try:
                stream = self.generate(agent, agent.uid, "think", messages, options, task_id)
                async with contextlib.aclosing(stream):  # closed now, not by the GC
                    async for event in stream:
                        if event.get("event") == "done":
                            return {
                                k: event[k]
                                for k in (
                                    "text",
                                    "finish_reason",
                                    "prompt_tokens",
                                    "completion_tokens",
                                )
                                if k in event
                            }
            except Interrupted:
                if attempt == THINK_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def show(self) -> dict[str, Any]:
        return await self.client.call({"op": "show"})

    def reload(self, caller: Caller, path: str) -> ModelStream:
        self.policy.check(caller, "model.reload")
        if path and not path.startswith("/"):
            raise InvalidArgument("the model path must be absolute")
        message: dict[str, Any] = {"op": "reload"}
        if path:
            message["path"] = path
        return self._reload(caller, path, message)

    async def _reload(self, caller: Caller, path: str, message: dict[str, Any]) -> ModelStream:
        result = "error"
        try:
            async with contextlib.aclosing(self.client.request(message)) as events:
                async for event in events:
                    if event.get("event") == "done":
                        result = "ok"
                    yield event
        finally:
            self.audit.append(
                "model.reload", actor_uid=caller.uid, result=result, path=path or "(configured)"
            )

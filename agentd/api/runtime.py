"""The Runtime interface: what an agent's runtime may ask, about itself only.

The caller's UID picks the agent; nothing in a call can name another one, and
a task it names (reports, Think's ``task`` option) must be one it holds the
claim of (else PermissionDenied, audited).
"""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..errors import InvalidArgument
from ..registry import Registry
from ..tasks.queue import TaskQueue
from ..thinking import Thinking, parse_messages, parse_options
from .access import Callers, rule
from .interfaces import RuntimeInterface, agent_path
from .marshal import Variant, plain, variants

MAX_CLAIM_WAIT_MS = 60_000


class RuntimeObject(RuntimeInterface):
    def __init__(
        self, registry: Registry, queue: TaskQueue, callers: Callers, thinking: Thinking
    ) -> None:
        super().__init__()
        self.registry = registry
        self.queue = queue
        self.callers = callers
        self.thinking = thinking

    @dbus_method_async_override()
    @rule("runtime.register")
    async def register(self) -> tuple[str, str, dict[str, Variant]]:
        agent = self.registry.register_runtime(await self.callers.current())
        self.queue.release(agent)  # a fresh runtime: earlier claims died with its predecessor
        return agent.name, agent_path(agent.name), variants(self.queue.settings(agent))

    @dbus_method_async_override()
    @rule("runtime.heartbeat")
    async def heartbeat(self) -> tuple[list[int], int]:
        agent = self.registry.heartbeat(await self.callers.current())
        return self.queue.renew(agent), self.queue.cfg.heartbeat_interval

    @dbus_method_async_override()
    @rule("task.claim")
    async def claim_task(self, timeout_ms: int) -> tuple[bool, dict[str, Variant]]:
        agent = self.registry.runtime_agent(await self.callers.current())
        wait = min(int(timeout_ms), MAX_CLAIM_WAIT_MS) / 1000
        task = await self.queue.claim_wait(agent, wait)
        if task is None:
            return False, {}
        return True, variants(
            {
                "id": task.id,
                "attempt": task.attempts,
                "title": task.title,
                "description": task.description,
                "exec": task.exec or "",
                "needs": list(task.needs),
                "notes": list(task.notes),
                "lease_seconds": self.queue.cfg.lease_seconds,
            }
        )

    @dbus_method_async_override()
    @rule("task.completed")
    async def complete_task(
        self, task: int, attempt: int, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        agent = self.registry.runtime_agent(await self.callers.current())
        await self.queue.complete(agent, task, attempt, result, list(artifacts))

    @dbus_method_async_override()
    @rule("task.failed")
    async def fail_task(
        self, task: int, attempt: int, error: str, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        agent = self.registry.runtime_agent(await self.callers.current())
        await self.queue.fail(agent, task, attempt, error, result, list(artifacts))

    @dbus_method_async_override()
    @rule("task.blocked")
    async def block_task(self, task: int, attempt: int, reason: str) -> None:
        agent = self.registry.runtime_agent(await self.callers.current())
        self.queue.block(agent, task, attempt, reason)

    @dbus_method_async_override()
    @rule("model.think")
    async def think(self, messages: str, options: dict[str, Variant]) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        raw = plain(options)
        task = raw.pop("task", None)
        if task is not None and (not isinstance(task, int) or isinstance(task, bool)):
            raise InvalidArgument("task must be a task id")
        if task is not None:  # usage is metered against it: only the agent's running task
            task = self.queue.thinking_on(agent, task)
        answer = await self.thinking.think(
            agent, parse_messages(messages), parse_options(raw), task
        )
        return json.dumps(answer)

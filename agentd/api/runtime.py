"""The Runtime interface: what an agent's runtime may ask, about itself only.

The caller's UID picks the agent; nothing in a call can name another one, and
a task it names (reports, Think's ``task`` option) must be one it holds the
claim of (else PermissionDenied, audited).

The batch calls (RegisterAndClaim, ClaimTasks, CompleteAndClaim) are the
single calls composed, under the single calls' policy actions and argument
bounds: each claim is a task.claimed audit row as ClaimTask's is, and a
refused completion is audited and answered exactly as CompleteTask's. Their
claims are bounded by the agent's free wip in the engine (the runtime need
not count), and their long polls by MAX_CLAIM_WAIT_MS, as ClaimTask's.
"""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..agent import Agent
from ..approvals import MAX_ARGUMENTS, Approvals
from ..errors import InvalidArgument, MemoryUnavailable
from ..goals.delegation import STEPS_BYTES, Delegation
from ..limits import NAME, SHORT, TEXT, Bound
from ..memory.memories import MAX_QUERY, MAX_REMEMBER, Memories
from ..messages import BODY_CHARS, MAX_RECEIVE, SUBJECT_CHARS, Mailbox
from ..policy import Caller
from ..registry import Registry
from ..tasks.model import Task
from ..tasks.queue import TaskQueue
from ..tasks.trace import MAX_QUESTION, MAX_STEP
from ..thinking import (
    MAX_EMBED_TEXT_BYTES,
    MAX_EMBED_TEXTS,
    Thinking,
    parse_messages,
    parse_options,
)
from ..usernet import UserNet
from .access import Callers, rule
from .interfaces import RuntimeInterface, agent_path
from .marshal import Variant, plain, variants
from .streams import Streams

MAX_CLAIM_WAIT_MS = 60_000
EMBED_TEXTS = Bound(
    MAX_EMBED_TEXT_BYTES,
    items=MAX_EMBED_TEXTS,
    depth=1,
    total=MAX_EMBED_TEXTS * MAX_EMBED_TEXT_BYTES,
)


class RuntimeObject(RuntimeInterface):
    approvals: Approvals | None = None  # set by agentd.daemon (approval gates)
    memories: Memories | None = None  # set by agentd.daemon (issue 13: memory)
    delegation: Delegation | None = None  # set by agentd.daemon (issue 14: delegation)
    mailbox: Mailbox | None = None  # set by agentd.daemon (issue 15: messages)
    usernet: UserNet | None = None  # set by agentd.daemon: online agents' egress
    streams: Streams | None = None  # set by agentd.daemon: ThinkStream's writers

    def __init__(
        self, registry: Registry, queue: TaskQueue, callers: Callers, thinking: Thinking
    ) -> None:
        super().__init__()
        self.registry = registry
        self.queue = queue
        self.callers = callers
        self.thinking = thinking

    @dbus_method_async_override()
    @rule("runtime.delegate", limits={"steps_json": Bound(STEPS_BYTES)})
    async def delegate(self, task: int, attempt: int, steps_json: str) -> list[int]:
        agent = self.registry.runtime_agent(await self.callers.current())
        assert self.delegation is not None
        return self.delegation.delegate(agent, task, attempt, steps_json)

    @dbus_method_async_override()
    @rule("runtime.delegated")
    async def delegated(self, task: int, timeout_ms: int) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        assert self.delegation is not None
        return json.dumps(await self.delegation.wait(agent, task, _wait(timeout_ms)))

    # -- messages (issue 15; agentd.messages) ------------------------------------------
    def _mailbox(self) -> Mailbox:
        if self.mailbox is None:
            raise InvalidArgument("messages are not enabled in this agentd")
        return self.mailbox

    @dbus_method_async_override()
    @rule(
        "runtime.send",
        limits={"to": NAME, "subject": Bound(SUBJECT_CHARS), "body": Bound(BODY_CHARS)},
    )
    async def send(self, to: str, subject: str, body: str) -> int:
        agent = self.registry.runtime_agent(await self.callers.current())
        return self._mailbox().send_from_agent(agent, to, subject, body)

    @dbus_method_async_override()
    @rule("runtime.receive")
    async def receive(self, max: int, timeout_ms: int) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        got = await self._mailbox().receive(agent, max, _wait(timeout_ms))
        return json.dumps(got, ensure_ascii=False)

    @dbus_method_async_override()
    @rule("runtime.receive", limits={"messages": Bound(0, items=MAX_RECEIVE, depth=1)})
    async def ack(self, messages: list[int]) -> int:
        agent = self.registry.runtime_agent(await self.callers.current())
        return self._mailbox().ack(agent, list(messages))

    @dbus_method_async_override()
    @rule("runtime.register")
    async def register(self) -> tuple[str, str, dict[str, Variant]]:
        agent = self._register(await self.callers.current())
        await self._network(agent)
        return agent.name, agent_path(agent.name), variants(self.queue.settings(agent))

    def _register(self, caller: Caller) -> Agent:
        agent = self.registry.register_runtime(caller)
        self.queue.release(agent)  # a fresh runtime: earlier claims died with its predecessor
        if self.mailbox is not None:  # and what it received but did not acknowledge
            self.mailbox.release(agent)
        return agent

    async def _network(self, agent: Agent) -> None:
        """An online agent in a namespace of its own gets its way out
        (agentd.usernet) before its runtime is told it is registered."""
        if self.usernet is not None:
            profile = self.registry.catalog.profile(agent.profile)
            await self.usernet.attach(agent.name, agent.unit, profile)

    @dbus_method_async_override()
    @rule("runtime.heartbeat")
    async def heartbeat(self) -> tuple[list[int], int]:
        agent = self.registry.heartbeat(await self.callers.current())
        return self.queue.renew(agent), self.queue.cfg.heartbeat_interval

    @dbus_method_async_override()
    @rule("runtime.register")
    async def register_and_claim(
        self, max: int
    ) -> tuple[str, str, dict[str, Variant], list[dict[str, Variant]]]:
        caller = await self.callers.current()
        agent = self._register(caller)
        await self._network(agent)
        self.queue.policy.screen(caller, "task.claim")  # what ClaimTasks would be asked
        settings = variants(self.queue.settings(agent))
        tasks = self._tasks(self.queue.claim_many(agent, max))
        return agent.name, agent_path(agent.name), settings, tasks

    @dbus_method_async_override()
    @rule("task.claim")
    async def claim_task(self, timeout_ms: int) -> tuple[bool, dict[str, Variant]]:
        agent = self.registry.runtime_agent(await self.callers.current())
        task = await self.queue.claim_wait(agent, _wait(timeout_ms))
        if task is None:
            return False, {}
        return True, self._task(task)

    @dbus_method_async_override()
    @rule("task.claim")
    async def claim_tasks(self, max: int, timeout_ms: int) -> list[dict[str, Variant]]:
        agent = self.registry.runtime_agent(await self.callers.current())
        return self._tasks(await self.queue.claim_many_wait(agent, max, _wait(timeout_ms)))

    @dbus_method_async_override()
    @rule("task.completed")
    async def complete_and_claim(
        self,
        task: int,
        attempt: int,
        result: str,
        artifacts: list[tuple[str, str]],
        max: int,
        timeout_ms: int,
    ) -> list[dict[str, Variant]]:
        caller = await self.callers.current()
        agent = self.registry.runtime_agent(caller)
        self.queue.policy.screen(caller, "task.claim")  # what ClaimTasks would be asked
        claimed = await self.queue.complete_and_claim(
            agent, task, attempt, result, list(artifacts), max, _wait(timeout_ms)
        )
        return self._tasks(claimed)

    def _task(self, task: Task) -> dict[str, Variant]:
        """A claimed task as the runtime gets it (ClaimTask's a{sv})."""
        return variants(
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

    def _tasks(self, tasks: list[Task]) -> list[dict[str, Variant]]:
        return [self._task(t) for t in tasks]

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

    @dbus_method_async_override()
    @rule("runtime.embed", limits={"texts": EMBED_TEXTS})
    async def embed(self, texts: list[str]) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        return json.dumps(await self.thinking.embed(agent, list(texts)))

    @dbus_method_async_override()
    @rule("model.think")
    async def think_stream(self, messages: str, options: dict[str, Variant]) -> int:
        agent = self.registry.runtime_agent(await self.callers.current())
        raw = plain(options)
        if "task" in raw:
            raise InvalidArgument("a streamed think is not metered against a task")
        assert self.streams is not None
        events = self.thinking.generate(
            agent, agent.uid, "think", parse_messages(messages), parse_options(raw)
        )
        return self.streams.open(events)

    # -- the agent loop (agentd.tasks.trace) ----------------------------------------------
    @dbus_method_async_override()
    @rule("runtime.context")
    async def task_context(self, task: int) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        return json.dumps(self.queue.loop.context(agent, task), ensure_ascii=False)

    @dbus_method_async_override()
    @rule("runtime.record_step", limits={"step_json": Bound(MAX_STEP)})
    async def record_step(self, task: int, attempt: int, step_json: str) -> None:
        agent = self.registry.runtime_agent(await self.callers.current())
        self.queue.loop.record_step(agent, task, attempt, step_json)

    @dbus_method_async_override()
    @rule("runtime.ask_owner", limits={"question": Bound(MAX_QUESTION)})
    async def ask_owner(self, task: int, attempt: int, question: str) -> None:
        agent = self.registry.runtime_agent(await self.callers.current())
        self.queue.loop.ask_owner(agent, task, attempt, question)

    @dbus_method_async_override()
    @rule("runtime.defer", limits={"reason": TEXT})
    async def defer_task(self, task: int, attempt: int, seconds: float, reason: str) -> None:
        agent = self.registry.runtime_agent(await self.callers.current())
        self.queue.loop.defer(agent, task, attempt, seconds, reason)

    # -- approval gates (agentd.approvals) ------------------------------------------------
    def _approvals(self) -> Approvals:
        if self.approvals is None:
            raise InvalidArgument("approval gates are not enabled in this agentd")
        return self.approvals

    @dbus_method_async_override()
    @rule(
        "runtime.request_approval",
        limits={"tool": Bound(64), "arguments_json": Bound(MAX_ARGUMENTS)},
    )
    async def request_approval(
        self, task: int, attempt: int, tool: str, arguments_json: str
    ) -> int:
        agent = self.registry.runtime_agent(await self.callers.current())
        return self._approvals().request(agent, task, attempt, tool, arguments_json)

    @dbus_method_async_override()
    @rule("runtime.use_approval")
    async def use_approval(self, approval: int, attempt: int) -> None:
        agent = self.registry.runtime_agent(await self.callers.current())
        self._approvals().use(agent, approval, attempt)

    @dbus_method_async_override()
    @rule("runtime.approvals")
    async def task_approvals(self, task: int) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        return json.dumps(self._approvals().for_task(agent, task), ensure_ascii=False)

    # -- memory (issue 13; agentd.memory.memories) ---------------------------------------
    def _memories(self) -> Memories:
        if self.memories is None:
            raise MemoryUnavailable("agentd runs without memory")
        return self.memories

    def _memory_task(self, agent: Agent, task: int) -> int | None:
        """TASK (0: none) if it is the agent's running task."""
        return self.queue.thinking_on(agent, task) if task else None

    @dbus_method_async_override()
    @rule("runtime.remember", limits={"text": Bound(MAX_REMEMBER), "kind": SHORT})
    async def remember(self, text: str, kind: str, task: int) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        memories = self._memories()
        result = await memories.remember(agent, text, kind, self._memory_task(agent, task))
        return json.dumps(result, ensure_ascii=False)

    @dbus_method_async_override()
    @rule("runtime.recall", limits={"query": Bound(MAX_QUERY)})
    async def recall(self, query: str, k: int, task: int) -> str:
        agent = self.registry.runtime_agent(await self.callers.current())
        memories = self._memories()
        hits = await memories.recall(agent, query, k, self._memory_task(agent, task))
        return json.dumps(hits, ensure_ascii=False)


def _wait(timeout_ms: int) -> float:
    """A long poll's wait in seconds, at most MAX_CLAIM_WAIT_MS."""
    return min(int(timeout_ms), MAX_CLAIM_WAIT_MS) / 1000

"""The Runtime interface: what an agent's runtime asks, about itself only."""

from __future__ import annotations

from sdbus import (
    DbusInterfaceCommonAsync,
    dbus_method_async,
)

from .common import RUNTIME_INTERFACE, U


class RuntimeInterface(DbusInterfaceCommonAsync, interface_name=RUNTIME_INTERFACE):
    """Called by an agent's runtime, as the agent's UID, about itself only.

    An agent gets work by long-polling ClaimTask (no broadcast signals reach
    agents), keeps its claims alive with Heartbeat, and reports each claimed
    task exactly once with CompleteTask, FailTask or BlockTask, quoting the
    attempt number it was given so a report from a superseded attempt is
    refused (LeaseExpired).

    Fewer round trips, optional for clients: RegisterAndClaim, ClaimTasks
    (up to the agent's free wip at once) and CompleteAndClaim (a completion
    and the next claim in one call). Their task dicts are ClaimTask's.
    """

    @dbus_method_async(
        "",
        "soa{sv}",
        flags=U,
        method_name="Register",
        result_args_names=("name", "agent", "settings"),
    )
    async def register(self) -> tuple[str, str, dict[str, tuple[str, object]]]:
        """settings: wip (t), tools (as), profile (s), heartbeat_interval (t),
        lease_seconds (t), steps (t), task_tokens (t), program (as: the
        template's program, which the runtime keeps running; empty: none)."""
        raise NotImplementedError

    @dbus_method_async(
        "u",
        "soa{sv}aa{sv}",
        flags=U,
        method_name="RegisterAndClaim",
        input_args_names=("max",),
        result_args_names=("name", "agent", "settings", "tasks"),
    )
    async def register_and_claim(
        self, max: int
    ) -> tuple[str, str, dict[str, tuple[str, object]], list[dict[str, tuple[str, object]]]]:
        """Register, then claim up to max tasks (0: as many as the agent's wip
        has room for) without waiting: a starting runtime's first work in the
        same round trip."""
        raise NotImplementedError

    @dbus_method_async(
        "",
        "atu",
        flags=U,
        method_name="Heartbeat",
        result_args_names=("abort", "heartbeat_interval"),
    )
    async def heartbeat(self) -> tuple[list[int], int]:
        """Renews the leases of the caller's tasks; returns the tasks it must abort
        and the interval agentd wants now (it may have been reconfigured)."""
        raise NotImplementedError

    @dbus_method_async(
        "u",
        "ba{sv}",
        flags=U,
        method_name="ClaimTask",
        input_args_names=("timeout_ms",),
        result_args_names=("found", "task"),
    )
    async def claim_task(self, timeout_ms: int) -> tuple[bool, dict[str, tuple[str, object]]]:
        """Atomically claim the next task assigned to the caller, waiting up to
        timeout_ms for one. task: id, attempt, title, description, exec, needs,
        notes, lease_seconds."""
        raise NotImplementedError

    @dbus_method_async(
        "uu",
        "aa{sv}",
        flags=U,
        method_name="ClaimTasks",
        input_args_names=("max", "timeout_ms"),
        result_args_names=("tasks",),
    )
    async def claim_tasks(self, max: int, timeout_ms: int) -> list[dict[str, tuple[str, object]]]:
        """Atomically claim up to max tasks (0, or more than there is room for:
        as many as the agent's free wip allows, its template's concurrency minus
        the tasks it holds), waiting up to timeout_ms for at least one. Each
        task as ClaimTask's; empty when none came."""
        raise NotImplementedError

    @dbus_method_async(
        "tusa(ss)uu",
        "aa{sv}",
        flags=U,
        method_name="CompleteAndClaim",
        input_args_names=("task", "attempt", "result", "artifacts", "max", "timeout_ms"),
        result_args_names=("tasks",),
    )
    async def complete_and_claim(
        self,
        task: int,
        attempt: int,
        result: str,
        artifacts: list[tuple[str, str]],
        max: int,
        timeout_ms: int,
    ) -> list[dict[str, tuple[str, object]]]:
        """CompleteTask, then ClaimTasks(max, timeout_ms). A refused completion
        fails the call with its error and claims nothing."""
        raise NotImplementedError

    @dbus_method_async(
        "tusa(ss)",
        "",
        flags=U,
        method_name="CompleteTask",
        input_args_names=("task", "attempt", "result", "artifacts"),
    )
    async def complete_task(
        self, task: int, attempt: int, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        """result: JSON text; artifacts: (name, path under the agent's home)."""
        raise NotImplementedError

    @dbus_method_async(
        "tussa(ss)",
        "",
        flags=U,
        method_name="FailTask",
        input_args_names=("task", "attempt", "error", "result", "artifacts"),
    )
    async def fail_task(
        self, task: int, attempt: int, error: str, result: str, artifacts: list[tuple[str, str]]
    ) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "tus", "", flags=U, method_name="BlockTask", input_args_names=("task", "attempt", "reason")
    )
    async def block_task(self, task: int, attempt: int, reason: str) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "sa{sv}",
        "s",
        flags=U,
        method_name="Think",
        input_args_names=("messages", "options"),
        result_args_names=("answer",),
    )
    async def think(self, messages: str, options: dict[str, tuple[str, object]]) -> str:
        """Ask the model, as the calling agent, within its quotas. messages: JSON
        [{"role", "content"}]; the template's system prompt is put first unless
        one is given. options: max_tokens (u), temperature (d), json_schema (s:
        JSON Schema; the answer is constrained to it), task (t: for metering).
        answer: JSON {"text", "finish_reason", "prompt_tokens", "completion_tokens"}."""
        raise NotImplementedError

    @dbus_method_async(
        "sa{sv}",
        "h",
        flags=U,
        method_name="ThinkStream",
        input_args_names=("messages", "options"),
        result_args_names=("stream",),
    )
    async def think_stream(self, messages: str, options: dict[str, tuple[str, object]]) -> int:
        """Think, streamed (the agent's OpenAI-compatible endpoint): the read end
        of a socket of JSON lines, as Model.Chat's (queued, token..., then done
        or error). Options as Think's, plus stop (as) and persona (b: false
        sends the messages as they are). Refused before any stream (an error of
        the call) when the quotas cannot hold it; closing the stream cancels
        the request."""
        raise NotImplementedError

    @dbus_method_async(
        "as",
        "s",
        flags=U,
        method_name="Embed",
        input_args_names=("texts",),
        result_args_names=("result",),
    )
    async def embed(self, texts: list[str]) -> str:
        """Sentence vectors of texts (1..64, each at most 8,192 bytes of UTF-8;
        the service keeps the first 256 tokens of each) with the embedding
        model, as the calling agent, metered as usage of kind embed. result:
        JSON {model, dimensions, embeddings (one L2-normalized vector per text,
        in order), tokens, truncated (indexes of texts cut)}. NoEmbeddingModel
        when the service has none."""
        raise NotImplementedError

    # -- the agent loop (issue 12; agentd.tasks.trace) ------------------------------------
    @dbus_method_async(
        "t",
        "s",
        flags=U,
        method_name="TaskContext",
        input_args_names=("task",),
        result_args_names=("context",),
    )
    async def task_context(self, task: int) -> str:
        """What an attempt of the caller's running task starts from, as a JSON
        object: trace (the steps recorded so far, all attempts), replies
        ([{question, answer, at}]), notes, depends ([{id, title, status,
        result}], results cut at 2,000 characters), last_error, project, budget
        (the task's token budget)."""
        raise NotImplementedError

    @dbus_method_async(
        "tus",
        "",
        flags=U,
        method_name="RecordStep",
        input_args_names=("task", "attempt", "step_json"),
    )
    async def record_step(self, task: int, attempt: int, step_json: str) -> None:
        """Append one step (a JSON object of at most 16 KiB: tool, arguments,
        result, prompt_tokens, computed_tokens, completion_tokens, seconds) to the
        trace of the caller's running task; at most 200 steps per task."""
        raise NotImplementedError

    @dbus_method_async(
        "tus",
        "",
        flags=U,
        method_name="AskOwner",
        input_args_names=("task", "attempt", "question"),
    )
    async def ask_owner(self, task: int, attempt: int, question: str) -> None:
        """Block the caller's running task with the reason "question: QUESTION";
        the claim ends. The owner's ReplyTask makes it pending again, for the
        same agent, with the answer in TaskContext's replies."""
        raise NotImplementedError

    @dbus_method_async(
        "tuds",
        "",
        flags=U,
        method_name="DeferTask",
        input_args_names=("task", "attempt", "seconds", "reason"),
    )
    async def defer_task(self, task: int, attempt: int, seconds: float, reason: str) -> None:
        """Give the caller's running task back: pending again, not claimable for
        seconds (0..86400), the attempt not counted against max_attempts."""
        raise NotImplementedError

    # -- delegation (issue 14; agentd.goals.delegation) ----------------------------------
    @dbus_method_async(
        "tus",
        "at",
        flags=U,
        method_name="Delegate",
        input_args_names=("task", "attempt", "steps_json"),
        result_args_names=("children",),
    )
    async def delegate(self, task: int, attempt: int, steps_json: str) -> list[int]:
        """Hand sub-steps of the caller's running task to other agents: STEPS_JSON
        is [{title, instructions}] (1..8); each becomes a task of the task's
        owner, with the task's capabilities as its needs. Only for templates
        that allow the delegate tool; at most 8 children per task and 2 levels
        below a person's task (LimitExceeded). Returns the children's ids."""
        raise NotImplementedError

    @dbus_method_async(
        "tu",
        "s",
        flags=U,
        method_name="Delegated",
        input_args_names=("task", "timeout_ms"),
        result_args_names=("children_json",),
    )
    async def delegated(self, task: int, timeout_ms: int) -> str:
        """The children of the caller's running task: {done, children: [{id,
        title, status, agent, result, error}]}, once all have ended or after
        TIMEOUT_MS (bounded as ClaimTask's), whichever is first."""
        raise NotImplementedError

    # -- messages (issue 15; agentd.messages) ---------------------------------------------
    @dbus_method_async(
        "sss",
        "t",
        flags=U,
        method_name="Send",
        input_args_names=("to", "subject", "body"),
        result_args_names=("message",),
    )
    async def send(self, to: str, subject: str, body: str) -> int:
        """Write to agent TO, one of the caller's owner or of a team the caller is
        in, or to "@owner". SUBJECT up to 200 characters, BODY 1..65,536.
        Durable when this returns; the message's id. PermissionDenied (audited)
        for any other agent; LimitExceeded past the sender's rate or a full inbox."""
        raise NotImplementedError

    @dbus_method_async(
        "uu",
        "s",
        flags=U,
        method_name="Receive",
        input_args_names=("max", "timeout_ms"),
        result_args_names=("messages_json",),
    )
    async def receive(self, max: int, timeout_ms: int) -> str:
        """Up to MAX (1..100; 0: 100) of the caller's unacknowledged messages,
        oldest first, waiting up to TIMEOUT_MS (bounded as ClaimTask's) for one.
        A message not acknowledged (Ack) within 60 s, or when the runtime
        registers again, is received again: at least once. JSON list as
        Messages.ListMessages gives."""
        raise NotImplementedError

    @dbus_method_async(
        "at",
        "u",
        flags=U,
        method_name="Ack",
        input_args_names=("messages",),
        result_args_names=("acknowledged",),
    )
    async def ack(self, messages: list[int]) -> int:
        """Acknowledge received MESSAGES (at most 100; again is harmless): they are
        not received again. InvalidArgument if one is not the caller's. How many
        were acknowledged now."""
        raise NotImplementedError

    # -- approval gates (issue 12; agentd.approvals) --------------------------------------
    @dbus_method_async(
        "tuss",
        "t",
        flags=U,
        method_name="RequestApproval",
        input_args_names=("task", "attempt", "tool", "arguments_json"),
        result_args_names=("approval",),
    )
    async def request_approval(
        self, task: int, attempt: int, tool: str, arguments_json: str
    ) -> int:
        """Ask the owner before running TOOL with ARGUMENTS_JSON (a JSON object of
        at most 16 KiB) in the caller's running task: the task becomes
        awaiting_approval and the claim ends (the attempt is not counted). The
        owner's answer makes it pending again for the same agent."""
        raise NotImplementedError

    @dbus_method_async(
        "tu",
        "",
        flags=U,
        method_name="UseApproval",
        input_args_names=("approval", "attempt"),
    )
    async def use_approval(self, approval: int, attempt: int) -> None:
        """Mark a granted approval used by ATTEMPT of the caller's running task,
        committed before the reply: run the action only after it. Idempotent for
        the same attempt; Busy if it is pending, denied, or used by another
        attempt (then never run it)."""
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "s",
        flags=U,
        method_name="TaskApprovals",
        input_args_names=("task",),
        result_args_names=("approvals",),
    )
    async def task_approvals(self, task: int) -> str:
        """JSON {"rules": {tools, shell_allow, timeout}, "approvals": [{id, tool,
        arguments, status, reason}]} for the caller's running task."""
        raise NotImplementedError

    # -- memory (issue 13; agentd.memory) -------------------------------------------------
    @dbus_method_async(
        "sst",
        "s",
        flags=U,
        method_name="Remember",
        input_args_names=("text", "kind", "task"),
        result_args_names=("result_json",),
    )
    async def remember(self, text: str, kind: str, task: int) -> str:
        """Store TEXT (at most 16 KiB) in the caller's own memory as KIND (fact or
        lesson), from TASK (one the caller holds the claim of; 0: none). Embedding
        tokens are metered. JSON {added, skipped, tokens, ids}."""
        raise NotImplementedError

    @dbus_method_async(
        "sut",
        "s",
        flags=U,
        method_name="Recall",
        input_args_names=("query", "k", "task"),
        result_args_names=("hits_json",),
    )
    async def recall(self, query: str, k: int, task: int) -> str:
        """The K (1..20) chunks of the caller's own memory and its owner's
        knowledge most relevant to QUERY, as Memory.SearchMemory's hits (scope
        "agent" or "knowledge"); TASK as Remember's."""
        raise NotImplementedError

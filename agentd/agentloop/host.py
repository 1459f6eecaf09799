"""What the agent loop asks of agentd (docs: /work/issue12-contract.md, 1;
memory, issue 13: Runtime.Remember and Runtime.Recall).

The loop never touches D-Bus: the runtime hands it a TaskHost
(agentd.runtime.RuntimeHost over the Runtime methods; unit tests a scripted
fake). A task the loop lets go of (it asked the owner, waits for an
approval, was deferred, or was cancelled) ends with Outcome("released"):
agentd has already moved it, so the runtime reports nothing for it.
Cheap to import (it is part of every agent's start): typing only.
"""

from __future__ import annotations

from typing import Any, Protocol


class ModelError(Exception):
    """agentd refused or failed a Think call; ``name`` is its error's short name
    (QuotaExceeded, Overloaded, ModelUnavailable, InvalidArgument, Failed...)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class HostError(Exception):
    """agentd refused another TaskHost call (``name``: its error's short name)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class TaskHost(Protocol):
    async def think(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        """Runtime.Think: {"text", "finish_reason", "prompt_tokens",
        "completion_tokens", "prompt_tokens_computed"?}; raises ModelError."""
        ...

    async def context(self, task: int) -> dict[str, Any]:
        """Runtime.TaskContext merged with Runtime.TaskApprovals: trace,
        replies, notes, depends, last_error, project, budget, rules, approvals."""
        ...

    async def record_step(self, task: int, attempt: int, step: dict[str, Any]) -> None: ...

    async def ask_owner(self, task: int, attempt: int, question: str) -> None:
        """The task becomes blocked with the question; the runtime lets go of it."""
        ...

    async def defer(self, task: int, attempt: int, seconds: float, reason: str) -> None:
        """Back to pending, not claimable for SECONDS, attempts not consumed."""
        ...

    async def request_approval(
        self, task: int, attempt: int, tool: str, arguments: dict[str, Any]
    ) -> int:
        """The task waits in awaiting_approval; the runtime lets go of it."""
        ...

    async def use_approval(self, approval: int, attempt: int) -> None:
        """granted -> used, committed before the reply; raises if not granted."""
        ...

    async def delegate(self, task: int, attempt: int, steps: list[dict[str, str]]) -> list[int]:
        """Runtime.Delegate: STEPS ([{title, instructions}]) as child tasks; their ids."""
        ...

    async def delegated(self, task: int, timeout_ms: int) -> dict[str, Any]:
        """Runtime.Delegated: {done, children: [{id, title, status, result, error}]}."""
        ...

    async def send(self, to: str, subject: str, body: str) -> int:
        """Runtime.Send: a message to agent TO (or "@owner"); its id."""
        ...

    async def receive(self, most: int, timeout_ms: int) -> list[dict[str, Any]]:
        """Runtime.Receive: up to MOST unacknowledged messages, oldest first."""
        ...

    async def ack(self, ids: list[int]) -> int:
        """Runtime.Ack: those messages are read."""
        ...

    async def remember(self, text: str, kind: str, task: int) -> dict[str, Any]:
        """Runtime.Remember: TEXT into the agent's own memory as KIND (fact or
        lesson), from TASK; {"added", "skipped", "tokens", "ids"}."""
        ...

    async def recall(self, query: str, k: int, task: int) -> list[dict[str, Any]]:
        """Runtime.Recall: the K (1..20) chunks of the agent's memory and its
        owner's knowledge most relevant to QUERY, best first: {id, scope
        ("agent" or "knowledge"), source, heading, text, kind, task, score...}."""
        ...


class Outcome:
    """How a task ended. A plain class: dataclasses costs ~1 ms at each agent start."""

    FIELDS = ("status", "result", "error", "reason", "artifacts")
    __slots__ = FIELDS

    def __init__(
        self,
        status: str,  # completed | failed | blocked | released
        result: dict[str, Any] | None = None,
        error: str = "",
        reason: str = "",
        artifacts: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.result: dict[str, Any] = {} if result is None else result
        self.error = error
        self.reason = reason
        self.artifacts: list[tuple[str, str]] = [] if artifacts is None else artifacts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.FIELDS)

    def __repr__(self) -> str:
        fields = ", ".join(f"{a}={getattr(self, a)!r}" for a in self.FIELDS)
        return f"Outcome({fields})"

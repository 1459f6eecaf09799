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
    """

    @dbus_method_async(
        "",
        "soa{sv}",
        flags=U,
        method_name="Register",
        result_args_names=("name", "agent", "settings"),
    )
    async def register(self) -> tuple[str, str, dict[str, tuple[str, object]]]:
        """settings: wip (t), tools (as), heartbeat_interval (t), lease_seconds (t)."""
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

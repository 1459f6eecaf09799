"""The Tasks interface: projects, tasks and artifacts, for people and programs."""

from __future__ import annotations

from collections.abc import Sequence

from sdbus import (
    DbusInterfaceCommonAsync,
    dbus_method_async,
    dbus_signal_async,
)

from ..rows import ArtifactRow, ProjectRow, TaskEventRow, TaskRow
from .common import TASKS_INTERFACE, U


class TasksInterface(DbusInterfaceCommonAsync, interface_name=TASKS_INTERFACE):
    """Projects, tasks and artifacts, for people and programs (not agents)."""

    @dbus_method_async(
        "ss", "", flags=U, method_name="CreateProject", input_args_names=("name", "description")
    )
    async def create_project(self, name: str, description: str) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "",
        "a" + ProjectRow.SIGNATURE,
        flags=U,
        method_name="ListProjects",
        result_args_names=("projects",),
    )
    async def list_projects(self) -> Sequence[tuple[str, str, int, int]]:
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "a{sv}",
        flags=U,
        method_name="DescribeProject",
        input_args_names=("name",),
        result_args_names=("info",),
    )
    async def describe_project(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async("s", "", flags=U, method_name="RemoveProject", input_args_names=("name",))
    async def remove_project(self, name: str) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "a{sv}",
        "t",
        flags=U,
        method_name="SubmitTask",
        input_args_names=("spec",),
        result_args_names=("task",),
    )
    async def submit_task(self, spec: dict[str, tuple[str, object]]) -> int:
        """spec: title (s, required), description (s), project (s), needs (as),
        priority (s: low|medium|high|critical), after (at), agent (s),
        max_attempts (u), exec (s)."""
        raise NotImplementedError

    @dbus_method_async(
        "a{sv}",
        "a" + TaskRow.SIGNATURE,
        flags=U,
        method_name="ListTasks",
        input_args_names=("filter",),
        result_args_names=("tasks",),
    )
    async def list_tasks(
        self, filter: dict[str, tuple[str, object]]
    ) -> Sequence[tuple[int, str, str, str, str, str, int, int, float]]:
        """filter: status, project, agent, priority (s each), limit (u)."""
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "a{sv}",
        flags=U,
        method_name="DescribeTask",
        input_args_names=("task",),
        result_args_names=("info",),
    )
    async def describe_task(self, task: int) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "a" + TaskEventRow.SIGNATURE,
        flags=U,
        method_name="ListTaskEvents",
        input_args_names=("task",),
        result_args_names=("events",),
    )
    async def list_task_events(self, task: int) -> Sequence[tuple[int, float, int, str, str, str]]:
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "a" + ArtifactRow.SIGNATURE,
        flags=U,
        method_name="ListArtifacts",
        input_args_names=("task",),
        result_args_names=("artifacts",),
    )
    async def list_artifacts(self, task: int) -> Sequence[tuple[str, str, str, int, str]]:
        raise NotImplementedError

    @dbus_method_async(
        "ts",
        "ay",
        flags=U,
        method_name="ReadArtifact",
        input_args_names=("task", "name"),
        result_args_names=("data",),
    )
    async def read_artifact(self, task: int, name: str) -> bytes:
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="CancelTask", input_args_names=("task",))
    async def cancel_task(self, task: int) -> None:
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="RetryTask", input_args_names=("task",))
    async def retry_task(self, task: int) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "ts", "", flags=U, method_name="UnblockTask", input_args_names=("task", "note")
    )
    async def unblock_task(self, task: int, note: str) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "ts", "", flags=U, method_name="ReplyTask", input_args_names=("task", "text")
    )
    async def reply_task(self, task: int, text: str) -> None:
        """Answer what a blocked task asks (its block reason, "question: ..."):
        pending again, for the same agent, the reply kept for its next attempt
        (the agent's TaskContext). The owner or an administrator."""
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "s",
        flags=U,
        method_name="ListTaskSteps",
        input_args_names=("task",),
        result_args_names=("steps",),
    )
    async def list_task_steps(self, task: int) -> str:
        """The task's trace, as JSON: the steps its agent recorded, oldest first
        (n, attempt, tool, arguments, result, prompt_tokens, computed_tokens,
        completion_tokens, seconds, at). The owner or an administrator."""
        raise NotImplementedError

    @dbus_signal_async(
        "tss", signal_name="TaskChanged", signal_args_names=("task", "status", "event")
    )
    def task_changed(self) -> tuple[int, str, str]:
        """A task changed state; fetch details with DescribeTask (authorized)."""
        raise NotImplementedError

"""The Tasks interface: projects, tasks and artifacts for people and programs."""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..events import Events, TaskChanged
from ..limits import Bound
from ..tasks.queue import Task, TaskQueue
from ..tasks.trace import MAX_REPLY
from .access import Callers, rule
from .interfaces import TasksInterface
from .marshal import Variant, plain, variants
from .rows import ArtifactRow, ProjectRow, TaskEventRow, TaskRow


def task_row(t: Task) -> TaskRow:
    return TaskRow(
        t.id,
        t.title,
        t.status,
        t.priority,
        t.project,
        t.agent or "",
        t.attempts,
        t.max_attempts,
        t.created_at,
    )


class TasksObject(TasksInterface):
    def __init__(self, queue: TaskQueue, callers: Callers) -> None:
        super().__init__()
        self.queue = queue
        self.callers = callers

    def subscribe(self, events: Events) -> None:
        events.subscribe(TaskChanged, self._on_task)

    def _on_task(self, event: TaskChanged) -> None:
        self.task_changed.emit((event.task.id, event.task.status, event.event))

    @dbus_method_async_override()
    @rule("project.create")
    async def create_project(self, name: str, description: str) -> None:
        self.queue.create_project(await self.callers.current(), name, description)

    @dbus_method_async_override()
    @rule("project.list")
    async def list_projects(self) -> list[tuple[str, str, int, int]]:
        rows = self.queue.projects(await self.callers.current())
        return [ProjectRow(r["name"], r["description"], r["owner_uid"], r["tasks"]) for r in rows]

    @dbus_method_async_override()
    @rule("project.show")
    async def describe_project(self, name: str) -> dict[str, Variant]:
        return variants(self.queue.project(await self.callers.current(), name))

    @dbus_method_async_override()
    @rule("project.remove")
    async def remove_project(self, name: str) -> None:
        self.queue.remove_project(await self.callers.current(), name)

    @dbus_method_async_override()
    @rule("task.create")
    async def submit_task(self, spec: dict[str, Variant]) -> int:
        task = self.queue.submit(await self.callers.current(), plain(spec))
        return task.id

    @dbus_method_async_override()
    @rule("task.list")
    async def list_tasks(self, filter: dict[str, Variant]) -> list[TaskRow]:
        tasks = self.queue.list(await self.callers.current(), plain(filter))
        return [task_row(t) for t in tasks]

    @dbus_method_async_override()
    @rule("task.show")
    async def describe_task(self, task: int) -> dict[str, Variant]:
        t = self.queue.get(await self.callers.current(), task)
        info = variants(t.as_dict())
        info["after"] = ("at", list(t.after))  # typed even when empty
        info["needs"] = ("as", list(t.needs))
        info["notes"] = ("as", list(t.notes))
        return info

    @dbus_method_async_override()
    @rule("task.show")
    async def list_task_events(self, task: int) -> list[TaskEventRow]:
        return [
            TaskEventRow(
                e.seq, e.ts, e.actor_uid, e.action, e.result, json.dumps(e.detail, sort_keys=True)
            )
            for e in self.queue.events(await self.callers.current(), task)
        ]

    @dbus_method_async_override()
    @rule("task.show")
    async def list_artifacts(self, task: int) -> list[ArtifactRow]:
        return [
            ArtifactRow(a.name, a.type, a.path, a.size, a.sha256)
            for a in self.queue.artifacts(await self.callers.current(), task)
        ]

    @dbus_method_async_override()
    @rule("artifact.read")
    async def read_artifact(self, task: int, name: str) -> bytes:
        return self.queue.read_artifact(await self.callers.current(), task, name)

    @dbus_method_async_override()
    @rule("task.cancel")
    async def cancel_task(self, task: int) -> None:
        self.queue.cancel(await self.callers.current(), task)

    @dbus_method_async_override()
    @rule("task.retry")
    async def retry_task(self, task: int) -> None:
        self.queue.retry(await self.callers.current(), task)

    @dbus_method_async_override()
    @rule("task.unblock")
    async def unblock_task(self, task: int, note: str) -> None:
        self.queue.unblock(await self.callers.current(), task, note)

    @dbus_method_async_override()
    @rule("task.reply", limits={"text": Bound(MAX_REPLY)})
    async def reply_task(self, task: int, text: str) -> None:
        self.queue.loop.reply(await self.callers.current(), task, text)

    @dbus_method_async_override()
    @rule("task.show")
    async def list_task_steps(self, task: int) -> str:
        steps = self.queue.loop.steps(await self.callers.current(), task)
        return json.dumps(steps, ensure_ascii=False)

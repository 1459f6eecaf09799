"""The Tasks interface: projects, tasks and artifacts for people and programs."""

from __future__ import annotations

import json

from sdbus import dbus_method_async_override

from ..tasks.queue import Task, TaskQueue
from .callers import Callers
from .interfaces import TasksInterface
from .service import Variant, translated, variants


def _plain(spec: dict[str, Variant]) -> dict[str, object]:
    """a{sv} -> plain values (sdbus gives (signature, value) pairs)."""
    return {key: value for key, (_sig, value) in spec.items()}


def task_row(t: Task) -> tuple:
    return (t.id, t.title, t.status, t.priority, t.project, t.agent or "", t.attempts,
            t.max_attempts, t.created_at)


class TasksObject(TasksInterface):
    def __init__(self, queue: TaskQueue, callers: Callers) -> None:
        super().__init__()
        self.queue = queue
        self.callers = callers
        queue.listeners.append(self._on_task)

    def _on_task(self, task: Task, event: str) -> None:
        self.task_changed.emit((task.id, task.status, event))

    @dbus_method_async_override()
    @translated
    async def create_project(self, name: str, description: str) -> None:
        self.queue.create_project(await self.callers.current(), name, description)

    @dbus_method_async_override()
    @translated
    async def list_projects(self) -> list[tuple[str, str, int, int]]:
        rows = self.queue.projects(await self.callers.current())
        return [(r["name"], r["description"], r["owner_uid"], r["tasks"]) for r in rows]

    @dbus_method_async_override()
    @translated
    async def describe_project(self, name: str) -> dict[str, Variant]:
        return variants(self.queue.project(await self.callers.current(), name))

    @dbus_method_async_override()
    @translated
    async def remove_project(self, name: str) -> None:
        self.queue.remove_project(await self.callers.current(), name)

    @dbus_method_async_override()
    @translated
    async def submit_task(self, spec: dict[str, Variant]) -> int:
        task = self.queue.submit(await self.callers.current(), _plain(spec))
        return task.id

    @dbus_method_async_override()
    @translated
    async def list_tasks(self, filter: dict[str, Variant]) -> list[tuple]:
        tasks = self.queue.list(await self.callers.current(), _plain(filter))
        return [task_row(t) for t in tasks]

    @dbus_method_async_override()
    @translated
    async def describe_task(self, task: int) -> dict[str, Variant]:
        t = self.queue.get(await self.callers.current(), task)
        info = variants(t.as_dict())
        info["after"] = ("at", list(t.after))  # typed even when empty
        info["needs"] = ("as", list(t.needs))
        info["notes"] = ("as", list(t.notes))
        return info

    @dbus_method_async_override()
    @translated
    async def list_task_events(self, task: int) -> list[tuple]:
        return [(e.seq, e.ts, e.actor_uid, e.action, e.result,
                 json.dumps(e.detail, sort_keys=True))
                for e in self.queue.events(await self.callers.current(), task)]

    @dbus_method_async_override()
    @translated
    async def list_artifacts(self, task: int) -> list[tuple]:
        return [(a.name, a.type, a.path, a.size, a.sha256)
                for a in self.queue.artifacts(await self.callers.current(), task)]

    @dbus_method_async_override()
    @translated
    async def read_artifact(self, task: int, name: str) -> bytes:
        return self.queue.read_artifact(await self.callers.current(), task, name)

    @dbus_method_async_override()
    @translated
    async def cancel_task(self, task: int) -> None:
        self.queue.cancel(await self.callers.current(), task)

    @dbus_method_async_override()
    @translated
    async def retry_task(self, task: int) -> None:
        self.queue.retry(await self.callers.current(), task)

    @dbus_method_async_override()
    @translated
    async def unblock_task(self, task: int, note: str) -> None:
        self.queue.unblock(await self.callers.current(), task, note)

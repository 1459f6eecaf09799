"""`agentctl task show`'s memories used: from the recall steps of the agent
loop's trace (agentd.agentloop.memory), the one before the first step
("auto") and the recall tool's, each memory once."""

from __future__ import annotations

import json
from typing import Any

from agentctl_fakes import FakeClient, invoke

SHOWN_STEPS = [
    {
        "n": 1,
        "attempt": 1,
        "tool": "recall",
        "arguments": {"query": "back up", "auto": True},
        "result": "2 remembered notes shown: ...",
        "memories": [
            {
                "id": 1,
                "scope": "knowledge",
                "kind": "document",
                "source": "notes.md",
                "heading": "Backups",
                "text": "...",
            },
            {
                "id": 2,
                "scope": "agent",
                "kind": "lesson",
                "source": "task/3",
                "heading": "",
                "text": "...",
            },
        ],
    },
    {
        "n": 2,
        "attempt": 1,
        "tool": "recall",
        "arguments": {"query": "disk"},
        "result": "...",
        "memories": [
            {
                "id": 3,
                "scope": "knowledge",
                "kind": "document",
                "source": "disks.md",
                "heading": "",
            },
            {
                "id": 1,
                "scope": "knowledge",
                "kind": "document",
                "source": "notes.md",
                "heading": "Backups",
            },
        ],
    },
    {"n": 3, "attempt": 1, "tool": "finish", "arguments": {"answer": "ok"}, "result": "ok"},
    {"n": 4, "attempt": 1, "tool": "lesson", "arguments": {}, "result": "stored as memory #9"},
]


class Client(FakeClient):
    def __init__(self, steps: list[dict[str, Any]]) -> None:
        super().__init__()
        self.steps = steps

    async def describe_task(self, task: int) -> dict[str, Any]:
        return {"id": task, "title": "t", "status": "completed"}

    async def list_task_events(self, task: int) -> list[dict[str, Any]]:
        return []

    async def list_artifacts(self, task: int) -> list[dict[str, Any]]:
        return []

    async def list_task_steps(self, task: int) -> list[dict[str, Any]]:
        return self.steps


def test_task_show_lists_the_memories_used() -> None:
    r = invoke(Client(SHOWN_STEPS), "task", "show", "7")
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in r.output.splitlines() if line.startswith("memory\t")]
    assert rows == [
        ["memory", "1", "knowledge", "notes.md > Backups", "1 (auto), 2"],
        ["memory", "2", "agent", "task/3", "1 (auto)"],
        ["memory", "3", "knowledge", "disks.md", "2"],
    ]
    shown = json.loads(invoke(Client(SHOWN_STEPS), "task", "show", "7", "--json").output)
    assert [(m["id"], m["steps"]) for m in shown["memories"]] == [
        (1, [{"n": 1, "auto": True}, {"n": 2, "auto": False}]),
        (2, [{"n": 1, "auto": True}]),
        (3, [{"n": 2, "auto": False}]),
    ]
    assert shown["memories"][0] == {
        "id": 1,
        "scope": "knowledge",
        "kind": "document",
        "source": "notes.md",
        "heading": "Backups",
        "steps": [{"n": 1, "auto": True}, {"n": 2, "auto": False}],
    }
    tty = invoke(Client(SHOWN_STEPS), "task", "show", "7", tty=True)
    assert "Memories used" in tty.output and "notes.md > Backups" in tty.output


def test_task_show_without_recall_steps_has_no_memories_section() -> None:
    steps = SHOWN_STEPS[2:]
    r = invoke(Client(steps), "task", "show", "7", tty=True)
    assert r.exit_code == 0, r.stderr
    assert "Memories used" not in r.output
    shown = json.loads(invoke(Client(steps), "task", "show", "7", "--json").output)
    assert shown["memories"] == []

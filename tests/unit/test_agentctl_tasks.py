"""agentctl's project, task and events commands against a fake client.

The fake extends test_agentctl's FakeClient with the task methods of
AgentdClient; a scripted list of statuses drives `task wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentctl_fakes import NOBODY_UID, FakeClient, entry, local_iso
from click.testing import CliRunner
from sdbus.sd_bus_internals import SdBusUnmappedMessageError

from agentctl import client as client_mod
from agentctl import output
from agentctl.app import Env
from agentctl.cli import cli
from agentctl.client import AgentdClient, ClientError, TaskWatch, translate
from agentctl.commands import audit as audit_cmd
from agentctl.commands import task as task_cmd
from agentctl.commands import task_wait
from agentctl.marshal import TASK_FILTER, TASK_SPEC, variants
from agentd.api.errors import BY_NAME, PREFIX

TASK = {
    "id": 7,
    "title": "Summarise the logs",
    "description": "All of them\nplease",
    "status": "completed",
    "priority": "high",
    "project": "website",
    "agent": "scout",
    "owner_uid": 0,
    "needs": ["read", "summarise"],
    "after": [3, 5],
    "exec": "",
    "max_attempts": 3,
    "attempts": 1,
    "result": '{"summary": "ok", "lines": 3}',
    "error": "",
    "block_reason": "",
    "notes": [],
    "created_at": 1700000000.0,
    "updated_at": 1700000060.0,
    "started_at": 1700000010.0,
    "finished_at": 1700000060.0,
}

EVENTS = [
    {
        "seq": 11,
        "ts": 1700000000.0,
        "actor_uid": 0,
        "event": "task.created",
        "result": "ok",
        "detail": {"task_id": 7, "title": "Summarise the logs"},
    },
    {
        "seq": 12,
        "ts": 1700000010.0,
        "actor_uid": NOBODY_UID,
        "event": "task.claimed",
        "result": "ok",
        "detail": {"task_id": 7, "attempt": 1},
    },
]

ARTIFACTS = [
    {
        "name": "summary.md",
        "type": "text/markdown",
        "path": "/home/agents/scout/summary.md",
        "size": 1536,
        "sha256": "ab" * 32,
    },
]

ROWS = [
    {
        "id": 9,
        "title": "Deploy",
        "status": "pending",
        "priority": "critical",
        "project": "",
        "agent": "",
        "attempts": 0,
        "max_attempts": 3,
        "created_at": 1700000100.0,
    },
    {
        "id": 7,
        "title": "Summarise\tthe logs",
        "status": "in_progress",
        "priority": "high",
        "project": "website",
        "agent": "scout",
        "attempts": 1,
        "max_attempts": 3,
        "created_at": 1700000000.0,
    },
]


class FakeWatch:
    def __init__(self, fake: TaskFake) -> None:
        self.fake = fake

    async def wait(self, task: int, timeout: float) -> bool:
        self.fake.calls.append(("wait", task))
        await asyncio.sleep(min(timeout, 0.01))
        return True


class TaskFake(FakeClient):
    """FakeClient plus the task methods; describe_task walks through self.statuses."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[Any] = ["completed"]  # a status, or an exception to raise
        self.task: dict[str, Any] = dict(TASK)
        self.artifact = b"# Summary\n"
        self.project_info: dict[str, Any] = {
            "name": "website",
            "description": "The site",
            "owner_uid": 0,
            "created_at": 1700000000.0,
            "tasks": 5,
            "tasks_completed": 3,
            "tasks_pending": 2,
        }

    async def create_project(self, name: str, description: str = "") -> None:
        self._record("create_project", name, description)

    async def list_projects(self) -> list[dict[str, Any]]:
        self._record("list_projects")
        return [
            {"name": "website", "description": "The site", "owner_uid": 0, "tasks": 5},
            {"name": "api", "description": "", "owner_uid": NOBODY_UID, "tasks": 0},
        ]

    async def describe_project(self, name: str) -> dict[str, Any]:
        self._record("describe_project", name)
        return dict(self.project_info, name=name)

    async def remove_project(self, name: str) -> None:
        self._record("remove_project", name)

    async def submit_task(self, spec: dict[str, Any]) -> int:
        self._record("submit_task", spec)
        return 7

    async def list_tasks(self, filter: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._record("list_tasks", filter)
        return [dict(r) for r in ROWS]

    async def describe_task(self, task: int) -> dict[str, Any]:
        self._record("describe_task", task)
        step = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(step, Exception):
            raise step
        return dict(self.task, id=task, status=step)

    async def list_task_events(self, task: int) -> list[dict[str, Any]]:
        self._record("list_task_events", task)
        return [dict(e) for e in EVENTS]

    async def list_artifacts(self, task: int) -> list[dict[str, Any]]:
        self._record("list_artifacts", task)
        return [dict(a) for a in ARTIFACTS]

    async def read_artifact(self, task: int, name: str) -> bytes:
        self._record("read_artifact", task, name)
        return self.artifact

    async def cancel_task(self, task: int) -> None:
        self._record("cancel_task", task)

    async def retry_task(self, task: int) -> None:
        self._record("retry_task", task)

    async def unblock_task(self, task: int, note: str) -> None:
        self._record("unblock_task", task, note)

    @contextlib.asynccontextmanager
    async def watch_tasks(self) -> AsyncIterator[FakeWatch]:
        self._record("watch_tasks")
        try:
            yield FakeWatch(self)
        finally:
            self.calls.append(("unwatch",))


@pytest.fixture
def fake() -> TaskFake:
    return TaskFake()


def invoke(fake: FakeClient, *args: str, tty: bool = False):
    return CliRunner(mix_stderr=False).invoke(
        cli, list(args), obj=Env(connect=lambda: fake, tty=tty)
    )


def fields_of(output: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in output.splitlines())


# -- project ----------------------------------------------------------------------------
def test_project_create_prints_the_name(fake: TaskFake) -> None:
    r = invoke(fake, "project", "create", "website", "-d", "The site")
    assert r.exit_code == 0, r.stderr
    assert r.output == "website\n"
    assert fake.calls == [("create_project", "website", "The site")]


def test_project_create_json_describes_it(fake: TaskFake) -> None:
    r = invoke(fake, "project", "create", "website", "--json")
    assert json.loads(r.output)["tasks_completed"] == 3
    assert fake.calls == [("create_project", "website", ""), ("describe_project", "website")]


def test_project_list_plain_sorted_and_json(fake: TaskFake) -> None:
    r = invoke(fake, "project", "ls")
    assert r.output.splitlines() == [
        "api\t" + str(NOBODY_UID) + "\t0\t",
        "website\troot\t5\tThe site",
    ]
    data = json.loads(invoke(fake, "project", "list", "--json").output)
    assert [p["name"] for p in data] == ["api", "website"]
    assert data[1]["owner"] == "root" and data[0]["owner"] is None


def test_project_list_on_terminal(fake: TaskFake) -> None:
    r = invoke(fake, "project", "list", tty=True)
    assert r.output.splitlines()[0].split() == ["NAME", "OWNER", "TASKS", "DESCRIPTION"]


def test_project_show_folds_the_counts_into_tasks(fake: TaskFake) -> None:
    r = invoke(fake, "project", "show", "website")
    assert r.exit_code == 0, r.stderr
    fields = fields_of(r.output)
    assert fields["tasks"] == "5 (pending 2, completed 3)"
    assert fields["owner_uid"] == "root (0)"
    assert fields["created_at"] == local_iso(1700000000.0)
    assert not any(k.startswith("tasks_") for k in fields)
    assert (
        json.loads(invoke(fake, "project", "show", "website", "--json").output) == fake.project_info
    )


def test_project_rm_and_busy(fake: TaskFake) -> None:
    r = invoke(fake, "project", "remove", "website")
    assert r.exit_code == 0 and r.output == ""
    assert fake.calls == [("remove_project", "website")]
    fake.fail["remove_project"] = ClientError(
        "project 'website' has 2 unfinished task(s); cancel them first", "Busy"
    )
    r = invoke(fake, "project", "rm", "website")
    assert r.exit_code == 1
    assert r.stderr == (
        "agentctl: project 'website' has 2 unfinished task(s); cancel them first (Busy)\n"
    )


# -- task submit ------------------------------------------------------------------------
def test_submit_prints_only_the_id(fake: TaskFake) -> None:
    r = invoke(fake, "task", "submit", "Summarise the logs")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "7\n"
    assert fake.calls == [("submit_task", {"title": "Summarise the logs"})]


def test_submit_passes_every_option(fake: TaskFake) -> None:
    r = invoke(
        fake,
        "task",
        "submit",
        "Deploy",
        "--description",
        "to prod",
        "-p",
        "website",
        "--needs",
        "read",
        "--needs",
        "deploy,ops",
        "--priority",
        "critical",
        "--after",
        "3",
        "--after",
        "#5,6",
        "--agent",
        "builder",
        "--max-attempts",
        "5",
        "--exec",
        "make deploy",
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "7\n"
    assert fake.calls == [
        (
            "submit_task",
            {
                "title": "Deploy",
                "description": "to prod",
                "project": "website",
                "needs": ["read", "deploy", "ops"],
                "priority": "critical",
                "after": [3, 5, 6],
                "agent": "builder",
                "max_attempts": 5,
                "exec": "make deploy",
            },
        )
    ]


def test_submit_json_is_the_whole_task(fake: TaskFake) -> None:
    fake.statuses = ["pending"]
    r = invoke(fake, "task", "submit", "Summarise the logs", "--json")
    data = json.loads(r.output)
    assert data["id"] == 7 and data["status"] == "pending" and data["needs"] == TASK["needs"]
    assert fake.calls[-1] == ("describe_task", 7)


@pytest.mark.parametrize(
    "args",
    [
        ["--priority", "urgent"],
        ["--after", "x"],
        ["--after", "-1"],
        ["--max-attempts", "0"],
        [],  # no title
    ],
)
def test_submit_usage_errors_call_nothing(fake: TaskFake, args: list[str]) -> None:
    title = [] if not args else ["T"]
    r = invoke(fake, "task", "submit", *title, *args)
    assert r.exit_code == 2
    assert fake.calls == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("NoCapableAgent", "none of your agents has gpu"),
        ("NoSuchProject", "no project named 'nope'"),
        ("NoSuchTask", "no task 99 to depend on"),
        ("DependencyCycle", "task 4 would depend on itself"),
        ("InvalidArgument", "title must not be empty"),
    ],
)
def test_submit_errors_are_one_line_exit_1(fake: TaskFake, name: str, message: str) -> None:
    fake.fail["submit_task"] = ClientError(message, name)
    r = invoke(fake, "task", "submit", "T")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr == f"agentctl: {message} ({name})\n"


# -- task list --------------------------------------------------------------------------
def test_list_passes_filters_through(fake: TaskFake) -> None:
    r = invoke(
        fake,
        "task",
        "list",
        "--status",
        "failed",
        "--project",
        "website",
        "--agent",
        "scout",
        "--priority",
        "high",
        "--limit",
        "20",
    )
    assert r.exit_code == 0, r.stderr
    assert fake.calls == [
        (
            "list_tasks",
            {
                "status": "failed",
                "project": "website",
                "agent": "scout",
                "priority": "high",
                "limit": 20,
            },
        )
    ]
    invoke(fake, "task", "ls")
    assert fake.calls[-1] == ("list_tasks", {})


def test_list_plain_sorted_by_id(fake: TaskFake) -> None:
    r = invoke(fake, "task", "list")
    assert r.output.splitlines() == [
        f"7\tin_progress\thigh\twebsite\tscout\t1/3\t{local_iso(1700000000.0)}\t"
        "Summarise\\tthe logs",
        f"9\tpending\tcritical\t-\t-\t0/3\t{local_iso(1700000100.0)}\tDeploy",
    ]


def test_list_json_and_terminal(fake: TaskFake) -> None:
    data = json.loads(invoke(fake, "task", "list", "--json").output)
    assert [t["id"] for t in data] == [7, 9] and data[1]["project"] == ""
    r = invoke(fake, "task", "list", tty=True)
    assert r.output.splitlines()[0].split() == [
        "ID",
        "STATUS",
        "PRIORITY",
        "PROJECT",
        "AGENT",
        "ATTEMPTS",
        "AGE",
        "TITLE",
    ]
    assert "in_progress" in r.output and "1/3" in r.output


@pytest.mark.parametrize(
    ("ago", "text"),
    [(0, "0s"), (119, "119s"), (120, "2m"), (7199, "119m"), (7200, "2h"), (172800, "2d")],
)
def test_fmt_age(ago: int, text: str) -> None:
    assert output.fmt_age(1_700_000_000.0 - ago, now=1_700_000_000.0) == text
    assert output.fmt_age(None) == "-"


def test_list_rejects_an_unknown_status(fake: TaskFake) -> None:
    r = invoke(fake, "task", "list", "--status", "done")
    assert r.exit_code == 2 and fake.calls == []


# -- task show --------------------------------------------------------------------------
def test_show_plain_fields_events_and_artifacts(fake: TaskFake) -> None:
    r = invoke(fake, "task", "show", "7")
    assert r.exit_code == 0, r.stderr
    lines = r.output.splitlines()
    fields = fields_of(
        "\n".join(line for line in lines if not line.startswith(("event\t", "artifact\t")))
    )
    assert fields["status"] == "completed"
    assert fields["result"] == '{"summary": "ok", "lines": 3}'
    assert fields["description"] == "All of them\\nplease"
    assert fields["needs"] == "read, summarise" and fields["after"] == "3, 5"
    assert fields["owner_uid"] == "root (0)"
    assert fields["finished_at"] == local_iso(1700000060.0)
    for empty in ("exec", "error", "block_reason", "notes"):
        assert empty not in fields
    assert "lease_expires" not in fields  # missing key: unset
    assert [line for line in lines if line.startswith("event\t")] == [
        f"event\t11\t{local_iso(1700000000.0)}\troot\ttask.created\tok\ttitle=Summarise the logs",
        f"event\t12\t{local_iso(1700000010.0)}\t{NOBODY_UID}\ttask.claimed\tok\tattempt=1",
    ]
    assert [line for line in lines if line.startswith("artifact\t")] == [
        "artifact\tsummary.md\ttext/markdown\t1536\t" + "ab" * 32
    ]
    assert fake.calls == [
        ("describe_task", 7),
        ("list_task_events", 7),
        ("list_artifacts", 7),
        ("list_task_steps", 7),  # none: no steps line
    ]


def test_show_on_terminal_pretty_prints_the_result(fake: TaskFake) -> None:
    fake.task.update(
        status="blocked",
        block_reason="Which database?",
        agent="",
        notes=["use staging", "not prod"],
    )
    fake.statuses = ["blocked"]
    r = invoke(fake, "task", "show", "#7", tty=True)
    assert r.exit_code == 0, r.stderr
    assert '"summary": "ok",' in r.output and '  "lines": 3' in r.output
    assert "Blocked on:" in r.output and "Which database?" in r.output
    assert "use staging" in r.output and "not prod" in r.output
    assert "History" in r.output and "task.claimed" in r.output
    assert "Artifacts" in r.output and "1.5 KiB" in r.output and "abababababab…" in r.output
    agent_line = next(line for line in r.output.splitlines() if line.startswith("Agent:"))
    assert agent_line.split() == ["Agent:", "-"]


def test_show_result_that_is_not_json_is_shown_as_is(fake: TaskFake) -> None:
    fake.task["result"] = "plain words"
    assert (
        fields_of(invoke(fake, "task", "show", "7").output.split("\nevent")[0])["result"]
        == "plain words"
    )


def test_show_json_adds_events_and_artifacts(fake: TaskFake) -> None:
    r = invoke(fake, "task", "show", "7", "--json")
    data = json.loads(r.output)
    assert data["result"] == TASK["result"]  # JSON text, as DescribeTask gives it
    assert [e["event"] for e in data["events"]] == ["task.created", "task.claimed"]
    assert data["artifacts"] == ARTIFACTS
    assert {k: v for k, v in data.items() if k not in ("events", "artifacts")} == TASK


def test_show_no_such_task(fake: TaskFake) -> None:
    fake.fail["describe_task"] = ClientError("no task 99", "NoSuchTask")
    r = invoke(fake, "task", "show", "99")
    assert (r.exit_code, r.stderr) == (1, "agentctl: no task 99 (NoSuchTask)\n")


def test_show_rejects_a_bad_id(fake: TaskFake) -> None:
    r = invoke(fake, "task", "show", "seven")
    assert r.exit_code == 2 and "invalid task id 'seven'" in r.stderr and fake.calls == []


# -- cancel / retry / unblock -----------------------------------------------------------
def test_cancel_retry_unblock(fake: TaskFake) -> None:
    for args in (
        ["cancel", "7"],
        ["retry", "7"],
        ["unblock", "7", "--note", "use staging"],
        ["unblock", "7"],
    ):
        r = invoke(fake, "task", *args)
        assert r.exit_code == 0 and r.output == "", r.stderr
    assert fake.calls == [
        ("cancel_task", 7),
        ("retry_task", 7),
        ("unblock_task", 7, "use staging"),
        ("unblock_task", 7, ""),
    ]


def test_cancel_json_prints_the_task_after(fake: TaskFake) -> None:
    fake.statuses = ["cancelled"]
    r = invoke(fake, "task", "cancel", "7", "--json")
    assert json.loads(r.output)["status"] == "cancelled"
    assert fake.calls == [("cancel_task", 7), ("describe_task", 7)]


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            ClientError("task 7 is already completed", "Busy"),
            1,
            "agentctl: task 7 is already completed (Busy)",
        ),
        (
            ClientError("task 7 changed meanwhile; try again", "Conflict"),
            1,
            "agentctl: task 7 changed meanwhile; try again (Conflict)",
        ),
        (
            ClientError("task 7 belongs to another user", "PermissionDenied", "denied"),
            77,
            "agentctl: task 7 belongs to another user (PermissionDenied)",
        ),
        (
            ClientError("agentd is not running", kind="unavailable"),
            69,
            "agentctl: agentd is not running",
        ),
    ],
)
def test_task_errors_exit_codes(fake: TaskFake, error: ClientError, code: int, line: str) -> None:
    fake.fail["retry_task"] = error
    r = invoke(fake, "task", "retry", "7")
    assert (r.exit_code, r.stderr, r.stdout) == (code, line + "\n", "")


def test_new_error_names_translate_to_short_names() -> None:
    for name in (
        "NoSuchTask",
        "NoSuchProject",
        "NoCapableAgent",
        "DependencyCycle",
        "InvalidArgument",
        "LeaseExpired",
        "Conflict",
        "Busy",
    ):
        e = translate(SdBusUnmappedMessageError(PREFIX + name, "it went wrong"))
        assert (e.message, e.name, e.kind) == ("it went wrong", name, "failed")
        if PREFIX + name in BY_NAME:  # registered by agentd.api.errors
            e = translate(BY_NAME[PREFIX + name]("it went wrong"))
            assert (e.message, e.name, e.kind) == ("it went wrong", name, "failed")


# -- task wait --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code"), [("completed", 0), ("failed", 1), ("dead_lettered", 3), ("cancelled", 4)]
)
def test_wait_exit_code_from_the_outcome(fake: TaskFake, status: str, code: int) -> None:
    fake.statuses = ["pending", "in_progress", status]
    r = invoke(fake, "task", "wait", "7")
    assert r.exit_code == code, r.stderr
    assert r.stdout == status + "\n"
    assert fake.calls == [
        ("watch_tasks",),
        ("describe_task", 7),
        ("wait", 7),
        ("describe_task", 7),
        ("wait", 7),
        ("describe_task", 7),
        ("unwatch",),
    ]


def test_wait_subscribes_before_the_first_describe(fake: TaskFake) -> None:
    r = invoke(fake, "task", "wait", "7")  # already completed: no waiting at all
    assert r.exit_code == 0
    assert fake.calls == [("watch_tasks",), ("describe_task", 7), ("unwatch",)]


def test_wait_json_prints_the_task(fake: TaskFake) -> None:
    fake.statuses = ["in_progress", "dead_lettered"]
    fake.task["error"] = "lease expired on\nthe last attempt"
    r = invoke(fake, "task", "wait", "7", "--json")
    assert r.exit_code == 3
    assert json.loads(r.stdout)["status"] == "dead_lettered"
    assert r.stderr == "agentctl: task 7 dead-lettered: lease expired on the last attempt\n"


def test_wait_times_out_with_124(fake: TaskFake) -> None:
    fake.statuses = ["in_progress"]
    r = invoke(fake, "task", "wait", "7", "--timeout", "0.05")
    assert r.exit_code == 124
    assert r.stdout == ""
    assert r.stderr == "agentctl: timed out after 0.05s waiting for task 7 (still in_progress)\n"
    assert ("unwatch",) in fake.calls


def test_wait_timeout_zero_checks_once(fake: TaskFake) -> None:
    fake.statuses = ["pending"]
    assert invoke(fake, "task", "wait", "7", "--timeout", "0").exit_code == 124
    assert [c for c in fake.calls if c[0] == "describe_task"] == [("describe_task", 7)]


def test_wait_says_once_per_question_that_the_task_is_blocked(fake: TaskFake) -> None:
    fake.task["block_reason"] = "Which database?"
    fake.statuses = ["blocked", "blocked", "pending", "completed"]
    r = invoke(fake, "task", "wait", "7")
    assert r.exit_code == 0 and r.stdout == "completed\n"
    assert r.stderr == (
        "agentctl: task 7 is blocked: Which database? (answer with: "
        "agentctl task unblock 7 --note TEXT)\n"
    )


def test_wait_rides_out_an_agentd_restart(fake: TaskFake) -> None:
    gone = ClientError(
        "agentd is not running (start it with: systemctl start agentd)", kind="unavailable"
    )
    fake.statuses = ["in_progress", gone, gone, "completed"]
    r = invoke(fake, "task", "wait", "7")
    assert r.exit_code == 0 and r.stdout == "completed\n"
    assert r.stderr.count("\n") == 1 and "still waiting for task 7" in r.stderr


def test_wait_fails_on_other_errors_and_missing_tasks(fake: TaskFake) -> None:
    fake.statuses = [ClientError("no task 7", "NoSuchTask")]
    r = invoke(fake, "task", "wait", "7")
    assert (r.exit_code, r.stderr) == (1, "agentctl: no task 7 (NoSuchTask)\n")
    fake.statuses = [ClientError("task 7 belongs to another user", "PermissionDenied", "denied")]
    assert invoke(fake, "task", "wait", "7").exit_code == 77


def test_wait_polls_without_signals(fake: TaskFake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every wait on the watch is bounded by WAIT_POLL, so a lost signal costs at most that."""
    seen: list[float] = []

    class Watch:
        async def wait(self, task: int, timeout: float) -> bool:
            seen.append(timeout)
            return False

    @contextlib.asynccontextmanager
    async def watch_tasks() -> AsyncIterator[Watch]:
        yield Watch()

    monkeypatch.setattr(task_wait, "WAIT_POLL", 0.5)
    fake.watch_tasks = watch_tasks  # type: ignore[method-assign]
    fake.statuses = ["pending", "pending", "completed"]
    assert invoke(fake, "task", "wait", "7").exit_code == 0
    assert seen == [0.5, 0.5]


# -- TaskWatch (the real client's half of wait) -----------------------------------------
class Msg:
    def __init__(self, *contents: Any) -> None:
        self.contents = contents

    def get_contents(self) -> tuple[Any, ...]:
        return self.contents


def test_task_watch_wakes_for_its_task_only() -> None:
    async def scenario() -> list[bool]:
        watch = TaskWatch()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, watch.on_task_changed, Msg(8, "completed", "task.completed"))
        other = await watch.wait(7, 0.05)  # task 8 changed: not ours
        loop.call_later(0.01, watch.on_task_changed, Msg(7, "in_progress", "task.claimed"))
        ours = await watch.wait(7, 1.0)
        again = await watch.wait(7, 0.01)  # consumed
        watch.on_task_changed(Msg(7, "completed", "task.completed"))  # before the wait
        early = await watch.wait(7, 0.01)
        watch.on_owner_changed(Msg("org.example.Other", ":1.2", ""))
        unrelated = await watch.wait(7, 0.01)
        watch.on_owner_changed(Msg(client_mod.BUS_NAME, ":1.2", ""))  # agentd went away
        left = await watch.wait(7, 1.0)
        watch.on_owner_changed(Msg(client_mod.BUS_NAME, "", ":1.3"))  # and is back
        back = await watch.wait(7, 1.0)
        return [other, ours, again, early, unrelated, left, back]

    assert asyncio.run(scenario()) == [False, True, False, True, False, True, True]


# -- task artifact ----------------------------------------------------------------------
def test_artifact_to_a_file(fake: TaskFake, tmp_path: Path) -> None:
    fake.artifact = b"\x89PNG\r\n\x1a\n\0\0binary"
    out = tmp_path / "chart.png"
    r = invoke(fake, "task", "artifact", "7", "chart.png", "-o", str(out), tty=True)
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes() == fake.artifact and r.output == ""
    assert fake.calls == [("read_artifact", 7, "chart.png")]
    r = invoke(fake, "task", "artifact", "7", "chart.png", "-o", str(out), "--json")
    assert json.loads(r.output) == {
        "task": 7,
        "name": "chart.png",
        "file": str(out),
        "size": len(fake.artifact),
        "sha256": hashlib.sha256(fake.artifact).hexdigest(),
    }


def test_artifact_to_stdout_in_a_pipe(fake: TaskFake) -> None:
    fake.artifact = b"\0\xff\xfebinary"
    r = invoke(fake, "task", "artifact", "7", "blob")
    assert r.exit_code == 0 and r.stdout_bytes == fake.artifact


def test_artifact_refuses_binary_on_a_terminal(fake: TaskFake) -> None:
    fake.artifact = b"\x89PNG\r\n\x1a\n\0\0binary"
    r = invoke(fake, "task", "artifact", "7", "chart.png", tty=True)
    assert r.exit_code == 1 and r.stdout_bytes == b""
    assert r.stderr.count("\n") == 1
    assert "binary" in r.stderr and "> FILE" in r.stderr and "-o FILE" in r.stderr
    r = invoke(fake, "task", "artifact", "7", "chart.png", "-o", "-", tty=True)  # forced
    assert r.exit_code == 0 and r.stdout_bytes == fake.artifact


def test_artifact_text_goes_to_a_terminal(fake: TaskFake) -> None:
    r = invoke(fake, "task", "artifact", "7", "summary.md", tty=True)
    assert r.exit_code == 0 and r.stdout == "# Summary\n"


def test_artifact_json_needs_a_file(fake: TaskFake) -> None:
    r = invoke(fake, "task", "artifact", "7", "summary.md", "--json")
    assert r.exit_code == 2 and fake.calls == []


def test_artifact_unwritable_file(fake: TaskFake, tmp_path: Path) -> None:
    r = invoke(fake, "task", "artifact", "7", "summary.md", "-o", str(tmp_path / "missing" / "x"))
    assert r.exit_code == 1
    assert r.stderr.startswith("agentctl: cannot write ") and "No such file" in r.stderr


def test_artifact_errors(fake: TaskFake) -> None:
    fake.fail["read_artifact"] = ClientError("task 7 has no artifact named 'x'", "InvalidArgument")
    r = invoke(fake, "task", "artifact", "7", "x")
    assert (r.exit_code, r.stderr) == (
        1,
        "agentctl: task 7 has no artifact named 'x' (InvalidArgument)\n",
    )


# -- events -----------------------------------------------------------------------------
def mixed_log() -> list[dict[str, Any]]:
    actions = [
        "agent.create",
        "task.created",
        "agent.start",
        "task.claimed",
        "project.created",
        "task.completed",
        "agent.online",
        "task.failed",
    ]
    return [
        entry(i + 1, action=a, detail={"task_id": 40 + i} if a.startswith("task.") else {})
        for i, a in enumerate(actions)
    ]


def test_events_filters_by_glob(fake: TaskFake) -> None:
    fake.audit = mixed_log()
    r = invoke(fake, "events", "--type", "task.*", "--json")
    assert r.exit_code == 0, r.stderr
    assert [e["action"] for e in json.loads(r.output)] == [
        "task.created",
        "task.claimed",
        "task.completed",
        "task.failed",
    ]
    r = invoke(fake, "events", "-t", "project.*", "-t", "agent.on*,task.fail?d", "--json")
    assert [e["action"] for e in json.loads(r.output)] == [
        "project.created",
        "agent.online",
        "task.failed",
    ]
    r = invoke(fake, "events", "--json")
    assert len(json.loads(r.output)) == 8


def test_events_newest_n_matching_reads_back_in_windows(fake: TaskFake) -> None:
    fake.audit = mixed_log()
    r = invoke(fake, "events", "-t", "task.c*", "-n", "2")
    assert r.exit_code == 0, r.stderr
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["4", "6"]
    assert r.output.splitlines()[1].split("\t")[1:] == [
        local_iso(1700000006.0),
        "root",
        "task.completed",
        "45",
        "scout",
        "ok",
        "",
    ]
    lists = [c[1:] for c in fake.calls if c[0] == "list_events"]
    assert lists == [(6, 2, ("task.c*",)), (2, 4, ("task.c*",))]  # (6, 8], then (2, 6]


def test_events_without_type_is_one_call(fake: TaskFake) -> None:
    fake.audit = mixed_log()
    r = invoke(fake, "events", "-n", "3")
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["6", "7", "8"]
    assert [c for c in fake.calls if c[0] == "list_events"] == [("list_events", 5, 3, ())]


def test_events_when_the_caller_sees_few_rows(
    fake: TaskFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user sees only some rows: the windows widen until the start of the log."""
    monkeypatch.setattr(audit_cmd, "AUDIT_PAGE", 2)
    fake.audit = [e for e in mixed_log() if e["seq"] in (1, 2)]

    async def head() -> int:
        return 100

    fake.audit_head = head  # type: ignore[method-assign]
    r = invoke(fake, "events", "-n", "5", "--json")
    assert [e["seq"] for e in json.loads(r.output)] == [1, 2]


def test_events_after(fake: TaskFake) -> None:
    fake.audit = mixed_log()
    r = invoke(fake, "events", "--after", "2", "-t", "task.*", "-n", "2", "--json")
    assert [e["seq"] for e in json.loads(r.output)] == [4, 6]


def test_events_follow_filters_live_entries(fake: TaskFake) -> None:
    fake.audit = mixed_log()
    fake.live = [
        entry(9, action="agent.offline"),
        entry(10, action="task.dead_lettered", detail={"task_id": 48}),
    ]
    r = invoke(fake, "events", "-f", "-t", "task.*", "-n", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["seq"] for line in r.output.splitlines()] == [8, 10]
    assert ("follow_events", 8, ("task.*",)) in fake.calls  # from the head, not the last match


def test_events_follow_plain_lines(fake: TaskFake) -> None:
    fake.audit = []
    fake.live = [entry(1, action="task.blocked", detail={"task_id": 7, "reason": "why"})]
    r = invoke(fake, "events", "-f")
    assert r.output.splitlines() == [
        f"1\t{local_iso(1700000001.0)}\troot\ttask.blocked\t7\tscout\tok\treason=why"
    ]
    r = invoke(fake, "events", "-f", tty=True)
    assert "task.blocked" in r.output and "reason=why" in r.output


def test_events_on_terminal_is_a_table(fake: TaskFake) -> None:
    fake.audit = mixed_log()
    r = invoke(fake, "events", tty=True)
    assert r.output.splitlines()[0].split()[:7] == [
        "SEQ",
        "TIME",
        "ACTOR",
        "EVENT",
        "TASK",
        "AGENT",
        "RESULT",
    ]
    assert "task.completed" in r.output


# -- the client's side ------------------------------------------------------------------
def test_variants_types_spec_and_filter() -> None:
    assert variants(
        {"title": "T", "needs": ("a", "b"), "after": [3], "max_attempts": 2, "exec": None},
        TASK_SPEC,
        "task",
    ) == {
        "title": ("s", "T"),
        "needs": ("as", ["a", "b"]),
        "after": ("at", [3]),
        "max_attempts": ("u", 2),
    }
    assert variants({"status": "failed", "limit": 5}, TASK_FILTER, "filter") == {
        "status": ("s", "failed"),
        "limit": ("u", 5),
    }
    with pytest.raises(ValueError, match="unknown filter key 'owner'"):
        variants({"owner": "x"}, TASK_FILTER, "filter")


class FakeTasksProxy:
    """The TasksInterface proxy as sdbus would answer, recording what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def submit_task(self, spec: dict) -> int:
        self.sent.append(("submit_task", spec))
        return 12

    async def list_tasks(self, flt: dict) -> list[tuple]:
        self.sent.append(("list_tasks", flt))
        return [(12, "T", "pending", "low", "", "", 0, 3, 1700000000.5)]

    async def describe_task(self, task: int) -> dict:
        return {"id": ("t", task), "needs": ("as", []), "lease_expires": ("d", 1.5)}

    async def list_task_events(self, task: int) -> list[tuple]:
        return [
            (5, 1.0, 0, "task.created", "ok", '{"task_id": 12}'),
            (6, 2.0, 0, "task.claimed", "ok", ""),
        ]

    async def list_artifacts(self, task: int) -> list[tuple]:
        return [("out.txt", "text/plain", "/home/agents/a/artifacts/out.txt", 3, "f" * 64)]

    async def list_projects(self) -> list[tuple]:
        return [("website", "The site", 1000, 4)]

    async def read_artifact(self, task: int, name: str) -> bytes:
        return b"abc"


def test_client_maps_rows_and_sends_typed_variants() -> None:
    c = AgentdClient.__new__(AgentdClient)
    proxy = FakeTasksProxy()
    c.tasks = proxy

    async def scenario() -> dict[str, Any]:
        return {
            "id": await c.submit_task({"title": "T", "after": [1], "priority": None}),
            "list": await c.list_tasks({"status": "pending", "limit": 10}),
            "describe": await c.describe_task(12),
            "events": await c.list_task_events(12),
            "artifacts": await c.list_artifacts(12),
            "projects": await c.list_projects(),
            "data": await c.read_artifact(12, "out.txt"),
        }

    got = asyncio.run(scenario())
    assert got["id"] == 12
    assert proxy.sent == [
        ("submit_task", {"title": ("s", "T"), "after": ("at", [1])}),
        ("list_tasks", {"status": ("s", "pending"), "limit": ("u", 10)}),
    ]
    assert got["list"] == [
        {
            "id": 12,
            "title": "T",
            "status": "pending",
            "priority": "low",
            "project": "",
            "agent": "",
            "attempts": 0,
            "max_attempts": 3,
            "created_at": 1700000000.5,
        }
    ]
    assert got["describe"] == {"id": 12, "needs": [], "lease_expires": 1.5}
    assert [e["detail"] for e in got["events"]] == [{"task_id": 12}, {}]
    assert got["events"][0]["event"] == "task.created"
    assert got["artifacts"][0]["size"] == 3 and got["artifacts"][0]["type"] == "text/plain"
    assert got["projects"] == [
        {"name": "website", "description": "The site", "owner_uid": 1000, "tasks": 4}
    ]
    assert got["data"] == b"abc"


def test_spec_keys_match_the_interface_docs() -> None:
    """The client's key tables follow agentd.api.interfaces (and agentd's own checks)."""
    from agentd.tasks import model as tasks

    assert set(TASK_SPEC) == tasks.SPEC_KEYS
    assert set(TASK_FILTER) == tasks.FILTER_KEYS
    # agentctl has no lists of its own: the commands use agentd's
    assert task_cmd.STATUSES is tasks.STATUSES and task_cmd.PRIORITIES is tasks.PRIORITIES
    assert task_wait.FINAL is tasks.FINAL

"""`agentctl task log`, `task reply` and the steps line of `task show`, against
a stand-in client that runs AgentdClient's own list_task_steps and reply_task
over a Tasks proxy answering ListTaskSteps and ReplyTask as agentd does (JSON
text; a typed D-Bus error, which agentctl.client._call translates)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentctl_fakes import FakeClient, invoke

from agentctl.app import EX_NOPERM
from agentctl.client import AgentdClient
from agentd.api.errors import BY_NAME, PREFIX

STEPS = [
    {
        "n": 1,
        "attempt": 1,
        "tool": "shell",
        "arguments": {"command": "ls -l /srv"},
        "result": "exit 0\nstdout: " + "x" * 500,
        "prompt_tokens": 812,
        "computed_tokens": 812,
        "completion_tokens": 22,
        "seconds": 1.94,
        "at": 1764500000.0,
    },
    {
        "n": 2,
        "attempt": 1,
        "tool": "finish",
        "arguments": {"answer": "done"},
        "result": "",
        "prompt_tokens": 900,
        "computed_tokens": 88,
        "completion_tokens": 10,
        "seconds": 0.5,
        "at": 1764500002.0,
    },
]
TASK = {"id": 7, "title": "t", "status": "blocked", "block_reason": "question: which?"}


class Proxy:
    """The Tasks proxy's two new methods."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str]] = []
        self.refuse: Exception | None = None
        self.steps = json.dumps([*STEPS, "not a step"])  # the client keeps the objects

    async def list_task_steps(self, task: int) -> str:
        if self.refuse:
            raise self.refuse
        return self.steps

    async def reply_task(self, task: int, text: str) -> None:
        self.replies.append((task, text))


class Client(FakeClient):
    """FakeClient, but the trace and the reply go through the real client's methods."""

    list_task_steps = AgentdClient.list_task_steps
    reply_task = AgentdClient.reply_task

    def __init__(self) -> None:
        super().__init__()
        self.tasks = Proxy()

    async def describe_task(self, task: int) -> dict[str, Any]:
        return dict(TASK)

    async def list_task_events(self, task: int) -> list[dict[str, Any]]:
        return []

    async def list_artifacts(self, task: int) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def client() -> Client:
    return Client()


def test_log_prints_one_line_per_step(client: Client) -> None:
    r = invoke(client, "task", "log", "7")
    assert r.exit_code == 0, r.stderr
    lines = [line.split("\t") for line in r.output.splitlines()]
    assert [(f[0], f[1], f[3], f[4]) for f in lines] == [
        ("1", "1", "shell", "ls -l /srv"),
        ("1", "2", "finish", "done"),
    ]
    assert lines[0][5].startswith("exit 0 stdout: xxx")  # on one line
    assert lines[1][6:] == ["900", "88", "10", "0.5"]


def test_log_truncates_results_on_a_terminal(client: Client) -> None:
    r = invoke(client, "task", "log", "7", tty=True)
    assert r.exit_code == 0, r.stderr
    assert "x" * 300 not in r.output.replace("\n", "").replace("│", "")


def test_log_json_is_every_step_as_agentd_keeps_it(client: Client) -> None:
    r = invoke(client, "task", "log", "7", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.output) == STEPS


def test_log_of_someone_elses_task_fails_with_agentds_refusal(client: Client) -> None:
    refusal = BY_NAME[PREFIX + "PermissionDenied"]("uid 1001 may not task.show task 7")
    client.tasks.refuse = refusal  # as sdbus raises it: the client translates it
    r = invoke(client, "task", "log", "7")
    assert r.exit_code == EX_NOPERM and "may not task.show" in r.stderr, (r.exit_code, r.stderr)


def test_log_of_a_malformed_trace_is_an_error_not_a_traceback(client: Client) -> None:
    client.tasks.steps = "not json"
    r = invoke(client, "task", "log", "7")
    assert r.exit_code == 1 and "malformed JSON" in r.stderr, (r.exit_code, r.stderr)
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_show_summarises_the_steps_and_their_computed_tokens(client: Client) -> None:
    r = invoke(client, "task", "show", "7")
    assert r.exit_code == 0, r.stderr
    fields = dict(line.split("\t", 1) for line in r.output.splitlines() if "\t" in line)
    assert fields["steps"] == ("2 steps; tokens: prompt 1712 (computed 900: 812/88), completion 32")
    shown = json.loads(invoke(client, "task", "show", "7", "--json").output)
    assert shown["steps"] == STEPS


def test_reply_sends_the_text(client: Client) -> None:
    r = invoke(client, "task", "reply", "7", "Use /srv/data")
    assert r.exit_code == 0, r.stderr
    assert r.output == "" and client.tasks.replies == [(7, "Use /srv/data")]
    r = invoke(client, "task", "reply", "7", "again", "--json")
    assert json.loads(r.output)["id"] == 7

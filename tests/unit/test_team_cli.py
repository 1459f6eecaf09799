"""`agentctl team` and `agentctl msg` through AgentdClient's own Teams and Messages
methods (agentctl.client_teams), over stand-in proxies answering as agentd does
(JSON text, or a typed D-Bus error that the client's one translation point,
agentctl.client._call, turns into ClientError); and `task submit --team`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentctl_fakes import NOBODY_UID, FakeClient, invoke, refusal

from agentctl.app import EX_NOPERM
from agentctl.client import AgentdClient, _call, _json
from agentctl.client_teams import TeamCalls

TEAM = {
    "name": "research",
    "owner_uid": NOBODY_UID,
    "description": "Reads together",
    "group": "agentd-team-research",
    "gid": 60990,
    "directory": "/home/agents/.teams/research",
    "members": ["scout", "writer", "idle"],
    "created_at": 1764500000.0,
    "open_tasks": 2,
}


def message(mid: int, **kw: Any) -> dict[str, Any]:
    m = {
        "id": mid,
        "from": "uid 3999999999",
        "from_kind": "person",
        "from_uid": 3_999_999_999,
        "to": "scout",
        "to_kind": "agent",
        "subject": "",
        "body": f"message {mid}",
        "sent_at": 1764500000.0 + mid,
        "deliveries": 0,
        "acked_at": None,
    }
    m.update(kw)
    return m


class Proxy:
    """The Teams and Messages proxies as sdbus answers; ListMessages answers from
    a script of batches, then is interrupted (Ctrl-C) when the script is done."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.refuse: dict[str, Exception] = {}
        self.batches: list[list[dict[str, Any]]] = []
        self.archive = "/var/lib/agentd/archive/team-research-1764500000.tar.zst"

    def _answer(self, method: str, *args: Any) -> None:
        self.sent.append((method, *args))
        if method in self.refuse:
            raise self.refuse[method]

    async def create_team(self, name: str, description: str) -> None:
        self._answer("create_team", name, description)

    async def remove_team(self, name: str, restart: bool) -> str:
        self._answer("remove_team", name, restart)
        return self.archive

    async def add_members(self, name: str, agents: list[str], restart: bool) -> None:
        self._answer("add_members", name, agents, restart)

    async def remove_members(self, name: str, agents: list[str], restart: bool) -> None:
        self._answer("remove_members", name, agents, restart)

    async def list_teams(self) -> str:
        self._answer("list_teams")
        return json.dumps([TEAM, dict(TEAM, name="empty", members=[], open_tasks=0)])

    async def get_team(self, name: str) -> str:
        self._answer("get_team", name)
        return json.dumps(dict(TEAM, applied={"scout": True, "writer": False, "idle": None}))

    async def send_message(self, agent: str, subject: str, body: str) -> int:
        self._answer("send_message", agent, subject, body)
        return 17

    async def list_messages(self, agent: str, options: dict[str, tuple[str, Any]]) -> str:
        self._answer("list_messages", agent, options)
        if not self.batches:
            raise KeyboardInterrupt
        return json.dumps(self.batches.pop(0))


class TasksProxy:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def submit_task(self, spec: dict[str, tuple[str, Any]]) -> int:
        self.sent.append(("submit_task", spec))
        return 42


class Client(FakeClient, TeamCalls):
    """FakeClient with the real client's Teams and Messages methods (and SubmitTask)."""

    _translated = staticmethod(_call)
    _reply = staticmethod(_json)
    submit_task = AgentdClient.submit_task

    def __init__(self) -> None:
        super().__init__()
        self.teams = self.messages = Proxy()
        self.tasks = TasksProxy()


@pytest.fixture
def client() -> Client:
    return Client()


def sent(client: Client) -> list[tuple[Any, ...]]:
    return client.teams.sent


# -- teams ------------------------------------------------------------------------------
def test_create_sends_the_description_and_prints_the_name(client: Client) -> None:
    r = invoke(client, "team", "create", "research", "-d", "Reads together")
    assert (r.exit_code, r.output) == (0, "research\n"), r.stderr
    assert sent(client) == [("create_team", "research", "Reads together")]
    r = invoke(client, "team", "create", "ops", "--json")
    assert sent(client)[-2:] == [("create_team", "ops", ""), ("get_team", "ops")]
    assert json.loads(r.output)["directory"] == "/home/agents/.teams/research"


def test_add_and_remove_send_the_agents_and_restart(client: Client) -> None:
    r = invoke(client, "team", "add", "research", "scout", "writer", "--restart")
    assert (r.exit_code, r.output) == (0, ""), r.stderr
    r = invoke(client, "team", "remove", "research", "writer")
    assert (r.exit_code, r.output) == (0, ""), r.stderr
    assert sent(client) == [
        ("add_members", "research", ["scout", "writer"], True),
        ("remove_members", "research", ["writer"], False),
    ]
    r = invoke(client, "team", "add", "research", "idle", "--json")
    assert json.loads(r.output)["applied"]["idle"] is None
    assert sent(client)[-1] == ("get_team", "research")
    r = invoke(client, "team", "add", "research")  # no AGENT: a usage error
    assert r.exit_code == 2 and len(sent(client)) == 4


def test_list_is_one_line_per_team_and_json_the_list(client: Client) -> None:
    r = invoke(client, "team", "ls")
    assert r.exit_code == 0, r.stderr
    assert [line.split("\t") for line in r.output.splitlines()] == [
        ["empty", str(NOBODY_UID), "-", "0", "Reads together"],
        ["research", str(NOBODY_UID), "scout,writer,idle", "2", "Reads together"],
    ]
    r = invoke(client, "team", "list", "--json")
    assert [t["name"] for t in json.loads(r.output)] == ["empty", "research"]


def test_show_says_per_member_whether_the_team_applies(client: Client) -> None:
    r = invoke(client, "team", "show", "research")
    assert r.exit_code == 0, r.stderr
    lines = r.output.splitlines()
    assert "directory\t/home/agents/.teams/research" in lines
    assert "group\tagentd-team-research" in lines and "gid\t60990" in lines
    assert [line for line in lines if line.startswith("member\t")] == [
        "member\tscout\trunning, applied",
        "member\twriter\trunning, applies at next start",
        "member\tidle\tnot running",
    ]
    assert not any(line.startswith(("members\t", "applied\t")) for line in lines)
    r = invoke(client, "team", "show", "research", "--json")
    assert json.loads(r.output)["applied"] == {"scout": True, "writer": False, "idle": None}
    r = invoke(client, "team", "show", "research", tty=True)
    assert "running, applies at next start" in r.output and "Members" in r.output


def test_rm_prints_the_archive_if_any(client: Client) -> None:
    r = invoke(client, "team", "rm", "research", "--restart")
    assert (r.exit_code, r.output) == (0, client.teams.archive + "\n"), r.stderr
    assert sent(client) == [("remove_team", "research", True)]
    client.teams.archive = ""
    r = invoke(client, "team", "rm", "research")
    assert (r.exit_code, r.output) == (0, "")
    assert sent(client)[-1] == ("remove_team", "research", False)
    r = invoke(client, "team", "rm", "research", "--json")
    assert json.loads(r.output) == {"name": "research", "removed": True, "archive": None}


def test_a_refusal_is_one_line_with_its_exit_status(client: Client) -> None:
    client.teams.refuse["add_members"] = refusal(
        "PermissionDenied", "uid 1001 may not manage team research"
    )
    r = invoke(client, "team", "add", "research", "scout")
    assert r.exit_code == EX_NOPERM
    assert r.stderr == "agentctl: uid 1001 may not manage team research (PermissionDenied)\n"


# -- messages ---------------------------------------------------------------------------
def test_send_prints_the_id_and_reads_stdin_for_dash(client: Client) -> None:
    r = invoke(client, "msg", "send", "scout", "Use staging", "--subject", "db")
    assert (r.exit_code, r.output) == (0, "17\n"), r.stderr
    from click.testing import CliRunner

    from agentctl.app import Env
    from agentctl.cli import cli

    r = CliRunner(mix_stderr=False).invoke(
        cli,
        ["msg", "send", "scout", "-", "--json"],
        input="line one\nline two\n\n",
        obj=Env(connect=lambda: client, tty=False),
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.output) == {"id": 17}
    assert sent(client) == [
        ("send_message", "scout", "db", "Use staging"),
        ("send_message", "scout", "", "line one\nline two"),
    ]
    r = invoke(client, "msg", "send", "scout", "")
    assert r.exit_code == 2 and len(sent(client)) == 2


def test_list_sends_after_and_limit_and_cuts_bodies_to_a_line(client: Client) -> None:
    client.messages.batches = [
        [
            message(5, subject="plan", body="first line\nsecond line"),
            message(6, **{"from": "scout", "from_kind": "agent", "to": "uid 3999999999"}),
        ]
    ]
    r = invoke(client, "msg", "list", "scout", "--after", "#4", "--limit", "20")
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in r.output.splitlines()]
    assert [(f[0], f[2], f[3], f[4]) for f in rows] == [
        ("5", "uid 3999999999 -> scout", "plan", "first line …"),
        ("6", "scout -> uid 3999999999", "-", "message 6"),
    ]
    assert sent(client) == [("list_messages", "scout", {"after": ("t", 4), "limit": ("u", 20)})]
    client.messages.batches = [[message(7)]]
    r = invoke(client, "msg", "list", "scout", "--json")
    assert [m["id"] for m in json.loads(r.output)] == [7]
    assert sent(client)[-1] == ("list_messages", "scout", {})
    r = invoke(client, "msg", "list", "scout", "--limit", "501")
    assert r.exit_code == 2


def test_follow_asks_after_the_last_id_seen_until_interrupted(client: Client) -> None:
    client.messages.batches = [[message(3), message(4)], [], [message(9)]]
    r = invoke(client, "msg", "follow", "scout")
    assert r.exit_code == 0, r.stderr
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["3", "4", "9"]
    wait = ("u", 30000)
    assert sent(client) == [
        ("list_messages", "scout", {"after": ("t", 0), "wait_ms": wait}),
        ("list_messages", "scout", {"after": ("t", 4), "wait_ms": wait}),
        ("list_messages", "scout", {"after": ("t", 4), "wait_ms": wait}),
        ("list_messages", "scout", {"after": ("t", 9), "wait_ms": wait}),
    ]


def test_follow_json_is_one_object_per_line_from_after(client: Client) -> None:
    client.messages.batches = [[message(12)], [message(13, body="a\nb")]]
    r = invoke(client, "msg", "follow", "scout", "--after", "11", "--json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["body"] for line in r.output.splitlines()] == ["message 12", "a\nb"]
    assert [c[2]["after"] for c in sent(client)] == [("t", 11), ("t", 12), ("t", 13)]
    client.messages.batches = [[message(20, subject="hi")]]
    r = invoke(client, "msg", "follow", "scout", tty=True)
    assert r.exit_code == 0 and "uid 3999999999 -> scout" in r.output and "hi" in r.output


# -- tasks ------------------------------------------------------------------------------
def test_task_submit_team_goes_into_the_spec(client: Client) -> None:
    r = invoke(client, "task", "submit", "Survey", "--team", "research", "--needs", "read")
    assert (r.exit_code, r.output) == (0, "42\n"), r.stderr
    assert client.tasks.sent == [
        (
            "submit_task",
            {"title": ("s", "Survey"), "needs": ("as", ["read"]), "team": ("s", "research")},
        )
    ]

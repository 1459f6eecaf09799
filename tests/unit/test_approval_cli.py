"""`agentctl approval` through AgentdClient's own Approvals methods, over a
stand-in proxy answering ListApprovals, GetApproval, GrantApproval and
DenyApproval as agentd does (JSON text, or a typed D-Bus error that the
client's one translation point, agentctl.client._call, turns into ClientError).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from agentctl_fakes import FakeClient, invoke

from agentctl.app import EX_NOPERM
from agentctl.client import AgentdClient, ClientError
from agentd.api.errors import BY_NAME, PREFIX


def approval(aid: int, status: str = "pending", **kw: Any) -> dict[str, Any]:
    a = {
        "id": aid,
        "task": 40 + aid,
        "agent": "scout",
        "owner_uid": 1000,
        "attempt": 1,
        "tool": "shell",
        "arguments": {"command": f"rm -rf /srv/build{aid}"},
        "why": "shell is gated",
        "status": status,
        "reason": "",
        "always": False,
        "created_at": 1764500000.0 + aid,
        "deadline": 1764503600.0 + aid,
        "answered_by": -1,
        "answered_at": 0.0,
    }
    a.update(kw)
    return a


class Proxy:
    """The Approvals proxy as sdbus answers: JSON text, newest first."""

    def __init__(self) -> None:
        self.rows = [
            approval(3, "granted"),
            approval(2),
            approval(1, tool="write_file", arguments={"path": "a.txt"}),
        ]
        self.sent: list[tuple[Any, ...]] = []
        self.refuse: Exception | None = None
        self.reply: str | None = None  # instead of the JSON of the approval

    def _answer(self, method: str, *args: Any) -> str:
        self.sent.append((method, *args))
        if self.refuse:
            raise self.refuse
        return self.reply if self.reply is not None else json.dumps(self._one(args[0]))

    def _one(self, aid: int) -> dict[str, Any]:
        return next(a for a in self.rows if a["id"] == aid)

    async def list_approvals(self) -> str:
        self.sent.append(("list_approvals",))
        if self.refuse:
            raise self.refuse
        return self.reply if self.reply is not None else json.dumps(self.rows)

    async def get_approval(self, aid: int) -> str:
        return self._answer("get_approval", aid)

    async def grant_approval(self, aid: int, always: bool) -> str:
        self._one(aid).update(status="granted", always=always, answered_by=1000)
        return self._answer("grant_approval", aid, always)

    async def deny_approval(self, aid: int, reason: str) -> str:
        self._one(aid).update(status="denied", reason=reason, answered_by=1000)
        return self._answer("deny_approval", aid, reason)


class Client(FakeClient):
    """FakeClient with the real client's Approvals methods over the stand-in proxy."""

    list_approvals = AgentdClient.list_approvals
    get_approval = AgentdClient.get_approval
    grant_approval = AgentdClient.grant_approval
    deny_approval = AgentdClient.deny_approval

    def __init__(self) -> None:
        super().__init__()
        self.approvals = Proxy()


@pytest.fixture
def client() -> Client:
    return Client()


def refusal(name: str, message: str) -> Exception:
    return BY_NAME[PREFIX + name](message)


def test_list_is_oldest_first_one_line_each(client: Client) -> None:
    r = invoke(client, "approval", "list")
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in r.output.splitlines()]
    assert [(f[0], f[1], f[2], f[4]) for f in rows] == [
        ("1", "pending", "41", "write_file"),
        ("2", "pending", "42", "shell"),
        ("3", "granted", "43", "shell"),
    ]
    assert rows[1][6] == "rm -rf /srv/build2"  # the shell command itself
    assert json.loads(rows[0][6]) == {"path": "a.txt"}  # other tools: their arguments


def test_list_by_status_and_as_json(client: Client) -> None:
    r = invoke(client, "approval", "ls", "--status", "granted")
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["3"]
    r = invoke(client, "approval", "list", "--json")
    assert [a["id"] for a in json.loads(r.output)] == [1, 2, 3]


def test_show_prints_the_exact_action(client: Client) -> None:
    r = invoke(client, "approval", "show", "#2")
    assert r.exit_code == 0, r.stderr
    fields = dict(line.split("\t", 1) for line in r.output.splitlines())
    assert fields["arguments"] == "rm -rf /srv/build2" and fields["status"] == "pending"
    assert client.approvals.sent == [("get_approval", 2)]


def test_grant_and_deny_send_the_answer(client: Client) -> None:
    r = invoke(client, "approval", "grant", "2", "--always")
    assert r.exit_code == 0 and r.output == "", r.stderr
    r = invoke(client, "approval", "deny", "1", "--reason", "not there", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.output)["status"] == "denied"
    assert client.approvals.sent == [
        ("grant_approval", 2, True),
        ("deny_approval", 1, "not there"),
    ]


def test_a_refusal_is_one_line_and_its_exit_status(client: Client) -> None:
    client.approvals.refuse = refusal("PermissionDenied", "uid 1001 may not approval.grant 2")
    r = invoke(client, "approval", "grant", "2")
    assert r.exit_code == EX_NOPERM, (r.exit_code, r.stderr)
    assert "may not approval.grant" in r.stderr and "Traceback" not in r.stderr
    client.approvals.refuse = refusal("Busy", "approval 3 is granted, not pending")
    r = invoke(client, "approval", "deny", "3")
    assert r.exit_code == 1 and "not pending" in r.stderr, (r.exit_code, r.stderr)


def test_the_client_translates_and_checks_every_answer() -> None:
    c = Client()
    c.approvals.refuse = refusal("NoSuchApproval", "no approval 9")
    with pytest.raises(ClientError) as e:
        asyncio.run(c.get_approval(9))
    assert (e.value.name, e.value.kind) == ("NoSuchApproval", "failed")
    c.approvals.refuse = None
    for bad, call in (
        ("[]", c.get_approval(1)),  # an object expected
        ("{", c.grant_approval(1)),
        ("{}", c.list_approvals()),  # a list expected
    ):
        c.approvals.reply = bad
        with pytest.raises(ClientError, match="malformed JSON"):
            asyncio.run(call)
    c.approvals.reply = json.dumps([approval(1), "not an approval"])
    assert [a["id"] for a in asyncio.run(c.list_approvals())] == [1]

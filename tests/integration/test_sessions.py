"""Chat sessions in the machine (issue 13): a conversation kept by agentd, resumed
with `agentctl chat --resume`, its older turns folded into a summary by the real
model once they outgrow the context, surviving kill -9 of agentd; another owner
is refused (audited), removal is audited, and an agent's removal takes its
sessions. The default model (SmolLM2-135M, 2,048 tokens per sequence)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentd_helpers import Agentd, kill_agentd_and_wait, wait_for

pytestmark = pytest.mark.integration
AGENT = "sess-a1"
DB = "/var/lib/agentd/agentd.db"


@pytest.fixture(scope="module")
def chat(agentd: Agentd) -> Agentd:
    agentd.create(AGENT, template="sandbox", user="alice")
    wait_for(lambda: agentd.ctl_json("model", "show")["state"] == "loaded", 120, "model loaded")
    return agentd


def say(a: Agentd, text: str, *how: str, user: str = "alice") -> dict[str, Any]:
    r = a.ctl("chat", AGENT, "-m", text, "--max-tokens", "24", "--json", *how, user=user)
    return dict(json.loads(r.stdout))


def test_a_conversation_is_kept_resumed_and_survives_agentd(chat: Agentd) -> None:
    a = chat
    first = say(a, "My name is Ann and I keep bees.", "--save")
    sid = first["session"]
    assert isinstance(sid, int) and first["completion_tokens"] > 0
    (row,) = [s for s in a.ctl_json("session", "list", user="alice") if s["id"] == sid]
    assert (row["agent"], row["turns"], row["title"]) == (
        AGENT,
        2,
        "My name is Ann and I keep bees.",
    )
    kill_agentd_and_wait(a)  # what was answered is on disk
    second = say(a, "What do I keep?", "--resume")  # the latest session
    assert second["session"] == sid
    shown = a.ctl_json("session", "show", str(sid), user="alice")
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"] * 2
    assert shown["messages"][2]["content"] == "What do I keep?"
    assert shown["messages"][1]["content"] == first["text"]
    turns = a.sh(["sqlite3", DB, f"SELECT count(*) FROM chat_turns WHERE session_id={sid}"])
    assert turns.stdout.strip() == "4"
    # a one-off message is not a session
    say(a, "Unrelated question")
    assert [s["id"] for s in a.ctl_json("session", "list", AGENT, user="alice")] == [sid]


def test_another_owner_is_refused_and_audited(chat: Agentd) -> None:
    a = chat
    sid = say(a, "Private notes", "--save")["session"]
    r = a.ctl("session", "show", str(sid), user="bob", check=False)
    assert r.returncode == 77 and "(PermissionDenied)" in r.stderr, r.stderr
    r = a.ctl("chat", AGENT, "--resume", str(sid), "-m", "hi", user="bob", check=False)
    assert r.returncode == 77, r.stderr
    assert a.ctl_json("session", "list", user="bob") == []
    denied = [e for e in a.audit(agent=AGENT) if e["result"] == "denied"]
    assert {"session.show", "model.chat"} <= {e["action"] for e in denied}
    r = a.ctl("session", "show", "999999", user="alice", check=False)
    assert r.returncode == 1 and "(NoSuchSession)" in r.stderr
    a.ctl("session", "rm", str(sid), user="alice")
    (removed,) = [e for e in a.audit("session.removed", AGENT) if e["detail"]["session"] == sid]
    assert removed["actor_uid"] == a.uid_of("alice")


def test_turns_that_outgrow_the_context_are_folded_by_the_model(chat: Agentd) -> None:
    """Each message ~1,500 characters (~350 tokens): by the fifth the turns pass the
    2,048-token context, and agentd folds the oldest into a summary."""
    a = chat
    para = (
        "Our apiary has {n} hives on the north slope. Each hive is inspected every "
        "week for mites, queen health and honey stores, and the notes go into a "
        "shared notebook. "
    )
    sid = say(a, para.format(n=3) * 8, "--save")["session"]
    for n in range(4, 16):  # at most 12 more: the context may be larger than 2,048
        r = a.ctl(
            "chat",
            AGENT,
            "--resume",
            str(sid),
            "-m",
            para.format(n=n) * 8,
            "--max-tokens",
            "16",
            user="alice",
        )
        assert r.returncode == 0, r.stderr
        if "older turns summarized" in r.stderr:
            break
    assert "older turns summarized" in r.stderr, r.stderr
    shown = a.ctl_json("session", "show", str(sid), user="alice")
    assert shown["folded"] >= 2 and shown["summary"].strip()
    assert len(shown["messages"]) == shown["turns"]  # folded turns stay listed
    if shown["facts"]:  # the model found some, and the embedding model stored them
        memory = a.ctl_json("memory", "list", AGENT, user="alice")
        assert any(m["source"] == f"session/{sid}" for m in memory)


def test_an_agents_removal_takes_its_sessions(chat: Agentd) -> None:
    a = chat
    a.create("sess-gone", template="sandbox", user="alice")
    r = a.ctl(
        "chat", "sess-gone", "-m", "hello", "--max-tokens", "8", "--save", "--json", user="alice"
    )
    sid = json.loads(r.stdout)["session"]
    a.ctl("agent", "rm", "sess-gone", user="alice")
    wait_for(
        lambda: sid not in [s["id"] for s in a.ctl_json("session", "list", user="alice")],
        60,
        "the removed agent's sessions gone",
    )
    left = a.sh(["sqlite3", DB, f"SELECT count(*) FROM chat_turns WHERE session_id={sid}"])
    assert left.stdout.strip() == "0"

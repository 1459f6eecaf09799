"""Agent memory in the machine (issue 13): an owner adds a document and searches
it, an agent recalls its own memory and its owner's knowledge through the
Runtime interface as its own UID, another owner's agent cannot, removal clears
it, and neither the embedding service's restart nor agentd's loses it. Real
embeddings (all-MiniLM-L6-v2, converted by `agentctl model install minilm`),
real bus, real users."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
DEST, ROOT = "org.agentos.agentd1", "/org/agentos/agentd1"
MEM, RUNTIME = "org.agentos.agentd1.Memory", "org.agentos.agentd1.Runtime"
MEMORY_DB = "/var/lib/agentd/memory.db"
NOTES = """# Backups

The backup server is called vault. It keeps fourteen daily copies of every home.

# Printers

The office printer on the second floor is named inkwell.
"""
HANDBOOK = "The guest wifi network is called lobby and its password is marmalade-42."


def call(
    a: Agentd,
    iface: str,
    method: str,
    sig: str,
    *args: str,
    user: str | None = None,
    check: bool = True,
) -> Any:
    """busctl call as USER; the reply's JSON string decoded (or the process, if it failed)."""
    r = a.busctl(
        "--json=short", "call", DEST, ROOT, iface, method, sig, *args, user=user, check=check
    )
    if r.returncode:
        return r
    data = json.loads(r.stdout)["data"][0]
    return json.loads(data) if isinstance(data, str) else data


def as_agent(a: Agentd, name: str, method: str, sig: str, *args: str) -> Any:
    """A Runtime call as agent NAME's own UID (and the agents' group), as its runtime makes it."""
    info = a.ctl_json("agent", "show", name)
    gid = a.sh(["getent", "group", "agentd-agents"]).stdout.split(":")[2]
    r = a.m.run(
        [
            "setpriv",
            f"--reuid={info['uid']}",
            f"--regid={info['gid']}",
            f"--groups={gid}",
            "--",
            "busctl",
            "--system",
            "--json=short",
            "call",
            DEST,
            ROOT,
            RUNTIME,
            method,
            sig,
            *args,
        ],
        check=False,
    )
    if r.returncode:
        return r
    return json.loads(json.loads(r.stdout)["data"][0])


@pytest.fixture(scope="module")
def mem(agentd: Agentd) -> Agentd:
    a = agentd
    models = a.ctl_json("model", "list")
    if not any(m["name"] == "minilm" and m.get("installed") for m in models):
        pytest.fail("the embedding model is not installed (make model-minilm; provision.py)")
    wait_for(lambda: a.ctl_json("model", "show").get("embedding_name"), 120, "embedding loaded")
    a.create("mem-a1", user="alice")
    a.create("mem-b1", user="bob")
    return a


def test_an_owner_adds_a_document_and_finds_it_by_meaning(mem: Agentd) -> None:
    a = mem
    added = call(
        a, MEM, "AddMemory", "sssb", "agent/mem-a1", "notes.md", NOTES, "false", user="alice"
    )
    assert added["added"] == 2 and added["tokens"] > 0, added
    again = call(
        a, MEM, "AddMemory", "sssb", "agent/mem-a1", "notes.md", NOTES, "false", user="alice"
    )
    assert again["added"] == 0 and again["skipped"] == 2
    hits = call(
        a,
        MEM,
        "SearchMemory",
        "assu",
        "1",
        "agent/mem-a1",
        "where are home copies kept",
        "3",
        user="alice",
    )
    assert hits and "vault" in hits[0]["text"] and hits[0]["heading"] == ["Backups"]
    # metered: usage rows of kind embed for the agent
    used = a.sh(
        [
            "sqlite3",
            "/var/lib/agentd/agentd.db",
            "SELECT SUM(prompt_tokens) FROM usage WHERE kind='embed' AND agent='mem-a1'",
        ]
    )
    assert int(used.stdout.strip() or 0) >= added["tokens"]
    assert a.audit("memory.added", agent="mem-a1")
    st = a.sh(["stat", "-c", "%U %a", MEMORY_DB]).stdout.split()
    assert st == ["root", "600"], st


def test_a_document_sent_in_pieces_goes_on_where_the_last_piece_ended(mem: Agentd) -> None:
    """agentctl sends a file over 256 KiB in pieces: AddMemory, then ContinueMemory
    with each reply's "next", so positions, lines and headings run on."""
    a = mem
    first = call(
        a, MEM, "AddMemory", "sssb", "agent/mem-a1", "long.md", NOTES, "false", user="alice"
    )
    at = first["next"]
    assert at == {
        "position": 2,
        "byte": len(NOTES.encode()),
        "line": NOTES.count("\n") + 1,
        "headings": [[1, "Printers"]],
    }
    more = "It prints double-sided by default.\n"
    args = [str(at["position"]), str(at["byte"]), str(at["line"]), "1", "1", "Printers"]

    def go_on(resume: list[str], user: str, check: bool = True) -> Any:
        scope, source = "agent/mem-a1", "long.md"
        sig = "sssutua(ys)"
        return call(
            a, MEM, "ContinueMemory", sig, scope, source, more, *resume, user=user, check=check
        )

    r = go_on(args, "bob", check=False)
    assert r.returncode and "may not" in r.stderr, r.stderr
    r = go_on([*args[:3], "2", "2", "Setup", "1", "Printers"], "alice", check=False)  # out of order
    assert r.returncode and "headings: levels" in r.stderr, r.stderr
    cont = go_on(args, "alice")
    assert cont["added"] == 1 and cont["next"]["position"] == 3
    [record] = [
        r
        for r in call(
            a, MEM, "ListMemory", "ssuu", "agent/mem-a1", "long.md", "0", "10", user="alice"
        )
        if r["text"] == more.strip() or r["text"] == more
    ]
    assert record["position"] == 2 and record["heading"] == ["Printers"]
    assert record["start_line"] == at["line"]
    assert call(a, MEM, "RemoveMemorySource", "ss", "agent/mem-a1", "long.md", user="alice") == 3


def test_another_owner_is_refused_and_audited(mem: Agentd) -> None:
    a = mem
    r = call(
        a, MEM, "SearchMemory", "assu", "1", "agent/mem-a1", "backup", "3", user="bob", check=False
    )
    assert r.returncode and "may not read" in r.stderr, r.stderr
    r = call(
        a,
        MEM,
        "ListMemory",
        "ssuu",
        "knowledge/" + str(a.uid_of("alice")),
        "",
        "0",
        "10",
        user="bob",
        check=False,
    )
    assert r.returncode and "belongs to another user" in r.stderr, r.stderr
    assert any(e["result"] == "denied" for e in a.audit("memory.read"))


def test_an_agent_recalls_its_memory_and_its_owners_knowledge_not_others(mem: Agentd) -> None:
    a = mem
    call(a, MEM, "AddMemory", "sssb", "knowledge", "handbook.md", HANDBOOK, "false", user="alice")
    mine = as_agent(a, "mem-a1", "Recall", "sut", "what is the guest wifi password", "5", "0")
    assert mine and mine[0]["scope"] == "knowledge" and "marmalade" in mine[0]["text"], mine
    printer = as_agent(a, "mem-a1", "Recall", "sut", "name of the office printer", "5", "0")
    assert printer and printer[0]["scope"] == "agent" and "inkwell" in printer[0]["text"]
    # bob's agent: nothing of alice's, by meaning or by keyword
    for query in ("what is the guest wifi password", "inkwell printer", "marmalade"):
        theirs = as_agent(a, "mem-b1", "Recall", "sut", query, "5", "0")
        assert not isinstance(theirs, list) or all(
            "marmalade" not in h["text"] and "inkwell" not in h["text"] for h in theirs
        ), theirs
    # an agent cannot use the people's interface, even on its own memory
    info = a.ctl_json("agent", "show", "mem-a1")
    r = a.m.run(
        [
            "setpriv",
            f"--reuid={info['uid']}",
            f"--regid={info['gid']}",
            "--clear-groups",
            "busctl",
            "--system",
            "call",
            DEST,
            ROOT,
            MEM,
            "ListMemory",
            "ssuu",
            "agent/mem-a1",
            "",
            "0",
            "10",
        ],
        check=False,
    )
    assert r.returncode
    remembered = as_agent(a, "mem-a1", "Remember", "sst", "The owner likes tea.", "fact", "0")
    assert remembered["added"] == 1


def test_memory_survives_restarts_of_the_model_service_and_agentd(mem: Agentd) -> None:
    a = mem
    a.sh(["systemctl", "restart", "agentd-inference.service"])
    wait_for(lambda: a.ctl_json("model", "show").get("embedding_name"), 120, "embedding back")
    a.restart()
    hits = call(
        a, MEM, "SearchMemory", "assu", "1", "agent/mem-a1", "backup server name", "3", user="alice"
    )
    assert hits and "vault" in hits[0]["text"]


def test_removing_an_agent_removes_its_memory(mem: Agentd) -> None:
    a = mem
    a.create("mem-gone", user="alice")
    call(
        a,
        MEM,
        "AddMemory",
        "sssb",
        "agent/mem-gone",
        "n.md",
        "The gate code is 4711.",
        "false",
        user="alice",
    )
    agent_id = a.ctl_json("agent", "show", "mem-gone")["id"]
    count = f"SELECT COUNT(*) FROM chunks WHERE scope_kind='agent' AND scope_id={agent_id}"
    assert a.sh(["sqlite3", MEMORY_DB, count]).stdout.strip() == "1"
    a.ctl("agent", "rm", "mem-gone", user="alice")
    wait_for(lambda: a.sh(["sqlite3", MEMORY_DB, count]).stdout.strip() == "0", 30, "dropped")
    a.create("mem-gone", user="alice")  # the name again: a new agent, with nothing remembered
    listed = call(a, MEM, "ListMemory", "ssuu", "agent/mem-gone", "", "0", "10", user="alice")
    assert listed == []
    a.ctl("agent", "rm", "--force", "mem-gone")


def test_agentctl_adds_searches_lists_and_exports(mem: Agentd) -> None:
    """The same through agentctl, as alice: a file into her agent's memory and
    into her knowledge base, then search, list, export and rm."""
    a = mem
    a.m.write_file(
        "/tmp/plants.md", "# Plants\n\nThe fern on the desk needs water on Fridays.\n", mode=0o644
    )
    added = a.ctl_json("memory", "add", "mem-a1", "/tmp/plants.md", user="alice")
    assert json.dumps(added).count("added") and "Fridays" not in json.dumps(added)
    hits = a.ctl_json("memory", "search", "mem-a1", "when do I water the fern", user="alice")
    assert hits and "Fridays" in hits[0]["text"], hits
    listed = a.ctl_json("memory", "list", "mem-a1", "--source", "/tmp/plants.md", user="alice")
    assert len(listed) == 1
    lines = a.ctl("memory", "export", "mem-a1", user="alice").stdout.splitlines()
    assert any("Fridays" in json.loads(line)["text"] for line in lines)
    r = a.ctl("memory", "search", "mem-a1", "fern", user="bob", check=False)
    assert r.returncode == 77, r.stderr  # PermissionDenied
    a.ctl("memory", "rm", "--source", "/tmp/plants.md", "mem-a1", user="alice")
    assert a.ctl_json("memory", "list", "mem-a1", "--source", "/tmp/plants.md", user="alice") == []

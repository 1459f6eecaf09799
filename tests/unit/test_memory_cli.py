"""`agentctl memory` and `agentctl knowledge` through AgentdClient's own Memory
methods (agentctl.client_memory), over a stand-in proxy answering as agentd does
(JSON text, or a typed D-Bus error that the client's one translation point,
agentctl.client._call, turns into ClientError); and the pieces a large file is
sent in (agentctl.documents).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentctl_fakes import FakeClient, MemoryProxy, invoke, refusal

from agentctl import memory_verbs
from agentctl.app import EX_NOPERM, EX_UNAVAILABLE
from agentctl.client import ClientError, _call, _json
from agentctl.client_memory import ADD_TIMEOUT_USEC, MemoryCalls
from agentctl.documents import PIECE, pieces


class Client(FakeClient, MemoryCalls):
    """FakeClient with the real client's Memory methods over the stand-in proxy."""

    _translated = staticmethod(_call)
    _reply = staticmethod(_json)

    def __init__(self) -> None:
        super().__init__()
        self.memory = MemoryProxy()
        self.patience: list[int] = []

    @contextlib.contextmanager
    def _patience(self, usec: int) -> Iterator[None]:
        self.patience.append(usec)
        yield


@pytest.fixture
def client() -> Client:
    return Client()


def sent(client: Client, method: str) -> list[tuple[Any, ...]]:
    return [s[1:] for s in client.memory.sent if s[0] == method]


def lines(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.splitlines()]


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    f = tmp_path / "notes.md"
    f.write_text("# Deploy\n\nRun make deploy on the bastion.\n\nBackups run nightly at two.\n")
    return f


def seed(client: Client, notes: Path) -> None:
    r = invoke(client, "memory", "add", "scout", str(notes))
    assert r.exit_code == 0, r.stderr
    client.memory.sent.clear()


# -- add --------------------------------------------------------------------------------
def test_add_stores_each_file_under_its_absolute_path(
    client: Client, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(notes.parent)
    r = invoke(client, "memory", "add", "scout", "notes.md")
    assert r.exit_code == 0, r.stderr
    text = notes.read_text()
    assert sent(client, "add_memory") == [("agent/scout", str(notes), text, False)]
    assert lines(r.output) == [[str(notes), "1", "3", "0", "0", str(len(text) // 4)]]
    assert client.patience == [ADD_TIMEOUT_USEC]  # a long embedding is waited for


def test_add_again_skips_and_replace_removes(client: Client, notes: Path) -> None:
    seed(client, notes)
    notes.write_text("# Deploy\n\nRun make deploy on the bastion.\n")
    r = invoke(client, "memory", "add", "scout", str(notes), "--replace", "--json")
    assert r.exit_code == 0, r.stderr
    [result] = json.loads(r.output)
    assert result == {
        "file": str(notes),
        "scope": "agent/scout",
        "source": str(notes),
        "pieces": 1,
        "added": 0,
        "skipped": 2,
        "removed": 1,
        "tokens": result["tokens"],
        "ids": [],
    }
    assert sent(client, "add_memory")[0][3] is True  # one piece: agentd replaces


def test_add_reads_stdin(client: Client) -> None:
    from click.testing import CliRunner

    from agentctl.app import Env
    from agentctl.cli import cli

    def run(*args: str) -> Any:
        return CliRunner(mix_stderr=False).invoke(
            cli, list(args), input="from a pipe\n", obj=Env(connect=lambda: client, tty=False)
        )

    assert run("memory", "add", "scout", "-", "--source", "git-log").exit_code == 0
    assert run("knowledge", "add", "-").exit_code == 0
    assert [(s[0], s[1], s[2]) for s in sent(client, "add_memory")] == [
        ("agent/scout", "git-log", "from a pipe\n"),
        ("knowledge", "stdin", "from a pipe\n"),
    ]


def test_add_sends_a_large_file_in_pieces_of_one_source(client: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.md"
    paragraphs = [f"Paragraph {i} " + "word " * 200 for i in range(1500)]  # ~1.5 MB
    big.write_text("\n\n".join(paragraphs) + "\n")
    r = invoke(client, "memory", "add", "scout", str(big), "--json")
    assert r.exit_code == 0, r.stderr
    [first] = sent(client, "add_memory")
    later = sent(client, "continue_memory")
    calls = [first, *later]
    assert len(calls) in (-(-big.stat().st_size // PIECE), 1 - (-big.stat().st_size // PIECE))
    assert "".join(c[2] for c in calls) == big.read_text()
    assert all(len(c[2].encode()) <= PIECE for c in calls)
    assert all(c[2].endswith("\n\n") for c in calls[:-1])  # cut between paragraphs
    assert {(c[0], c[1]) for c in calls} == {("agent/scout", str(big))} and first[3] is False
    # each later piece goes on where the one before it ended: position, byte, line
    done = ""
    for n, c in enumerate(later, 1):
        done += calls[n - 1][2]
        position, byte, line = c[3:6]
        assert position == done.count("\n\n") and byte == len(done.encode())
        assert line == 1 + done.count("\n")
    [result] = json.loads(r.output)
    assert result["pieces"] == len(calls) and result["added"] == 1500
    assert len(result["ids"]) == 1500
    positions = sorted(client.memory.chunks[i]["position"] for i in result["ids"])
    assert positions == list(range(1500))


def test_replace_of_a_file_in_pieces_removes_its_source_first(
    client: Client, tmp_path: Path
) -> None:
    big = tmp_path / "big.md"
    big.write_text("\n\n".join(f"P{i} " + "x" * 1000 for i in range(600)))
    seed(client, big)
    r = invoke(client, "memory", "add", "scout", str(big), "--replace", "--json")
    assert r.exit_code == 0, r.stderr
    methods = [s[0] for s in client.memory.sent]
    assert methods[0] == "remove_memory_source" and methods[1] == "add_memory"
    assert set(methods[2:]) == {"continue_memory"}
    assert sent(client, "remove_memory_source") == [("agent/scout", str(big))]
    # no piece may replace: a later one would remove the pieces before it
    assert sent(client, "add_memory")[0][3] is False
    [result] = json.loads(r.output)
    assert (result["removed"], result["added"]) == (600, 600)
    assert len(client.memory.chunks) == 600


def test_a_file_that_is_not_utf8_is_refused_by_name_and_nothing_is_sent(
    client: Client, notes: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    r = invoke(client, "memory", "add", "scout", str(notes), str(bad))
    assert r.exit_code == 1
    assert str(bad) in r.stderr and "not UTF-8" in r.stderr and "0xe9" in r.stderr
    assert client.memory.sent == [] and client.calls == []
    r = invoke(client, "knowledge", "add", str(tmp_path / "missing.md"))
    assert r.exit_code == 1 and "cannot read" in r.stderr and "missing.md" in r.stderr


def test_a_failure_names_the_file_and_the_piece(
    client: Client, notes: Path, tmp_path: Path
) -> None:
    client.memory.refuse["add_memory"] = refusal(
        "MemoryLimitExceeded", "memory agent/scout would hold 20001 chunks"
    )
    r = invoke(client, "memory", "add", "scout", str(notes))
    assert r.exit_code == 1
    assert r.stderr == (
        f"agentctl: {notes}: memory agent/scout would hold 20001 chunks (MemoryLimitExceeded)\n"
    )

    client.memory = MemoryProxy()
    client.memory.refuse["continue_memory"] = refusal("QuotaExceeded", "quota used up")
    big = tmp_path / "big.md"
    big.write_text("\n\n".join("y" * 1000 for _ in range(400)))
    r = invoke(client, "memory", "add", "scout", str(notes), str(big))
    assert r.exit_code == 1
    assert f"{big}; the 1 before it were added: piece 2 of 2 failed" in r.stderr, r.stderr


def test_add_draws_a_bar_on_a_terminal(client: Client, notes: Path) -> None:
    r = invoke(client, "memory", "add", "scout", str(notes), tty=True)
    assert r.exit_code == 0, r.stderr
    assert "SOURCE" in r.output  # the table, with a header, and the path whole (folded)
    assert str(notes) in "".join(line.split(" ")[0] for line in r.output.splitlines())


# -- search, list, show, usage, export --------------------------------------------------
def test_search_of_the_memory_alone_and_as_the_agent_recalls(client: Client, notes: Path) -> None:
    seed(client, notes)
    r = invoke(client, "memory", "search", "scout", "deploy bastion", "-k", "3")
    assert r.exit_code == 0, r.stderr
    best, other = lines(r.output)
    assert best[2:] == ["agent/scout", str(notes), "1", "Run make deploy on the bastion."]
    assert float(best[1]) > float(other[1]) and other[5] == "# Deploy"
    r = invoke(client, "memory", "find", "scout", "backups", "--knowledge", "--json")
    assert [h["text"] for h in json.loads(r.output)] == ["Backups run nightly at two."]
    assert sent(client, "search_memory") == [
        (["agent/scout"], "deploy bastion", 3),
        (["agent/scout", "knowledge/0"], "backups", 5),  # the owner's (DESCRIBE: uid 0)
    ]
    r = invoke(client, "memory", "search", "scout", "deploy", tty=True)
    assert f"{notes}:1" in r.output and "    Run make deploy on the bastion." in r.output


def test_list_show_and_usage(client: Client, notes: Path) -> None:
    seed(client, notes)
    r = invoke(client, "memory", "ls", "scout", "--source", str(notes), "--limit", "2")
    assert r.exit_code == 0, r.stderr
    assert [row[0] for row in lines(r.output)] == ["1", "2"]
    assert sent(client, "list_memory") == [("agent/scout", str(notes), 0, 2)]
    r = invoke(client, "memory", "list", "scout", "--offset", "2", "--json")
    assert [c["id"] for c in json.loads(r.output)] == [3]
    r = invoke(client, "memory", "show", "#2")
    fields = dict(line.split("\t", 1) for line in r.output.splitlines())
    assert fields["text"] == "Run make deploy on the bastion." and fields["scope"] == "agent/scout"
    r = invoke(client, "memory", "show", "2", "--json")
    assert json.loads(r.output)["id"] == 2
    r = invoke(client, "memory", "usage", "scout")
    fields = dict(line.split("\t", 1) for line in r.output.splitlines())
    assert fields["chunks"] == "3 of 20000 (0%)" and fields["limit_bytes"] == "none"
    r = invoke(client, "memory", "usage", "scout", "--json")
    assert json.loads(r.output)["sources"] == 1


def test_export_pages_until_a_short_page(
    client: Client, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(client, notes)
    monkeypatch.setattr(memory_verbs, "PAGE", 2)
    r = invoke(client, "memory", "export", "scout")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["id"] for line in r.output.splitlines()] == [1, 2, 3]
    assert [s[2:] for s in sent(client, "list_memory")] == [(0, 2), (2, 2)]


# -- rm ---------------------------------------------------------------------------------
def test_rm_by_id_source_and_all(client: Client, notes: Path) -> None:
    seed(client, notes)
    r = invoke(client, "memory", "rm", "1", "#2", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.output) == {"ids": [1, 2], "removed": 2}
    assert sent(client, "remove_memory") == [([1, 2],)]
    r = invoke(client, "memory", "rm", "--source", str(notes), "scout")
    assert (r.exit_code, r.output) == (0, "removed 1 chunk\n")
    r = invoke(client, "memory", "rm", "--all", "scout", "--yes")
    assert r.exit_code == 0, r.stderr
    assert sent(client, "remove_memory_source") == [
        ("agent/scout", str(notes)),
        ("agent/scout", ""),
    ]


def test_rm_all_and_empty_source_refused_without_a_word_to_agentd(
    client: Client, notes: Path
) -> None:
    seed(client, notes)
    for args in (
        ("memory", "rm", "--all", "scout"),
        ("memory", "rm", "--source", "", "scout"),  # agentd: "" is the whole scope
        ("memory", "rm", "--all", "scout", "alpha", "--yes"),
        ("knowledge", "rm", "--all"),
        ("knowledge", "rm"),
    ):
        r = invoke(client, *args)
        assert r.exit_code == 2, (args, r.stderr)
    assert "--yes" in invoke(client, "memory", "rm", "--all", "scout").stderr
    assert client.memory.sent == [] and len(client.memory.chunks) == 3


def test_rm_refuses_an_id_of_the_other_noun(client: Client, notes: Path) -> None:
    seed(client, notes)
    r = invoke(client, "knowledge", "rm", "1")
    assert r.exit_code == 1 and "agentctl memory show 1" in r.stderr, r.stderr
    assert sent(client, "remove_memory") == [] and len(client.memory.chunks) == 3


# -- errors -----------------------------------------------------------------------------
def test_no_such_memory_and_permission_denied(client: Client, notes: Path) -> None:
    seed(client, notes)
    r = invoke(client, "memory", "show", "9")
    assert (r.exit_code, r.stderr) == (1, "agentctl: no memory chunk 9 (NoSuchMemory)\n")
    r = invoke(client, "memory", "rm", "1", "9")
    assert r.exit_code == 1 and "(NoSuchMemory)" in r.stderr
    assert len(client.memory.chunks) == 3  # all or nothing
    client.memory.refuse["list_memory"] = refusal(
        "PermissionDenied", "uid 1001 may not memory.read agent alpha"
    )
    r = invoke(client, "memory", "list", "alpha")
    assert r.exit_code == EX_NOPERM and "Traceback" not in r.stderr
    assert r.stderr == "agentctl: uid 1001 may not memory.read agent alpha (PermissionDenied)\n"


@pytest.mark.parametrize("name", ["MemoryUnavailable", "ModelUnavailable", "NoEmbeddingModel"])
def test_agentd_without_memory_or_model_is_unavailable(client: Client, name: str) -> None:
    if name == "NoEmbeddingModel":  # not an engine error class: sdbus leaves it unmapped
        from sdbus.sd_bus_internals import SdBusUnmappedMessageError

        error: Exception = SdBusUnmappedMessageError(
            "org.agentos.agentd1.Error.NoEmbeddingModel", "no embedding model is loaded"
        )
    else:
        error = refusal(name, "cannot serve")
    client.memory.refuse["search_memory"] = error
    r = invoke(client, "knowledge", "search", "anything")
    assert r.exit_code == EX_UNAVAILABLE, (r.exit_code, r.stderr)
    assert r.stderr.endswith(f"({name})\n")


def test_malformed_replies_are_client_errors(client: Client) -> None:
    for method, call in (
        ("memory_usage", client.memory_usage("knowledge")),
        ("search_memory", client.search_memory(["knowledge"], "q", 1)),
        ("add_memory", client.add_memory("knowledge", "s", "t")),
    ):
        client.memory.reply[method] = "{" if method != "search_memory" else "{}"
        with pytest.raises(ClientError, match="malformed JSON"):
            asyncio.run(call)


# -- knowledge --------------------------------------------------------------------------
def test_knowledge_is_the_callers_or_an_owners_by_uid_or_name(client: Client, notes: Path) -> None:
    assert invoke(client, "knowledge", "add", str(notes)).exit_code == 0
    r = invoke(client, "knowledge", "list", "--owner", "root")
    assert r.exit_code == 0, r.stderr
    assert invoke(client, "knowledge", "search", "deploy", "--owner", "1001").exit_code == 0
    assert invoke(client, "knowledge", "usage", "--json").exit_code == 0
    r = invoke(client, "knowledge", "rm", "--source", str(notes), "--owner", "1000")
    assert (r.exit_code, r.output) == (0, "removed 3 chunks\n")
    assert [s[:2] for s in client.memory.sent] == [
        ("add_memory", "knowledge"),
        ("list_memory", "knowledge/0"),
        ("search_memory", ["knowledge/1001"]),
        ("memory_usage", "knowledge"),
        ("remove_memory_source", "knowledge/1000"),
    ]
    r = invoke(client, "knowledge", "list", "--owner", "no-such-user-here")
    assert r.exit_code == 2 and "no user" in r.stderr


def test_knowledge_export_and_rm_all(client: Client, notes: Path) -> None:
    assert invoke(client, "knowledge", "add", str(notes)).exit_code == 0
    r = invoke(client, "knowledge", "export")
    assert [json.loads(line)["scope"] for line in r.output.splitlines()] == ["knowledge/1000"] * 3
    r = invoke(client, "knowledge", "rm", "--all", "-y", "--json")
    assert json.loads(r.output) == {"scope": "knowledge", "source": None, "removed": 3}


# -- pieces -----------------------------------------------------------------------------
def test_pieces_join_to_the_text_and_cut_where_it_reads_best() -> None:
    assert pieces("short") == ["short"]
    text = "aaaa\n\nbbbb\n# H\ncccc\n\ndddd"
    # a heading in the second half of the piece wins over a later paragraph break
    assert pieces(text, 16) == ["aaaa\n\nbbbb\n", "# H\ncccc\n\ndddd"]
    assert pieces("a1\na2\na3\na4\na5", 7) == ["a1\na2\n", "a3\na4\n", "a5"]  # lines
    long = "é" * 10  # 20 bytes: cut between characters, never inside one
    out = pieces(long, 7)
    assert "".join(out) == long and all(len(p.encode()) <= 7 for p in out)
    rng = os.urandom(4000)
    text = "".join("\n" if b < 20 else "ü" if b < 40 else "x" for b in rng)
    out = pieces(text, 300)
    assert "".join(out) == text and all(0 < len(p.encode()) <= 300 for p in out)

"""Memory in the agent loop (agentd.agentloop.memory) against the scripted
TaskHost: the notes recalled before the first step, the recall tool, the
lesson stored when a task ends; and the runtime's host for them
(test_task_show_memories.py: `agentctl task show`'s memories used)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from loophost import Host, run, step, tools_of

from agentd.agentloop import checks, memory
from agentd.agentloop.host import HostError, ModelError
from agentd.agentloop.loop import RESAMPLES

ON = {"memory": True}
DOC = "Backups go to /srv/backup with rsync -a, never to /tmp. " * 14  # ~800 characters
HITS = [
    {
        "id": 1,
        "scope": "knowledge",
        "source": "notes.md",
        "position": 0,
        "heading": "Backups",
        "text": DOC,
        "kind": "document",
        "task": None,
        "created": 1.0,
        "score": 0.0328,
        "cosine": 0.71,
        "keyword": True,
    },
    {
        "id": 2,
        "scope": "agent",
        "source": "task/3",
        "position": 0,
        "heading": "",
        "text": "Task: back up the disk\nOutcome: completed; what was tried worked.\n"
        + "rsync -a worked; cp lost the permissions. " * 8,
        "kind": "lesson",
        "task": 3,
        "created": 2.0,
        "score": 0.0161,
        "cosine": 0.52,
        "keyword": False,
    },
    {
        "id": 3,
        "scope": "knowledge",
        "source": "disks.md",
        "position": 2,
        "heading": "",
        "text": "sdb is the backup disk. " * 30,
        "kind": "document",
        "task": None,
        "created": 3.0,
        "score": 0.0159,
        "cosine": 0.5,
        "keyword": False,
    },
]


def lesson(
    text: str = "Counting files: ls | wc -l worked; the answer was 3.", worked: bool = True
) -> Any:
    return {"text": json.dumps({"worked": worked, "lesson": text}), "finish_reason": "stop"}


def system_of(host: Host, call: int = 0) -> str:
    messages = host.thinks[call][0]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


def of_tool(host: Host, tool: str) -> list[dict[str, Any]]:
    return [s for s in host.steps if s["tool"] == tool]


# ------------------------------------------------------------------ before the first step
def test_recalled_notes_are_in_the_first_message_before_the_task(tmp_path: Path) -> None:
    host = Host(step("finish", answer="3"), lesson())
    host.hits = HITS
    run(tmp_path, host, {**ON, "context_tokens": 4096}, description="in logs/")
    assert host.recalls[0] == ("count the files\nin logs/", 5, 7)
    system = system_of(host)
    _head, _, notes = system.partition(memory.NOTES)
    assert notes, "the notes are in the system prompt, with the situation"
    assert "\n[knowledge: notes.md > Backups] Backups go to /srv/backup" in notes
    assert "\n\n[lesson: task/3] Task: back up the disk" in notes
    assert "\n\n[knowledge: disks.md] sdb is the backup disk" in notes
    assert host.thinks[0][0][1]["content"].startswith("Task: count the files")  # task last
    (auto,) = of_tool(host, "recall")
    assert auto["n"] == 1
    assert auto["arguments"] == {"query": "count the files\nin logs/", "auto": True}
    assert [m["id"] for m in auto["memories"]] == [1, 2, 3]
    assert auto["memories"][0]["text"] == DOC.strip()  # recorded as shown
    assert auto["result"].startswith("3 remembered notes shown: #1 [knowledge: notes.md > Backups]")
    assert host.steps[1]["tool"] == "finish"


def first_chars(host: Host) -> int:
    return sum(len(m["content"]) for m in host.thinks[0][0])


@pytest.mark.parametrize("context", [2048, 4096, 8192, 32768])
def test_recalled_notes_take_a_bounded_share_fewer_if_needed(tmp_path: Path, context: int) -> None:
    """At most a quarter of the context, the first message within 90% of the
    prompt's room (as estimated before calibration, 0.4 tokens a character)."""
    host = Host(step("finish", answer="3"), lesson())
    host.hits = [{**HITS[0], "id": i, "text": f"{i} {DOC}"} for i in range(20)]
    run(tmp_path, host, {**ON, "context_tokens": context})
    system = system_of(host)
    notes = memory.NOTES + system.partition(memory.NOTES)[2]
    assert len(notes) * 0.4 <= context / 4 and len(notes) <= memory.PREFILL_CHARS
    room = context - min(768, context // 4) - 48
    assert first_chars(host) * 0.4 <= room * 0.9
    (auto,) = of_tool(host, "recall")
    shown = len(auto["memories"])
    assert notes.count("[knowledge: notes.md > Backups]") == shown
    if context == 2048:
        assert shown == 1  # fewer hits: the first message is long already
    if context == 4096:
        assert shown == 3 and auto["memories"][-1]["text"].endswith("…")  # a quarter
    if context >= 8192:
        assert shown == 5 and auto["memories"][-1]["text"].endswith("…")  # the last one cut
        assert len(notes) > memory.PREFILL_CHARS - 300  # the room is used


def test_notes_in_any_script_keep_the_step_within_agentds_limit(tmp_path: Path) -> None:
    host = Host(step("finish", answer="3"), lesson())
    host.hits = [{**h, "id": i, "text": "字" * 2000} for i, h in enumerate(HITS * 2)]
    run(tmp_path, host, {**ON, "context_tokens": 32768})
    (auto,) = of_tool(host, "recall")
    assert len(json.dumps(auto, ensure_ascii=False).encode()) < 15 * 1024
    assert len(auto["memories"]) >= 2


def test_nothing_remembered_is_said_and_adds_nothing(tmp_path: Path) -> None:
    host = Host(step("finish", answer="3"), lesson())
    out = run(tmp_path, host, ON)
    assert out.status == "completed" and out.result["steps"] == 1
    assert memory.NOTES not in system_of(host)
    (auto,) = of_tool(host, "recall")
    assert auto["result"] == "nothing relevant remembered" and auto["memories"] == []


def test_a_resumed_task_rebuilds_the_notes_from_the_trace_without_recalling(
    tmp_path: Path,
) -> None:
    settings = {**ON, "context_tokens": 4096}  # no trimming: the same first message
    first = Host(step("shell", command="echo one"), step("ask_owner", question="which disk?"))
    first.hits = HITS
    out = run(tmp_path, first, settings)
    assert out.status == "released" and len(first.recalls) == 1
    assert not of_tool(first, "lesson")  # it waits for its owner: not over
    ctx = {"trace": first.steps, "replies": [{"question": "which disk?", "answer": "sdb"}]}
    host = Host(step("finish", answer="sdb"), lesson(), ctx=ctx)
    host.hits = HostError("MemoryUnavailable", "must not be asked")
    out = run(tmp_path, host, settings, attempt=2)
    assert out.status == "completed" and out.result["steps"] == 3  # the recall is no step
    assert host.recalls == [] and not of_tool(host, "recall")  # recorded once
    assert memory.NOTES in system_of(host)
    assert system_of(host) == system_of(first)  # the same prompt: the KV cache is reused
    assert host.thinks[0][0][-1]["content"] == "The owner answered: sdb"
    assert len(host.remembered) == 1


def test_a_recall_error_never_fails_the_task(tmp_path: Path) -> None:
    host = Host(step("finish", answer="3"), lesson())
    host.hits = HostError("ModelUnavailable", "the embedder is loading")
    out = run(tmp_path, host, ON)
    assert out.status == "completed"
    (auto,) = of_tool(host, "recall")
    assert auto["result"].startswith("recall failed (ModelUnavailable): the embedder")
    assert auto["error"] == "ModelUnavailable"
    assert "recall" in tools_of(host, 0)  # away for now: the model may try later
    assert len(host.remembered) == 1
    host = Host(step("finish", answer="3"), lesson())
    host.hits = RuntimeError("boom")  # not even agentd's: still only a step
    assert run(tmp_path, host, ON).status == "completed"
    assert of_tool(host, "recall")[0]["error"] == "Failed"


def test_an_agent_without_memory_gets_no_recall_tool_and_no_lesson(tmp_path: Path) -> None:
    host = Host(step("finish", answer="3"))
    host.hits = HostError("MemoryUnavailable", "no memory database")
    out = run(tmp_path, host, ON)
    assert out.status == "completed" and "recall" not in tools_of(host, 0)
    assert "recall" not in system_of(host).split("Tools:")[1].split("You have")[0]
    assert len(host.thinks) == 1 and host.remembered == []
    (step_,) = of_tool(host, "lesson")
    assert step_["result"] == "not asked: the agent has no memory (MemoryUnavailable)"
    # and on resume, from the trace: still no recall tool
    trace = [*host.steps[:1], {"n": 2, "attempt": 1, "tool": "ask_owner", "arguments": {}}]
    resumed = Host(step("finish", answer="3"), ctx={"trace": trace})
    run(tmp_path, resumed, ON)
    assert "recall" not in tools_of(resumed, 0) and resumed.recalls == []


def test_memory_off_in_the_settings_is_no_recall_and_no_lesson(tmp_path: Path) -> None:
    host = Host(step("finish", answer="3"))
    host.hits = HITS
    run(tmp_path, host, {"memory": False})
    assert host.recalls == [] and host.remembered == [] and len(host.steps) == 1
    assert "recall" not in tools_of(host, 0)


# ------------------------------------------------------------------ the recall tool
def test_the_recall_tool_lists_the_hits_compactly(tmp_path: Path) -> None:
    host = Host(
        step("recall", query="backup disk"),
        step("recall", query="nothing like it"),
        step("finish", answer="sdb"),
        lesson(),
    )
    host.hits = HITS
    out = run(tmp_path, host, {**ON, "context_tokens": 4096})
    assert out.status == "completed" and out.result["steps"] == 3
    assert tools_of(host, 0) == [
        "shell",
        "read_file",
        "list_files",
        "write_file",
        "recall",
        "ask_owner",
        "finish",
    ]
    assert host.recalls[1] == ("backup disk", 5, 7)
    tool = of_tool(host, "recall")[1]
    assert tool["arguments"] == {"query": "backup disk"} and tool["thought"] == "use recall"
    lines = tool["result"].split("\n\n")
    assert lines[0].startswith("[knowledge: notes.md > Backups] Backups go to /srv/backup")
    assert lines[1].startswith("[lesson: task/3] Task: back up the disk")
    assert lines[2].startswith("[knowledge: disks.md] sdb is the backup disk")
    assert len(tool["result"]) <= 4096 * 0.75  # bounded, as the model sees it
    assert [m["id"] for m in tool["memories"]] == [1, 2, 3]
    assert "text" not in tool["memories"][0]  # the text is in the result
    seen = host.thinks[1][0][-1]["content"]
    assert seen.startswith("Result of your recall step:\n[knowledge: notes.md > Backups]")


def test_a_recall_tool_that_finds_nothing_or_fails_says_so(tmp_path: Path) -> None:
    host = Host(step("recall", query="x"), step("finish", answer="y"), lesson())
    run(tmp_path, host, ON)
    assert of_tool(host, "recall")[1]["result"] == "nothing relevant remembered"
    host = Host(step("recall", query="x"), step("finish", answer="y"), lesson())
    calls = 0

    async def recall(query: str, k: int, task: int) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 2:  # the prefill finds nothing, the tool is refused
            raise HostError("QuotaExceeded", "the quota is spent")
        return []

    host.recall = recall  # type: ignore[method-assign]
    out = run(tmp_path, host, ON)
    assert out.status == "completed"
    result = of_tool(host, "recall")[1]["result"]
    assert result == "error: recall failed (QuotaExceeded): the quota is spent"
    assert "recall failed (QuotaExceeded)" in host.thinks[1][0][-1]["content"]


def test_the_same_recall_twice_is_a_repeat(tmp_path: Path) -> None:
    again = step("recall", query="x")
    host = Host(again, *[again] * (1 + RESAMPLES), step("finish", answer="y"), lesson())
    run(tmp_path, host, ON)
    assert len(host.recalls) == 2  # the prefill and the first: the repeat is not run
    assert of_tool(host, "recall")[2]["result"] == checks.REPEATED


# ------------------------------------------------------------------ the lesson
def test_a_completed_task_stores_its_lesson(tmp_path: Path) -> None:
    host = Host(step("shell", command="ls | wc -l"), step("finish", answer="3"), lesson())
    out = run(tmp_path, host, ON)
    assert out.status == "completed" and out.result["answer"] == "3"
    ((text, kind, task),) = host.remembered
    assert (kind, task) == ("lesson", 7)
    assert text == (
        "Task: count the files\nOutcome: completed; what was tried worked.\nAnswer: 3\n"
        "Counting files: ls | wc -l worked; the answer was 3."
    )
    messages, options = host.thinks[-1]
    assert options["max_tokens"] == memory.LESSON_TOKENS and "temperature" not in options
    schema = json.loads(options["json_schema"])
    assert schema["properties"]["lesson"]["maxLength"] == memory.LESSON_CHARS
    assert json.loads(messages[-2]["content"]) == {"thought": "", "tool": "finish", "answer": "3"}
    assert messages[-1]["content"].startswith("The task is over: you finished it")
    (rec,) = of_tool(host, "lesson")
    assert rec["arguments"] == {
        "worked": True,
        "lesson": "Counting files: ls | wc -l worked; the answer was 3.",
    }
    assert rec["result"] == "stored as memory #101 (9 tokens)"
    assert rec["prompt_tokens"] == 100 and rec["completion_tokens"] == 10
    assert out.result["prompt_tokens"] == 300  # two steps and the lesson: the task's tokens
    assert out.result["steps"] == 2  # the lesson is no step of the task's


def test_a_failed_task_stores_its_lesson_too(tmp_path: Path) -> None:
    bad = {"text": '{"tool": "dance"}', "finish_reason": "stop"}
    host = Host(bad, bad, bad, lesson("The model named no tool three times.", worked=False))
    out = run(tmp_path, host, ON)
    assert out.status == "failed" and out.error.startswith("the model did not produce")
    ((text, kind, _task),) = host.remembered
    assert "Outcome: failed; what was tried did not work." in text and kind == "lesson"
    assert "it failed (the model did not produce a valid step" in host.thinks[-1][0][-1]["content"]
    assert out.result["prompt_tokens"] == 400


@pytest.mark.parametrize("why", ["ask", "quota", "deferred"])
def test_a_task_that_waits_stores_no_lesson(tmp_path: Path, why: str) -> None:
    first = {
        "ask": step("ask_owner", question="which?"),
        "quota": ModelError("QuotaExceeded", "resets at X"),
        "deferred": ModelError("Overloaded", "busy"),
    }[why]
    host = Host(first)
    out = run(tmp_path, host, ON)
    assert out.status in ("released", "blocked")
    assert not of_tool(host, "lesson") and host.remembered == [] and host.script == []


def test_a_lesson_that_cannot_be_stored_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = Host(step("finish", answer="3"), lesson())
    host.stored = HostError("MemoryLimitExceeded", "the agent's memory is full")
    out = run(tmp_path, host, ON)
    assert out.status == "completed"
    (rec,) = of_tool(host, "lesson")
    assert rec["result"] == "not stored: MemoryLimitExceeded: the agent's memory is full"
    assert rec["arguments"]["lesson"].startswith("Counting files")  # kept in the trace
    assert "task 7: lesson not stored: MemoryLimitExceeded" in capsys.readouterr().err


def test_a_lesson_that_does_not_parse_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = Host(step("finish", answer="3"), {"text": "I learnt a lot", "finish_reason": "stop"})
    out = run(tmp_path, host, ON)
    assert out.status == "completed" and host.remembered == []
    (rec,) = of_tool(host, "lesson")
    assert rec["result"].startswith("not stored: the lesson is not the JSON asked for")
    assert "lesson not stored" in capsys.readouterr().err
    host = Host(step("finish", answer="3"), ModelError("Overloaded", "busy"))
    assert run(tmp_path, host, ON).status == "completed"
    assert of_tool(host, "lesson")[0]["result"] == "not stored: Overloaded: busy"


def test_a_lesson_cut_at_max_tokens_keeps_what_was_said(tmp_path: Path) -> None:
    cut = {"text": '{"worked": true, "lesson": "use rsync -a for', "finish_reason": "length"}
    host = Host(step("finish", answer="3"), cut, cut)
    run(tmp_path, host, ON)
    assert host.remembered[0][0].endswith("\nuse rsync -a for")


def test_no_lesson_is_asked_once_the_budget_is_spent(tmp_path: Path) -> None:
    host = Host(
        step("shell", command="true"), step("shell", command=":"), step("finish", answer="short")
    )
    out = run(tmp_path, host, {**ON, "task_tokens": 200})  # each think costs 110
    assert out.status == "completed" and len(host.thinks) == 3
    (rec,) = of_tool(host, "lesson")
    assert rec["result"] == "not asked: the task's token budget is spent (330 of 200 tokens)"
    assert host.remembered == []


def test_the_lesson_parser() -> None:
    assert memory.parse_lesson('{"worked": false, "lesson": "x"}', "stop") == (False, "x")
    assert memory.parse_lesson('{"worked": true, "lesson": "a\\', "length") == (True, "a")
    for bad in ('{"worked": true}', '{"worked": true, "lesson": "  "}', "[]", ""):
        with pytest.raises(ValueError):
            memory.parse_lesson(bad, "stop")


def test_labels_name_where_a_note_comes_from() -> None:
    assert memory.label(HITS[0]) == "[knowledge: notes.md > Backups]"
    assert memory.label(HITS[1]) == "[lesson: task/3]"
    assert memory.label({"scope": "agent", "kind": "fact", "source": "fact"}) == "[fact]"
    assert (
        memory.label({"scope": "agent", "kind": "document", "source": "a.md"}) == "[memory: a.md]"
    )


# ------------------------------------------------------------------ the runtime's host
class MemoryProxy:
    """Runtime.Remember and Runtime.Recall as sdbus's proxy gives them: JSON text,
    or a typed D-Bus error."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: Exception | None = None

    async def remember(self, text: str, kind: str, task: int) -> str:
        self.calls.append(("remember", text, kind, task))
        return json.dumps({"added": 1, "skipped": 0, "tokens": 12, "ids": [41]})

    async def recall(self, query: str, k: int, task: int) -> str:
        self.calls.append(("recall", query, k, task))
        if self.refuse is not None:
            raise self.refuse
        return json.dumps([HITS[0], "not a hit"])


def test_the_runtime_host_remembers_and_recalls_over_the_runtime_methods() -> None:
    from sdbus.dbus_exceptions import DbusUnknownMethodError

    from agentd.api.errors import BY_NAME, PREFIX
    from agentd.runtime import RuntimeHost

    async def main() -> None:
        proxy = MemoryProxy()
        host = RuntimeHost(proxy)  # type: ignore[arg-type]
        stored = await host.remember("a lesson", "lesson", 7)
        assert stored == {"added": 1, "skipped": 0, "tokens": 12, "ids": [41]}
        assert await host.recall("backups", 5, 7) == [HITS[0]]
        assert proxy.calls == [("remember", "a lesson", "lesson", 7), ("recall", "backups", 5, 7)]
        proxy.refuse = BY_NAME[PREFIX + "MemoryUnavailable"]("no embedding model")
        with pytest.raises(HostError) as raised:
            await host.recall("backups", 5, 7)
        assert raised.value.name == "MemoryUnavailable"
        proxy.refuse = DbusUnknownMethodError("an agentd without Recall")
        with pytest.raises(HostError) as raised:
            await host.recall("backups", 5, 7)
        assert raised.value.name in memory.UNAVAILABLE

    asyncio.run(main())

"""Chat sessions (agentd.sessions): what goes into a prompt (fit), and the engine
over a stand-in inference service on a real Unix socket: exchanges stored whole,
resumed, folded into a summary with facts remembered, access, removal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from world import ALICE, BOB, ROOT, World

from agentd.errors import (
    Busy,
    InvalidArgument,
    NoSuchSession,
    PermissionDenied,
    QuotaExceeded,
)
from agentd.modelclient import ModelClient
from agentd.quotas import Meter
from agentd.sessions import Sessions, fit
from agentd.sessions.fit import Turn
from agentd.thinking import Options, Thinking


# ------------------------------------------------------------------------- fit
def turns(n: int, chars: int = 100) -> list[Turn]:
    return [Turn(i, ("user", "assistant")[i % 2], f"{i} " + "w" * chars) for i in range(n)]


def test_a_prompt_that_fits_folds_nothing() -> None:
    assert fit.to_fold("persona", "", turns(4), "hi", room=2000, tokens_per_char=0.25) == 0


def test_folding_takes_whole_exchanges_and_keeps_the_last_one() -> None:
    ts = turns(10, chars=400)  # ~100 tokens each at 0.25
    n = fit.to_fold("persona", "", ts, "hi", room=700, tokens_per_char=0.25)
    assert n % 2 == 0 and 0 < n <= 8
    rest = fit.prompt("persona", "x" * fit.SUMMARY_CHARS, ts[n:], "hi")
    assert fit.estimate(rest, 0.25) <= 700
    more = fit.prompt("persona", "x" * fit.SUMMARY_CHARS, ts[n - 2 :], "hi")
    assert fit.estimate(more, 0.25) > 700  # no more than needed was folded
    # a room nothing fits in: all but the last exchange
    assert fit.to_fold("persona", "", ts, "hi", room=10, tokens_per_char=0.25) == 8


def test_the_summary_goes_after_the_persona() -> None:
    messages = fit.prompt("You are Bo.", "They met.", turns(2), "next")
    assert messages[0] == {
        "role": "system",
        "content": f"You are Bo.\n\n{fit.SUMMARY_HEADING}\nThey met.",
    }
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert fit.prompt("You are Bo.", "", [], "x")[0]["content"] == "You are Bo."


def test_batches_bound_what_the_summarizer_reads() -> None:
    groups = fit.batches(turns(6, chars=300), chars=700)
    assert [t.seq for g in groups for t in g] == list(range(6))
    assert all(sum(len(t.content) for t in g) <= 700 for g in groups)
    (one,) = fit.batches([Turn(0, "user", "y" * 5000)], chars=700)
    assert len(one[0].content) <= 350 and one[0].content.endswith("[...cut]")


def test_calibration_overestimates_and_has_a_floor() -> None:
    messages = [{"role": "user", "content": "x" * 1000}]
    assert fit.calibrated(250, messages) == pytest.approx(0.275)
    assert fit.calibrated(10, messages) == fit.MIN_TOKENS_PER_CHAR
    assert fit.calibrated(0, messages) == fit.DEFAULT_TOKENS_PER_CHAR
    assert fit.title("\n  First line \nsecond") == "First line"


# ---------------------------------------------------------------------- engine
class Model:
    """A stand-in agentd-inference: a context of CONTEXT tokens per sequence
    (prompts counted as characters / 4 + 10, refused as the real one refuses
    them), answers "noted: <first word>", and under a JSON schema a summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.context = 4096
        self.said_context: int | None = None  # what show says, if not the truth
        self.requests: list[dict[str, Any]] = []
        self.fold_text = json.dumps(
            {"summary": "They talked about cats.", "facts": ["Miso is a cat."]}
        )
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Model:
        self.server = await asyncio.start_unix_server(self.handle, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = json.loads(await reader.readline())
        for event in self.answer(req):
            writer.write(json.dumps(event).encode() + b"\n")
        await writer.drain()
        writer.close()

    def answer(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        if req["op"] == "show":
            config = {"context": self.said_context or self.context}
            return [{"event": "done", "model": {"name": "fake"}, "config": config}]
        self.requests.append(req)
        prompt = sum(len(m["content"]) for m in req["messages"]) // 4 + 10
        if prompt + req["max_tokens"] > self.context:
            message = (
                f"{prompt} prompt tokens + max_tokens {req['max_tokens']}"
                f" > {self.context} tokens per sequence"
            )
            return [{"event": "error", "error": "RequestTooLong", "message": message}]
        if "json_schema" in req:
            text = self.fold_text
        else:
            text = "noted: " + req["messages"][-1]["content"].split()[0]
        done = {"event": "done", "text": text, "finish_reason": "eos"}
        return [
            {"event": "queued", "prompt_tokens": prompt},
            {"event": "token", "text": text},
            {**done, "prompt_tokens": prompt, "completion_tokens": 3},
        ]


class Remembered:
    """Memories.remember's stand-in: what agentd wrote to an agent's memory."""

    def __init__(self) -> None:
        self.facts: list[tuple[str, str, str | None]] = []

    async def remember(
        self, agent: Any, text: str, kind: str, task: int | None, source: str | None = None
    ) -> dict[str, Any]:
        self.facts.append((agent.name, text, source))
        return {"added": 1}


class S:
    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.meter = Meter(self.w.cfg, self.w.store, self.w.audit, self.w.reg)
        self.model = Model(tmp_path / "inference.sock")
        client = ModelClient(self.model.path, patience_s=0.5)
        self.thinking = Thinking(self.w.reg, self.meter, client, self.w.audit)
        self.memory = Remembered()
        self.sessions = Sessions(self.w.store, self.thinking, self.w.audit, self.memory)  # type: ignore[arg-type]
        self.a1 = self.w.run(self.w.reg.create(ALICE, "a1", "sandbox"))
        self.a2 = self.w.run(self.w.reg.create(ALICE, "a2", "sandbox"))

    def say(self, text: str, session: int = 0, caller=ALICE, agent: str = "a1") -> list[dict]:
        async def go() -> list[dict[str, Any]]:
            async with self.model:
                stream = self.sessions.chat(caller, agent, session, text, Options(max_tokens=64))
                return [e async for e in stream]

        return asyncio.run(go())


def done(events: list[dict[str, Any]]) -> dict[str, Any]:
    (end,) = [e for e in events if e["event"] == "done"]
    return end


def test_a_session_is_stored_with_its_first_answer_and_resumed(tmp_path: Path) -> None:
    s = S(tmp_path)
    first = done(s.say("Hello there, I am Ann"))
    sid = first["session"]
    assert first["text"] == "noted: Hello"
    second = done(s.say("What is my name?", sid))
    assert second["session"] == sid
    sent = s.model.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "You are a helpful assistant."  # the sandbox persona
    assert sent[1]["content"] == "Hello there, I am Ann"
    assert sent[2]["content"] == "noted: Hello"
    shown = s.sessions.show(ALICE, sid)
    assert (shown["title"], shown["turns"], shown["agent"]) == ("Hello there, I am Ann", 4, "a1")
    assert [m["content"] for m in shown["messages"]][-1] == "noted: What"
    assert [x["id"] for x in s.sessions.listing(ALICE, "a1")] == [sid]


def test_a_first_message_that_fails_leaves_no_session(tmp_path: Path) -> None:
    s = S(tmp_path)
    s.meter.set(ROOT, "agent", "a1", 1, "daily")
    with pytest.raises(QuotaExceeded):
        s.say("Hello")
    assert s.sessions.listing(ALICE) == []
    assert s.w.store.scalar("SELECT count(*) FROM chat_turns") == 0


def test_turns_outgrowing_the_context_are_folded_and_facts_remembered(tmp_path: Path) -> None:
    s = S(tmp_path)
    s.model.context = 1200
    sid = done(s.say("My cat is Miso. " + "She likes boxes. " * 40))["session"]
    folds: list[dict[str, Any]] = []
    for i in range(6):
        events = s.say(f"Message {i}: " + "more about cats " * 60, sid)
        folds += [e for e in events if e["event"] == "folded"]
        assert done(events)["session"] == sid
    assert folds and all(f["parsed"] and f["facts_stored"] == 1 for f in folds)
    assert s.memory.facts[0] == ("a1", "Miso is a cat.", f"session/{sid}")
    last = s.model.requests[-1]["messages"]
    assert fit.SUMMARY_HEADING in last[0]["content"] and "cats" in last[0]["content"]
    shown = s.sessions.show(ALICE, sid)
    assert shown["folded"] >= 2 and shown["facts"] == len(folds)
    assert len(shown["messages"]) == 14  # folded turns stay listed
    assert sum(len(m["content"]) for m in last) // 4 + 10 + 64 <= 1200


def test_a_fold_answer_that_does_not_parse_is_reported(tmp_path: Path) -> None:
    s = S(tmp_path)
    s.model.context = 700
    s.model.fold_text = '{"summary": "cut sh'
    sid = done(s.say("First " + "word " * 150))["session"]
    events = s.say("Second " + "word " * 150, sid)
    events += s.say("Third " + "word " * 150, sid)
    (fold,) = [e for e in events if e["event"] == "folded"]
    assert fold["parsed"] is False and fold["facts"] == 0
    assert s.sessions.show(ALICE, sid)["summary"].startswith("First word")


def test_a_context_smaller_than_said_is_learned_and_the_message_refitted(tmp_path: Path) -> None:
    s = S(tmp_path)
    s.model.context, s.model.said_context = 600, 8192
    sid = done(s.say("One " + "word " * 150))["session"]
    events = s.say("Two " + "word " * 150, sid)  # 8192 says it fits; the service refuses
    events += s.say("Three " + "word " * 150, sid)
    assert [e for e in events if e["event"] == "folded"]
    assert done(events[-3:])["session"] == sid
    assert s.thinking.context_tokens == 600


def test_only_the_agents_owner_and_admins_reach_a_session(tmp_path: Path) -> None:
    s = S(tmp_path)
    sid = done(s.say("Secret plans"))["session"]
    with pytest.raises(PermissionDenied):
        s.sessions.show(BOB, sid)
    with pytest.raises(PermissionDenied):
        s.sessions.remove(BOB, sid)
    with pytest.raises(PermissionDenied):
        s.say("let me in", sid, caller=BOB)
    assert s.sessions.listing(BOB) == []
    assert [x["id"] for x in s.sessions.listing(ROOT)] == [sid]
    with pytest.raises(NoSuchSession):  # a session is its agent's alone
        s.say("hi", sid, agent="a2")
    with pytest.raises(NoSuchSession):
        s.sessions.show(ALICE, sid + 1)
    s.sessions.remove(ALICE, sid)
    (row,) = s.w.audit_rows("session.removed")
    assert row.detail["session"] == sid and row.agent == "a1" and row.actor_uid == ALICE.uid
    with pytest.raises(NoSuchSession):
        s.sessions.show(ALICE, sid)


def test_bad_messages_are_refused_before_any_stream(tmp_path: Path) -> None:
    s = S(tmp_path)
    for text in ("", "   "):
        with pytest.raises(InvalidArgument):
            s.sessions.chat(ALICE, "a1", 0, text, Options())
    with pytest.raises(InvalidArgument):
        s.sessions.chat(ALICE, "a1", 0, "x" * 70000, Options())
    with pytest.raises(InvalidArgument):
        s.sessions.chat(ALICE, "a1", 0, "hi", Options(json_schema={"type": "object"}))


def test_one_message_at_a_time_per_session(tmp_path: Path) -> None:
    s = S(tmp_path)
    sid = done(s.say("Hello"))["session"]
    stream = s.sessions.chat(ALICE, "a1", sid, "first", Options())
    with pytest.raises(Busy):
        s.sessions.chat(ALICE, "a1", sid, "second", Options())
    with pytest.raises(Busy):
        s.sessions.remove(ALICE, sid)
    asyncio.run(stream.aclose())  # the first's stream closed unread frees the session
    s.sessions.remove(ALICE, sid)


def test_a_removed_agents_sessions_go_with_it(tmp_path: Path) -> None:
    s = S(tmp_path)
    sid = done(s.say("Hello"))["session"]
    other = done(s.say("Hi", agent="a2"))["session"]
    s.w.run(s.w.reg.remove(ALICE, "a1"))
    assert s.sessions.reconcile() == 1  # as at agentd's start after a crash
    assert [x["id"] for x in s.sessions.listing(ALICE)] == [other]
    assert s.sessions.forget_agent(s.a2) == 1
    assert s.w.store.scalar("SELECT count(*) FROM chat_turns") == 0
    with pytest.raises(NoSuchSession):
        s.sessions.show(ROOT, sid)

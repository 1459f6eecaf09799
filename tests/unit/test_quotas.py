"""Token metering and quotas, and the model path through agentd (quota check,
persona, usage rows, recovery when the inference service dies), against a
stand-in inference service on a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw
import pytest
from world import ALICE, BOB, ROOT, World

from agentd import thinking
from agentd.agent import Agent
from agentd.errors import InvalidArgument, ModelUnavailable, PermissionDenied, QuotaExceeded
from agentd.modelclient import Interrupted, ModelClient
from agentd.quotas import Meter, period_bounds
from agentd.store import MIGRATIONS, Store
from agentd.thinking import Options, Thinking, parse_messages, parse_options, prompt_estimate


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("daily", "2026-11-21T13:05:00", "2026-11-21T00:00:00", "2026-11-22T00:00:00"),
        ("weekly", "2026-11-21T13:05:00", "2026-11-16T00:00:00", "2026-11-23T00:00:00"),
        ("monthly", "2026-11-21T13:05:00", "2026-11-01T00:00:00", "2026-12-01T00:00:00"),
        ("monthly", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("monthly", "2028-02-10T00:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
    ],
)
def test_periods_are_utc_calendar_periods(period: str, now: str, start: str, end: str) -> None:
    assert period_bounds(period, ts(now)) == (ts(start), ts(end))


def test_unknown_period_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        period_bounds("hourly", 0)


class M:
    def __init__(self, tmp_path: Path, **cfg: object) -> None:
        self.w = World(tmp_path, **cfg)
        self.meter = Meter(self.w.cfg, self.w.store, self.w.audit, self.w.reg)

    def agent(self, name: str, owner=ALICE, template: str = "sandbox") -> Agent:
        return self.w.run(self.w.reg.create(owner, name, template))

    def use(self, agent: Agent, tokens: int) -> None:
        self.meter.record(agent, "chat", tokens // 2, tokens - tokens // 2, "ok", 0.1)


def test_template_budget_then_admin_override(tmp_path: Path) -> None:
    m = M(tmp_path)
    a = m.agent("a1")  # sandbox.toml: token_budget = 50000, monthly
    q = m.meter.agent_quota(a)
    assert (q.limit, q.period, q.source, q.used) == (50000, "monthly", "template", 0)
    m.use(a, 120)
    m.meter.set(ROOT, "agent", "a1", 100, "daily")
    q = m.meter.agent_quota(a)
    assert (q.limit, q.period, q.source, q.used) == (100, "daily", "admin", 120)
    assert q.resets_at == period_bounds("daily", q.resets_at - 1)[1]
    (row,) = m.w.audit_rows("quota.set")
    assert row.detail["tokens"] == 100 and row.actor_uid == 0


def test_exhausted_quota_refuses_with_reset_time_and_audits(tmp_path: Path) -> None:
    m = M(tmp_path)
    a = m.agent("a1")
    m.meter.set(ROOT, "agent", "a1", 100, "weekly")
    m.use(a, 99)
    m.meter.check(a, ALICE.uid)  # 1 token left: admitted
    m.use(a, 30)  # charged in full: a quota is overshot by at most one request
    with pytest.raises(QuotaExceeded) as e:
        m.meter.check(a, ALICE.uid)
    end = period_bounds("weekly", e.value.resets_at - 1)[1]
    assert e.value.resets_at == end
    assert "129 of its 100 weekly tokens" in str(e.value) and "resets at" in str(e.value)
    (row,) = m.w.audit_rows("model.refused")
    assert row.result == "denied" and row.agent == "a1"


def test_owner_quota_counts_all_their_agents(tmp_path: Path) -> None:
    m = M(tmp_path, owner_token_quota=100)
    a, b = m.agent("a1"), m.agent("a2")
    c = m.agent("c1", owner=BOB)
    m.use(a, 60)
    m.use(c, 500)  # bob's usage is not alice's
    m.meter.check(b, ALICE.uid)
    m.use(b, 40)
    with pytest.raises(QuotaExceeded, match="owner uid 1000"):
        m.meter.check(a, ALICE.uid)
    with pytest.raises(QuotaExceeded):
        m.meter.check(c, BOB.uid)  # 500 > 100 too


def test_reset_counts_from_now_and_keeps_the_limit(tmp_path: Path) -> None:
    m = M(tmp_path)
    a = m.agent("a1")
    m.meter.set(ROOT, "agent", "a1", 10, "monthly")
    m.use(a, 10)
    with pytest.raises(QuotaExceeded):
        m.meter.check(a, ALICE.uid)
    m.meter.reset(ROOT, "agent", "a1")
    m.meter.check(a, ALICE.uid)
    q = m.meter.agent_quota(a)
    assert (q.limit, q.used, q.source) == (10, 0, "admin")


def test_only_admins_change_quotas(tmp_path: Path) -> None:
    m = M(tmp_path)
    m.agent("a1")
    with pytest.raises(PermissionDenied):
        m.meter.set(ALICE, "agent", "a1", 10**6, "monthly")
    with pytest.raises(PermissionDenied):
        m.meter.reset(ALICE, "owner", "1000")
    assert m.w.audit_rows("quota.set")[0].result == "denied"
    with pytest.raises(InvalidArgument):
        m.meter.set(ROOT, "team", "x", 1, "monthly")
    with pytest.raises(InvalidArgument):
        m.meter.set(ROOT, "owner", "no-such-user-here", 1, "monthly")
    with pytest.raises(InvalidArgument):
        m.meter.set(ROOT, "agent", "a1", -1, "monthly")


def test_usage_by_day_shows_owners_their_own(tmp_path: Path) -> None:
    m = M(tmp_path)
    a, c = m.agent("a1"), m.agent("c1", owner=BOB)
    m.use(a, 10)
    m.use(a, 20)
    m.use(c, 5)
    rows = m.meter.usage_by_day(ALICE, 7)
    assert [(r[1], r[3], r[4] + r[5]) for r in rows] == [("a1", 2, 30)]
    assert {r[1] for r in m.meter.usage_by_day(ROOT, 7)} == {"a1", "c1"}
    names = [q.subject for q in m.meter.quotas(ALICE)]
    assert names == ["a1", "1000"]


# ----------------------------------------------------------------- thinking
class FakeService:
    """A stand-in agentd-inference: echoes the last user message token by token."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[dict[str, Any]] = []
        self.die_after_tokens: int | None = None
        self.pause_after_tokens: int | None = None  # then wait for the client to go
        self.prompt_tokens = 7
        self.server: asyncio.AbstractServer | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self.handle, str(self.path))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        if self.handlers:  # each ends when its client goes away
            await asyncio.wait(self.handlers, timeout=5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        req = json.loads(await reader.readline())
        if req["op"] == "show":  # Thinking asks a sequence's context once
            show = {"event": "done", "model": {"name": "fake"}, "config": {"context": 2048}}
            writer.write(json.dumps(show).encode() + b"\n")
            await writer.drain()
            writer.close()
            return
        self.requests.append(req)
        words = req["messages"][-1]["content"].split()
        queued = {"event": "queued", "request_id": len(self.requests)}
        send = [{**queued, "prompt_tokens": self.prompt_tokens}]
        for i, word in enumerate(words):
            if self.pause_after_tokens is not None and i == self.pause_after_tokens:
                for event in send:
                    writer.write(json.dumps(event).encode() + b"\n")
                await writer.drain()
                await reader.read()  # until agentd closes: the request is cancelled
                writer.close()
                return
            if self.die_after_tokens is not None and i == self.die_after_tokens:
                self.die_after_tokens = None
                for event in send:
                    writer.write(json.dumps(event).encode() + b"\n")
                await writer.drain()
                writer.close()
                return
            send.append({"event": "token", "text": word + " "})
        send.append(
            {
                "event": "done",
                "text": " ".join(words) + " ",
                "finish_reason": "eos",
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": len(words),
            }
        )
        for event in send:
            writer.write(json.dumps(event).encode() + b"\n")
        await writer.drain()
        writer.close()


class T:
    def __init__(self, tmp_path: Path) -> None:
        self.m = M(tmp_path)
        self.service = FakeService(tmp_path / "inference.sock")
        self.thinking = Thinking(
            self.m.w.reg,
            self.m.meter,
            ModelClient(self.service.path, patience_s=0.5),
            self.m.w.audit,
        )


async def collect(stream) -> list[dict[str, Any]]:
    return [e async for e in stream]


def test_chat_streams_with_the_persona_and_meters(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")

    async def go() -> list[dict[str, Any]]:
        await t.service.start()
        try:
            msgs = parse_messages(json.dumps([{"role": "user", "content": "one two three"}]))
            return await collect(t.thinking.generate(a, ALICE.uid, "chat", msgs, Options()))
        finally:
            await t.service.stop()

    events = asyncio.run(go())
    assert "".join(e["text"] for e in events if e["event"] == "token") == "one two three "
    (req,) = t.service.requests
    assert req["agent"] == "a1" and req["messages"][0]["role"] == "system"
    assert req["messages"][0]["content"] == "You are a helpful assistant."  # sandbox.toml
    (row,) = t.m.w.store.query("SELECT * FROM usage")
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"], row["kind"]) == (
        7,
        3,
        "ok",
        "chat",
    )


def test_think_is_retried_once_when_the_service_dies(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    t.service.die_after_tokens = 1

    async def go() -> dict[str, Any]:
        await t.service.start()
        try:
            msgs = [{"role": "user", "content": "a b c"}]
            return await t.thinking.think(a, msgs, Options())
        finally:
            await t.service.stop()

    answer = asyncio.run(go())
    assert answer["text"] == "a b c " and answer["completion_tokens"] == 3
    statuses = [r["status"] for r in t.m.w.store.query("SELECT status FROM usage ORDER BY id")]
    assert statuses == ["error", "ok"]  # the lost attempt is metered too


def test_chat_interrupted_fails_cleanly(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    t.service.die_after_tokens = 2

    async def go() -> list[dict[str, Any]]:
        await t.service.start()
        got: list[dict[str, Any]] = []
        try:
            with pytest.raises(Interrupted):
                async for e in t.thinking.generate(
                    a, ALICE.uid, "chat", [{"role": "user", "content": "a b c d"}], Options()
                ):
                    got.append(e)
            return got
        finally:
            await t.service.stop()

    got = asyncio.run(go())
    assert [e["text"] for e in got if e["event"] == "token"] == ["a ", "b "]


def test_no_service_is_model_unavailable_and_over_quota_never_reaches_it(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    with pytest.raises(ModelUnavailable, match="not answering"):
        asyncio.run(t.thinking.think(a, [{"role": "user", "content": "x"}], Options()))
    t.m.meter.set(ROOT, "agent", "a1", 1, "daily")
    t.m.use(a, 5)
    with pytest.raises(QuotaExceeded):
        t.thinking.generate(a, ALICE.uid, "chat", [{"role": "user", "content": "x"}], Options())
    assert t.service.requests == []


def test_chat_is_for_owners_and_admins_only(tmp_path: Path) -> None:
    t = T(tmp_path)
    t.m.agent("a1")
    assert t.thinking.chat_agent(ALICE, "a1").name == "a1"
    assert t.thinking.chat_agent(ROOT, "a1").name == "a1"
    with pytest.raises(PermissionDenied):
        t.thinking.chat_agent(BOB, "a1")


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[]",
        '{"role": "user"}',
        '[{"role": "robot", "content": "x"}]',
        '[{"role": "user", "content": 3}]',
        '[{"role": "user", "content": "x", "extra": 1}]',
    ],
)
def test_bad_messages_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_messages(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_tokens": 0},
        {"max_tokens": 10**6},
        {"temperature": -1},
        {"json_schema": "{"},
        {"json_schema": "[1]"},
        {"colour": "red"},
    ],
)
def test_bad_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        parse_options(bad)


# ------------------------------------------------- holds, settling, name reuse
def chat_stream(t: T, agent: Agent, text: str = "one two three", max_tokens: int = 10):
    msgs = [{"role": "user", "content": text}]
    return t.thinking.generate(agent, ALICE.uid, "chat", msgs, Options(max_tokens=max_tokens))


def usage_rows(m: M) -> list[tuple[int, int, str]]:
    rows = m.w.store.query("SELECT * FROM usage ORDER BY id")
    return [(r["prompt_tokens"], r["completion_tokens"], r["status"]) for r in rows]


def test_the_prompt_estimate_holds_bytes_and_the_chat_frame() -> None:
    short = [{"role": "user", "content": "hi"}]
    assert prompt_estimate(short) == 48 + 8 + 2
    emoji = [{"role": "system", "content": "x"}, {"role": "user", "content": "😀" * 10}]
    assert prompt_estimate(emoji) == 48 + 8 + 1 + 8 + 40  # bytes, not characters


@pytest.mark.parametrize("owner_quota", [False, True])
def test_concurrent_requests_against_room_for_one_admit_one(
    tmp_path: Path, owner_quota: bool
) -> None:
    t = T(tmp_path)
    agents = [t.m.agent("a1"), t.m.agent("a2")]
    one = prompt_estimate(t.thinking._persona(agents[0], [{"role": "user", "content": "x y"}]))
    room = one + 10 + 5  # one request's hold and a little: never two
    if owner_quota:  # alice's two agents share her quota
        t.m.meter.set(ROOT, "owner", "1000", room, "daily")
    else:
        t.m.meter.set(ROOT, "agent", "a1", room, "daily")
        agents = agents[:1]

    async def one_chat(i: int) -> list[dict[str, Any]]:
        return await collect(chat_stream(t, agents[i % len(agents)], "x y"))

    async def go() -> list[Any]:
        await t.service.start()
        try:
            return await asyncio.gather(*(one_chat(i) for i in range(8)), return_exceptions=True)
        finally:
            await t.service.stop()

    results = asyncio.run(go())
    done = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(done), len(refused)) == (1, 7), results
    assert "requests in progress hold" in str(refused[0])
    assert len(t.service.requests) == 1 and usage_rows(t.m) == [(7, 2, "ok")]
    assert t.m.meter.held(agents[0]) == (0, 0)  # settled: nothing held any more
    assert len(t.m.w.audit_rows("model.refused")) == 7


def test_a_chat_closed_before_done_is_charged_its_streamed_tokens(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    t.service.pause_after_tokens = 2

    async def go() -> list[str]:
        await t.service.start()
        got: list[str] = []
        try:
            async with contextlib.aclosing(chat_stream(t, a, "a b c d e")) as events:
                async for e in events:
                    if e["event"] == "token":
                        got.append(e["text"])
                    if len(got) == 2:
                        assert t.m.meter.held(a)[0] == 7 + 10  # corrected on "queued"
                        break  # the caller closes its stream
            return got
        finally:
            await t.service.stop()

    assert asyncio.run(go()) == ["a ", "b "]
    assert usage_rows(t.m) == [(7, 2, "cancelled")]
    assert t.m.meter.held(a) == (0, 0)


def test_a_think_that_times_out_is_charged(tmp_path: Path, monkeypatch) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    t.service.pause_after_tokens = 3
    monkeypatch.setattr(thinking, "THINK_TIMEOUT_S", 0.5)

    async def go() -> None:
        await t.service.start()
        try:
            with pytest.raises(ModelUnavailable, match="did not answer within"):
                await t.thinking.think(a, [{"role": "user", "content": "a b c d e"}], Options())
        finally:
            await t.service.stop()

    asyncio.run(go())
    assert usage_rows(t.m) == [(7, 3, "cancelled")]
    assert t.m.meter.held(a) == (0, 0)


def test_a_service_error_after_tokens_is_charged_and_released(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    t.service.die_after_tokens = 3

    async def go() -> None:
        await t.service.start()
        try:
            with pytest.raises(Interrupted):
                await collect(chat_stream(t, a, "a b c d e"))
        finally:
            await t.service.stop()

    asyncio.run(go())
    assert usage_rows(t.m) == [(7, 3, "error")]
    assert t.m.meter.held(a) == (0, 0)


def test_a_stream_dropped_unstarted_releases_its_hold(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    stream = chat_stream(t, a)
    held = t.m.meter.held(a)
    assert held[0] > 10 and held == (held[0], held[0])
    del stream  # never iterated: nothing reached the service
    assert t.m.meter.held(a) == (0, 0) and usage_rows(t.m) == []


def test_a_real_prompt_over_the_estimate_that_does_not_fit_is_stopped(tmp_path: Path) -> None:
    t = T(tmp_path)
    a = t.m.agent("a1")
    t.m.meter.set(ROOT, "agent", "a1", 250, "daily")  # the estimate, 107, fits
    t.service.prompt_tokens = 280  # a template framing far beyond PROMPT_FRAME

    async def go() -> list[dict[str, Any]]:
        await t.service.start()
        got: list[dict[str, Any]] = []
        try:
            with pytest.raises(QuotaExceeded, match="may need up to 290"):
                async for e in chat_stream(t, a, "a b c"):
                    got.append(e)
            return got
        finally:
            await t.service.stop()

    assert asyncio.run(go()) == []  # stopped before the first event reached the caller
    assert usage_rows(t.m) == [(280, 0, "cancelled")]  # the service did tokenize it
    assert t.m.meter.held(a) == (0, 0)


def test_removing_and_recreating_an_agent_keeps_its_usage_and_quota(tmp_path: Path) -> None:
    """The same owner's agent of the same name: removal must not reset a quota."""
    m = M(tmp_path)
    a = m.agent("a1")
    m.meter.set(ROOT, "agent", "a1", 10, "monthly")
    m.use(a, 50)
    m.w.run(m.w.reg.remove(ALICE, "a1", False))
    b = m.agent("a1")
    q = m.meter.agent_quota(b)
    assert (q.used, q.limit, q.source) == (50, 10, "admin")
    with pytest.raises(QuotaExceeded, match="50 of its 10 monthly tokens"):
        m.meter.check(b, ALICE.uid)


def test_another_owners_agent_of_a_removed_ones_name_starts_afresh(tmp_path: Path) -> None:
    m = M(tmp_path)
    a = m.agent("a1")
    m.meter.set(ROOT, "agent", "a1", 10, "monthly")
    m.use(a, 50)
    m.w.run(m.w.reg.remove(ALICE, "a1", False))
    c = m.agent("a1", owner=BOB)
    q = m.meter.agent_quota(c)
    assert (q.used, q.source) == (0, "template")  # neither alice's usage nor her quota
    m.meter.check(c, BOB.uid)
    m.meter.set(ROOT, "agent", "a1", 1000, "daily")  # bob's agent's own
    m.use(c, 7)
    assert m.meter.owner_quota(ALICE.uid).used == 50  # the owner's usage stays theirs
    m.w.run(m.w.reg.remove(BOB, "a1", False))
    d = m.agent("a1")  # alice again: her usage and quota, not bob's
    q = m.meter.agent_quota(d)
    assert (q.used, q.limit, q.period) == (50, 10, "monthly")


def test_schema_4_gives_each_agent_quota_its_owner(tmp_path: Path) -> None:
    db = apsw.Connection(str(tmp_path / "old.db"))
    for step in MIGRATIONS[:3]:
        db.execute(step)
    db.execute("PRAGMA user_version=3")
    agent = (
        "INSERT INTO agents (name, uid, gid, owner_uid, template, profile, memory_max, "
        "cpu_quota, tasks_max, state, created_at) VALUES (?,?,?,?,'t','p',1,1,1,?,0)"
    )
    db.execute(agent, ("a1", 70001, 70001, 1000, "present"))
    db.execute(agent, ("gone", 70002, 70002, 1001, "removed"))
    for kind, subject in (("agent", "a1"), ("agent", "gone"), ("agent", "x"), ("owner", "1000")):
        db.execute(
            "INSERT INTO quotas (kind, subject, tokens, period, set_by, set_at) "
            "VALUES (?,?,5,'daily',0,0)",
            (kind, subject),
        )
    db.close()
    store = Store(tmp_path / "old.db")
    rows = store.query("SELECT kind, subject, owner_uid, tokens FROM quotas ORDER BY subject")
    assert [tuple(r.values()) for r in rows] == [
        ("owner", "1000", 1000, 5),
        ("agent", "a1", 1000, 5),
        ("agent", "gone", 1001, 5),
    ]  # "x", of no agent at all, went (removal dropped such rows before)
    store.close()

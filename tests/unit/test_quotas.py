"""Token metering and quotas, and the model path through agentd (quota check,
persona, usage rows, recovery when the inference service dies), against a
stand-in inference service on a real Unix socket."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from world import ALICE, BOB, ROOT, World

from agentd.agent import Agent
from agentd.errors import InvalidArgument, ModelUnavailable, PermissionDenied, QuotaExceeded
from agentd.events import AgentRemoved
from agentd.modelclient import Interrupted, ModelClient
from agentd.quotas import Meter, period_bounds
from agentd.thinking import Options, Thinking, parse_messages, parse_options


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
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self.handle, str(self.path))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = json.loads(await reader.readline())
        self.requests.append(req)
        words = req["messages"][-1]["content"].split()
        send = [{"event": "queued", "request_id": len(self.requests), "prompt_tokens": 7}]
        for i, word in enumerate(words):
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
                "prompt_tokens": 7,
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


def test_a_new_agent_of_a_removed_ones_name_starts_afresh(tmp_path: Path) -> None:
    m = M(tmp_path)
    m.w.reg.events.subscribe(AgentRemoved, m.meter.forget)
    a = m.agent("a1")
    m.meter.set(ROOT, "agent", "a1", 10, "monthly")
    m.use(a, 50)
    m.w.run(m.w.reg.remove(ALICE, "a1", False))
    b = m.agent("a1")
    q = m.meter.agent_quota(b)
    assert (q.used, q.source) == (0, "template")  # neither the old usage nor its quota
    m.meter.check(b, ALICE.uid)
    assert m.meter.owner_quota(ALICE.uid).used == 50  # the owner's usage stays theirs

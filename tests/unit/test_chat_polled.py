"""Chat streams read by long polls (agentd.api.streams.Polled: Model.ChatStart,
ChatRead, ChatCancel, for Cockpit's page): events in order and buffered until
read, the stream its starter's alone, bounded per UID, and closed (so the
model request is cancelled) when cancelled or left unread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentd.api import streams
from agentd.api.streams import Polled
from agentd.errors import InvalidArgument, LimitExceeded, QuotaExceeded


class Source:
    """A model stream: queued, the tokens as they are released, done."""

    def __init__(self, *tokens: str, fail: Exception | None = None) -> None:
        self.tokens = tokens
        self.fail = fail
        self.release = asyncio.Event()
        self.closed = asyncio.Event()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"event": "queued", "prompt_tokens": 3}
            await self.release.wait()
            for t in self.tokens:
                yield {"event": "token", "text": t}
            if self.fail is not None:
                raise self.fail
            yield {"event": "done", "text": "".join(self.tokens)}
        finally:
            self.closed.set()


def test_events_come_in_order_and_the_stream_ends_with_done() -> None:
    async def body() -> list[list[str]]:
        p, src = Polled(), Source("Hel", "lo")
        sid = await p.open(1000, src.events())
        first = await p.read(1000, sid, 5)
        src.release.set()
        rest: list[dict[str, Any]] = []
        while not rest or rest[-1]["event"] != "done":
            rest += await p.read(1000, sid, 5)
        assert sid not in p.streams  # gone after done
        return [[e["event"] for e in first], [e.get("text", e["event"]) for e in rest]]

    first, rest = asyncio.run(body())
    assert first == ["queued"] and rest == ["Hel", "lo", "Hello"]


def test_a_read_with_nothing_new_waits_then_returns_empty() -> None:
    async def body() -> list[dict[str, Any]]:
        p, src = Polled(), Source("x")
        sid = await p.open(1000, src.events())
        await p.read(1000, sid, 5)  # queued
        got = await p.read(1000, sid, 0.05)
        await p.cancel(1000, sid)
        return got

    assert asyncio.run(body()) == []


def test_only_its_starter_may_read_or_cancel_it() -> None:
    async def body() -> None:
        p, src = Polled(), Source("x")
        sid = await p.open(1000, src.events())
        for call in (p.read(1001, sid, 0), p.cancel(1001, sid), p.read(1000, sid + 1, 0)):
            with pytest.raises(InvalidArgument, match="no such chat stream"):
                await call
        assert sid in p.streams and 0 < sid < 2**53  # exact in JavaScript
        await p.cancel(1000, sid)
        assert src.closed.is_set() and sid not in p.streams

    asyncio.run(body())


def test_a_uid_may_hold_so_many_streams_and_the_limit_is_asked_first() -> None:
    async def body() -> None:
        p = Polled()
        sources = [Source() for _ in range(Polled.PER_UID)]
        sids = [await p.open(1000, s.events()) for s in sources]
        with pytest.raises(LimitExceeded):
            p.room(1000)
        p.room(1001)  # another user's room is their own
        await p.cancel(1000, sids[0])
        p.room(1000)
        await p.close()
        assert all(s.closed.is_set() for s in sources)

    asyncio.run(body())


def test_a_stream_nobody_reads_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Polled, "IDLE_S", 0.05)

    async def body() -> tuple[bool, bool]:
        p, src = Polled(), Source("x")
        sid = await p.open(1000, src.events())
        await asyncio.wait_for(src.closed.wait(), 5)  # the model request is cancelled
        await asyncio.sleep(0)
        return src.closed.is_set(), sid in p.streams

    assert asyncio.run(body()) == (True, False)


def test_an_agentd_error_in_the_stream_is_its_last_event() -> None:
    async def body() -> list[dict[str, Any]]:
        p, src = Polled(), Source("a", fail=QuotaExceeded("over", 0.0))
        sid = await p.open(1000, src.events())
        src.release.set()
        got: list[dict[str, Any]] = []
        while not got or got[-1]["event"] not in ("done", "error"):
            got += await p.read(1000, sid, 5)
        return got

    got = asyncio.run(body())
    assert got[-1] == {"event": "error", "error": "QuotaExceeded", "message": "over"}
    assert streams.Polled.MOST_EVENTS >= 1

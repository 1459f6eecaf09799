"""Fairness per owner, then per agent: admission order and queue shares.

The queue's rules alone (no model), then the engine with the real model and
its decode loop held at a known point (``between_steps``) so that what is
queued when admission resumes is exactly what the test queued, then the
service over its socket with the ``owner`` field.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inference_helpers import QUESTIONS, chat

from agentd.inference.config import EngineConfig, parse_model_table
from agentd.inference.engine import Engine
from agentd.inference.errors import Overloaded
from agentd.inference.fairqueue import FairQueue, Limits
from agentd.inference.protocol import RequestError, parse_generate
from agentd.inference.sampling import SamplingParams
from agentd.inference.stream import Request, Stream

# ---------------------------------------------------------------- the queue alone


def req(agent: str, owner: str | None, n: int = 0) -> Request:
    r = Request(
        id=n,
        agent=agent,
        owner=owner,
        prompt=[1],
        params=SamplingParams(),
        sampler=None,  # type: ignore[arg-type]  # the queue never touches it
        loop=None,  # type: ignore[arg-type]
    )
    return r


def drain(q: FairQueue) -> list[str]:
    out = []
    while q:
        r = q.pop()
        out.append(f"{r.owner}/{r.agent}")
    return out


def test_queue_turns_go_to_owners_then_to_their_agents() -> None:
    q = FairQueue(Limits(total=64, per_owner=64, per_agent=64))
    for _round in range(2):
        for a in ("a1", "a2", "a3", "a4"):
            q.push(req(a, "1000"))
    q.push(req("b", "2000"))
    assert drain(q) == [
        "1000/a1",
        "2000/b",  # in the first round, not after all four of owner 1000's agents
        "1000/a2",
        "1000/a3",
        "1000/a4",
        "1000/a1",
        "1000/a2",
        "1000/a3",
        "1000/a4",
    ]


def test_queue_shares_name_what_is_full() -> None:
    q = FairQueue(Limits(total=6, per_owner=3, per_agent=2))
    q.push(req("a1", "1000"))
    q.push(req("a1", "1000"))
    with pytest.raises(Overloaded) as agent_full:
        q.push(req("a1", "1000"))
    assert agent_full.value.scope == "agent" and "agent's share" in str(agent_full.value)
    q.push(req("a2", "1000"))
    with pytest.raises(Overloaded) as owner_full:
        q.push(req("a3", "1000"))  # a new agent of the same owner: the owner's share
    e = owner_full.value
    assert e.scope == "owner" and (e.queued, e.limit) == (3, 3)
    assert "owner's share of the inference queue is full (3/3" in str(e)
    assert "at most 3 of the 6 places" in str(e) and "retry later" in str(e)
    for agent in ("b1", "b2", "b3"):  # another owner still has its share
        q.push(req(agent, "2000"))
    with pytest.raises(Overloaded) as full:
        q.push(req("c", "3000"))
    assert full.value.scope == "queue" and "inference queue full (6/6" in str(full.value)
    # a request that finds a sequence free does not wait: no share applies
    q.push(req("c", "3000"), free=7)
    assert len(q) == 7


def test_queue_without_owner_is_its_own_owner_and_cancel_frees_room() -> None:
    q = FairQueue(Limits(total=8, per_owner=2, per_agent=2))
    old = [req("x", None), req("x", None)]
    for r in old:
        q.push(r)
    q.push(req("x", "x"))  # an owner called "x" is not the agent "x" without owner
    q.push(req("y", None))
    with pytest.raises(Overloaded):
        q.push(req("x", None))
    assert q.remove(old[0]) and not q.remove(old[0])
    q.push(req("x", None))
    assert q.owner_queued(("agent", "x")) == 2 and q.owner_queued(("owner", "x")) == 1
    assert len(q.clear()) == 4 and not q and q.owner_queued(("agent", "x")) == 0


def test_config_clamps_the_shares() -> None:
    cfg = parse_model_table({"max_queue": 8, "max_queue_per_owner": 100, "max_queue_per_agent": 50})
    e = cfg.engine_config()
    assert (e.max_queue, e.max_queue_per_owner, e.max_queue_per_agent) == (8, 8, 8)
    e = parse_model_table({"max_queue_per_owner": 4}).engine_config()
    assert (e.max_queue, e.max_queue_per_owner, e.max_queue_per_agent) == (64, 4, 4)


def test_protocol_owner_field() -> None:
    base: dict[str, Any] = {"op": "generate", "agent": "a", "prompt": "x"}
    assert parse_generate(base).owner is None  # an older client: the agent is its owner
    assert parse_generate({**base, "owner": "1000"}).owner == "1000"
    for bad in (1000, "", "9" * 65, None):
        if bad is None:
            continue
        with pytest.raises(RequestError) as e:
            parse_generate({**base, "owner": bad})
        assert e.value.error == "InvalidRequest" and "owner" in str(e.value)


# ---------------------------------------------------------------- the engine


class Held:
    """An engine of one sequence whose decode loop stops after admitting its
    first request, until ``release()``: the test queues while it waits."""

    def __init__(self, model_path: Path, **cfg: Any) -> None:
        self.eng = Engine(
            model_path, EngineConfig(n_seq_max=1, n_ctx_per_seq=256, n_batch=64, **cfg)
        )
        self.paused, self._resume = threading.Event(), threading.Event()
        self.eng.between_steps = self._between

    def _between(self) -> None:
        if not self._resume.is_set():
            self.paused.set()
            self._resume.wait(60)

    def release(self) -> None:
        self._resume.set()


@pytest.fixture
def held(model_path: Path, request: pytest.FixtureRequest) -> Iterator[Held]:
    h = Held(model_path, **getattr(request, "param", {}))
    try:
        yield h
    finally:
        h.release()
        h.eng.close()


def test_second_owner_is_admitted_in_the_first_round(held: Held) -> None:
    """Owner 1000 with four agents queues 12 requests, then owner 2000's one
    agent queues 1: 2000 is admitted second, not after all of 1000's agents
    (fairness per agent alone admitted it fifth)."""
    eng = held.eng

    async def run() -> list[tuple[int, str, str]]:
        prompt = eng.tokenize("Hello")
        p = SamplingParams(max_tokens=1)
        streams = [eng.submit(prompt, p, agent="blocker", owner="0")]
        assert await asyncio.to_thread(held.paused.wait, 60)  # blocker admitted, loop held
        for _round in range(3):
            for a in ("a1", "a2", "a3", "a4"):
                streams.append(eng.submit(prompt, p, agent=a, owner="1000"))
        streams.append(eng.submit(prompt, p, agent="b", owner="2000"))
        held.release()
        for r in await asyncio.gather(*(s.result() for s in streams)):
            assert r.completion_tokens == 1
        return list(eng.admission_log)

    log = asyncio.run(run())
    order = [f"{owner}/{agent}" for _id, agent, owner in log]
    assert order[:7] == [
        "0/blocker",
        "1000/a1",
        "2000/b",
        "1000/a2",
        "1000/a3",
        "1000/a4",
        "1000/a1",
    ], order
    assert len(order) == 14


@pytest.mark.parametrize(
    "held", [{"max_queue": 8, "max_queue_per_owner": 4, "max_queue_per_agent": 4}], indirect=True
)
def test_owner_share_refuses_its_excess_while_another_owner_gets_in(held: Held) -> None:
    eng = held.eng

    async def run() -> None:
        prompt = chat(eng, QUESTIONS[0])
        long = SamplingParams(max_tokens=8, stop_at_eos=False)
        streams: list[Stream] = [eng.submit(prompt, long, agent="blocker", owner="0")]
        assert await asyncio.to_thread(held.paused.wait, 60)
        mine, refused = [], []
        for _round in range(2):
            for a in ("a1", "a2", "a3", "a4"):
                try:
                    mine.append(eng.submit(prompt, long, agent=a, owner="1000"))
                except Overloaded as e:
                    refused.append(e)
        # four agents, but one owner: four places of the eight, not eight
        assert len(mine) == 4 and len(refused) == 4
        assert {e.scope for e in refused} == {"owner"}
        assert "owner's share of the inference queue is full (4/4" in str(refused[0])
        other = eng.submit(prompt, long, agent="b", owner="2000")  # still gets in
        assert eng.stats()["queued"] == 5
        held.release()
        results = await asyncio.gather(*(s.result() for s in [*streams, *mine, other]))
        assert all(r.completion_tokens == 8 for r in results)

    asyncio.run(run())

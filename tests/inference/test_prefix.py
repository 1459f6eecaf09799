"""Prompt prefix reuse: same greedy tokens as computing the whole prompt, less work."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from rawgreedy import raw_greedy

from agentd.inference.config import EngineConfig
from agentd.inference.engine import Engine
from agentd.inference.sampling import SamplingParams
from agentd.inference.stream import Stream

SYSTEM = (
    "You are a careful assistant of the agentd test suite. Answer briefly and "
    "precisely, in one sentence."
)
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "What do cats eat?",
]


def prompts(engine: Engine, questions: list[str] = QUESTIONS) -> list[list[int]]:
    return [
        engine.chat_tokens([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
        for q in questions
    ]


def shared(a: list[int], b: list[int]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)


def run_all(engine: Engine, ps: list[list[int]], n: int = 10) -> list[list[int]]:
    async def go() -> list[list[int]]:
        streams = [
            engine.submit(p, SamplingParams(max_tokens=n), agent=f"a{i}") for i, p in enumerate(ps)
        ]
        return [r.tokens for r in await asyncio.gather(*(s.result() for s in streams))]

    return asyncio.run(go())


def test_next_request_reuses_a_finished_ones_cache(model_path: Path) -> None:
    with Engine(model_path, EngineConfig(n_seq_max=2, n_ctx_per_seq=256, n_batch=64)) as eng:
        p = prompts(eng)
        common = shared(p[0], p[1])
        assert common >= 25
        run_all(eng, [p[0]])
        before = eng.prefix_reused
        (second,) = run_all(eng, [p[1]])
        assert eng.prefix_reused - before == common  # only the question was computed
        assert second == raw_greedy(eng, p[1], 10)[: len(second)]
        # the very same prompt again: all but its last token come from the cache
        before = eng.prefix_reused
        (again,) = run_all(eng, [p[1]])
        assert eng.prefix_reused - before == len(p[1]) - 1
        assert again == second


def test_requests_arriving_together_compute_the_prefix_once(model_path: Path) -> None:
    # a small batch: the first prompt takes several steps, the others wait for it
    with Engine(model_path, EngineConfig(n_seq_max=4, n_ctx_per_seq=256, n_batch=16)) as eng:
        p = prompts(eng)[:4]
        # each takes the longest prefix that an earlier one has
        expected = sum(max(shared(p[j], p[i]) for j in range(i)) for i in range(1, 4))
        got = run_all(eng, p)
        assert eng.prefix_reused == expected
        assert got == [raw_greedy(eng, q, 10)[: len(g)] for q, g in zip(p, got, strict=True)]


def test_source_cancelled_before_sharing(model_path: Path) -> None:
    """A request waiting to copy a running one's prefix, whose source is
    cancelled part way through its prompt, takes what the source computed
    (kept in its freed sequence) and prefills the rest: same tokens."""
    with Engine(model_path, EngineConfig(n_seq_max=3, n_ctx_per_seq=256, n_batch=16)) as eng:
        p = prompts(eng)
        assert shared(p[0], p[1]) > 16  # more than one step of the root's prefill
        cancelled_at: list[int] = []  # the root's computed tokens when cancelled
        submitted, done = threading.Event(), threading.Event()
        streams: list[Stream] = []  # root, waiter

        def between_steps() -> None:  # in the decode thread, between two steps
            submitted.wait(60)  # no step before both are queued
            if cancelled_at:
                return
            r, w = streams[0]._req, streams[1]._req
            if w.prefix_src is r and 0 < r.prefill_pos < len(r.prompt) and r.n_past < w.prefix_len:
                cancelled_at.append(r.n_past)
                streams[0].cancel()  # it leaves before the next step
                done.set()

        eng.between_steps = between_steps  # set before anything is queued

        async def go() -> list[int]:
            streams.append(eng.submit(p[0], SamplingParams(max_tokens=10), agent="root"))
            streams.append(eng.submit(p[1], SamplingParams(max_tokens=10), agent="waiter"))
            submitted.set()
            assert await asyncio.to_thread(done.wait, 60), "the waiter never waited on the root"
            assert (await streams[0].result()).finish_reason == "cancelled"
            return (await streams[1].result()).tokens

        got = asyncio.run(go())
        assert cancelled_at == [16]  # one step of 16 prompt tokens
        assert eng.prefix_reused == 16  # the waiter copied exactly what the root had
        assert got == raw_greedy(eng, p[1], 10)[: len(got)]
        assert eng.stats()["active"] == 0


def test_reuse_off_gives_the_same_tokens(model_path: Path) -> None:
    with (
        Engine(
            model_path, EngineConfig(n_seq_max=4, n_ctx_per_seq=256, n_batch=64, prefix_min=0)
        ) as off,
        Engine(model_path, EngineConfig(n_seq_max=4, n_ctx_per_seq=256, n_batch=64)) as on,
    ):
        p = prompts(off)[:4]
        assert run_all(off, p) == run_all(on, p)
        assert off.prefix_reused == 0 and on.prefix_reused > 0

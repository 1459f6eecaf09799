"""Prompt prefix reuse: same greedy tokens as computing the whole prompt, less work."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentd.inference.engine import Engine, EngineConfig, SamplingParams, raw_greedy

SYSTEM = ("You are a careful assistant of the agentd test suite. Answer briefly and "
          "precisely, in one sentence.")
QUESTIONS = ["What is the capital of France?", "Name three colours.", "What is 2 + 2?",
             "Say hello in Spanish.", "What do cats eat?"]


def prompts(engine: Engine, questions: list[str] = QUESTIONS) -> list[list[int]]:
    return [engine.chat_tokens([{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": q}]) for q in questions]


def shared(a: list[int], b: list[int]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)


def run_all(engine: Engine, ps: list[list[int]], n: int = 10) -> list[list[int]]:
    async def go() -> list[list[int]]:
        streams = [engine.submit(p, SamplingParams(max_tokens=n), agent=f"a{i}")
                   for i, p in enumerate(ps)]
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
        assert second == raw_greedy(eng, p[1], 10)[:len(second)]
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
        assert got == [raw_greedy(eng, q, 10)[:len(g)] for q, g in zip(p, got, strict=True)]


def test_source_cancelled_before_sharing(model_path: Path) -> None:
    with Engine(model_path, EngineConfig(n_seq_max=3, n_ctx_per_seq=256, n_batch=16)) as eng:
        p = prompts(eng)

        async def go() -> list[int]:
            root = eng.submit(p[0], SamplingParams(max_tokens=10), agent="root")
            waiter = eng.submit(p[1], SamplingParams(max_tokens=10), agent="waiter")
            await asyncio.sleep(0.02)  # the root is part way through its prompt
            root.cancel()
            await root.result()
            return (await waiter.result()).tokens

        got = asyncio.run(go())
        assert got == raw_greedy(eng, p[1], 10)[:len(got)]
        assert eng.stats()["active"] == 0


def test_reuse_off_gives_the_same_tokens(model_path: Path) -> None:
    with Engine(model_path, EngineConfig(n_seq_max=4, n_ctx_per_seq=256, n_batch=64,
                                         prefix_min=0)) as off, \
         Engine(model_path, EngineConfig(n_seq_max=4, n_ctx_per_seq=256, n_batch=64)) as on:
        p = prompts(off)[:4]
        assert run_all(off, p) == run_all(on, p)
        assert off.prefix_reused == 0 and on.prefix_reused > 0

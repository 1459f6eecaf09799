"""Structured output: GBNF grammars and JSON Schemas, with the real default model."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from inference_helpers import SCHEMA, chat
from rawgreedy import raw_greedy

from agentd.inference.config import EngineConfig
from agentd.inference.engine import Engine
from agentd.inference.errors import InvalidGrammar
from agentd.inference.sampling import SamplingParams, schema_to_grammar
from agentd.inference.stream import Stream


def test_schema_to_grammar() -> None:
    gbnf = schema_to_grammar(SCHEMA)
    assert "root ::=" in gbnf and "answer" in gbnf
    for bad in ({"type": "nonsense"}, {"$ref": "https://example.com/s.json"}, [1, 2]):
        with pytest.raises(InvalidGrammar):
            schema_to_grammar(bad)  # type: ignore[arg-type]


def test_invalid_grammar_is_refused_at_submit(engine: Engine) -> None:
    async def run() -> None:
        for bad in ("root ::= (", 'other ::= "a"', "   "):
            with pytest.raises(InvalidGrammar):
                engine.submit(chat(engine, "Hi"), SamplingParams(max_tokens=4, grammar=bad))
        # the engine is unharmed and serves the next request
        r = await engine.submit(chat(engine, "Hi"), SamplingParams(max_tokens=2)).result()
        assert r.completion_tokens == 2

    asyncio.run(run())
    assert engine.stats()["active"] == 0 and engine.stats()["queued"] == 0


def test_json_schema_output_parses(engine: Engine) -> None:
    params = SamplingParams(max_tokens=48, grammar=schema_to_grammar(SCHEMA))
    prompt = chat(engine, "What is the capital of France? Answer in JSON.")

    async def run():
        return await engine.submit(prompt, params, agent="j").result()

    r = asyncio.run(run())
    assert r.finish_reason == "eos", r
    assert isinstance(json.loads(r.text)["answer"], str)


def test_constrained_and_free_requests_share_a_batch(engine: Engine) -> None:
    free_prompts = [chat(engine, q) for q in ("Name three colours.", "What is 2 + 2?")]
    free = SamplingParams(max_tokens=12)
    grammar = schema_to_grammar(SCHEMA)
    greedy_json = SamplingParams(max_tokens=48, grammar=grammar)
    # The sampled answer is bounded by the schema: unbounded, it ran past 48
    # tokens on an AMD EPYC build machine (2026-12-01; greedy is unaffected).
    short = {**SCHEMA, "properties": {"answer": {"type": "string", "maxLength": 24}}}
    hot_json = SamplingParams(
        max_tokens=48,
        grammar=schema_to_grammar(short),
        temperature=0.8,
        top_k=40,
        top_p=0.95,
        seed=3,
    )
    jprompt = chat(engine, "Say hello. Answer in JSON.")

    async def run():
        streams = [
            engine.submit(jprompt, greedy_json, agent="j1"),
            engine.submit(free_prompts[0], free, agent="f1"),
            engine.submit(jprompt, hot_json, agent="j2"),
            engine.submit(free_prompts[1], free, agent="f2"),
        ]
        return await asyncio.gather(*(s.result() for s in streams))

    steps0 = engine.steps
    j1, f1, j2, f2 = asyncio.run(run())
    assert engine.steps - steps0 < 48 + 12  # decoded together
    for r in (j1, j2):
        assert r.finish_reason == "eos", r
        assert "answer" in json.loads(r.text)
    # unconstrained greedy output is what a lone single-sequence loop gives
    assert f1.tokens == raw_greedy(engine, free_prompts[0], 12)[: len(f1.tokens)]
    assert f2.tokens == raw_greedy(engine, free_prompts[1], 12)[: len(f2.tokens)]


def test_cancelled_constrained_requests_free_their_sampler(model_path: Path) -> None:
    """Cancelled while still queued (the grammar sampler alone) or once
    admitted (the chain that owns it): freed on both paths. One sequence, and
    the decode loop held between admission and its first step while the
    requests are cancelled, so exactly one is admitted and two are queued."""
    params = SamplingParams(max_tokens=40, grammar=schema_to_grammar(SCHEMA), stop_at_eos=False)
    with Engine(model_path, EngineConfig(n_seq_max=1, n_ctx_per_seq=256, n_batch=64)) as eng:
        paused, resume = threading.Event(), threading.Event()

        def between_steps() -> None:  # in the decode thread, once something is admitted
            paused.set()
            resume.wait(60)

        eng.between_steps = between_steps

        async def run() -> tuple[list[str | None], list[Stream]]:
            prompt = chat(eng, "Hi")
            streams = [eng.submit(prompt, params, agent=f"c{i}") for i in range(3)]
            assert await asyncio.to_thread(paused.wait, 60)
            held = [s._req.sampler.native for s in streams]
            for s in streams:
                s.cancel()
            resume.set()
            for s in streams:
                r = await s.result()
                assert r.finish_reason == "cancelled" and r.completion_tokens == 0, r
            return held, streams

        held, streams = asyncio.run(run())
        # one admitted (its grammar in a chain), the other two still queued
        assert sorted(held, key=str) == ["chain", "grammar", "grammar"], held
        for native, s in zip(held, streams, strict=True):
            # a queued one ended in the queue, never admitted
            assert (s._req.admitted is None) == (native == "grammar")
            assert s._req.sampler.native is None  # freed on both paths
        assert eng.stats()["active"] == 0 and eng.stats()["queued"] == 0


def test_the_schemas_agentd_asks_with_compile() -> None:
    """The agent loop's lesson, a chat session's fold and a goal's plan (with
    many capabilities, and none) pass the service's limits (a fake service
    would not tell)."""
    from agentd.agentloop.memory import LESSON_SCHEMA
    from agentd.goals.plan import STEPS_CEILING
    from agentd.goals.plan import schema as plan_schema
    from agentd.inference.schema import compile_schema
    from agentd.sessions.service import FOLD_SCHEMA

    caps = [f"capability-{i}" for i in range(100)]
    plans = (plan_schema(caps, STEPS_CEILING), plan_schema([], 1))
    for schema in (json.loads(LESSON_SCHEMA), FOLD_SCHEMA, *plans):
        assert compile_schema(schema)

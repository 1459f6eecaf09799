"""Agents' JSON Schemas: bounded before they are compiled, compiled off the
service's event loop; and queue shares per owner over the socket.

The limits alone first (the converter must not even be called for a schema
over them), then the real service: a 38-byte schema that used to crash it
(``maxLength`` 20000: llama.cpp's grammar parser overflowed its stack) is
refused and the service goes on serving; and a big schema that is allowed
compiles while another request's tokens keep streaming.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inference_helpers import LONG, ME, SCHEMA, Open, Svc, call, done, gen, running, show, wait_idle

from agentd.inference import schema as schema_mod
from agentd.inference.config import ModelConfig
from agentd.inference.engine import Engine
from agentd.inference.errors import InvalidGrammar
from agentd.inference.sampling import grammar_sampler
from agentd.inference.schema import (
    GrammarCache,
    SchemaTooComplex,
    check_grammar,
    compile_schema,
)
from agentd.inference.server import Service

# 256 optional properties, 13 KiB: about as costly to convert as a schema
# within the limits gets (0.06 s measured, against 0.28 s for 512 of them)
BIG_ALLOWED: dict[str, Any] = {
    "type": "object",
    "properties": {f"a_rather_long_property_name_{i:03d}": {"type": "string"} for i in range(256)},
}


def nested(depth: int) -> dict[str, Any]:
    """A schema DEPTH arrays deep, built without recursion."""
    s: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        s = {"type": "array", "items": s}
    return s


OVER: list[tuple[Any, str]] = [
    ({"type": "string", "description": "x" * 20000}, "bytes (at most 16384)"),
    (nested(40), "nested deeper than 32"),
    (nested(100_000), "nested deeper than 32"),  # the walk is iterative
    (
        {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(300)}},
        "too many properties (at most 256)",
    ),
    ({"type": "string", "enum": [f"v{i}" for i in range(200)]}, "too many enum values"),
    ({"anyOf": [{"type": "integer", "minimum": i} for i in range(100)]}, "too many alternatives"),
    ({"type": "string", "maxLength": 20000}, "maxLength 20000 (at most 640)"),
    ({"type": "array", "items": {"type": "string"}, "minItems": 1000}, "minItems 1000"),
    ({"type": "string", "pattern": "^a{0,20000}$"}, "a repetition of 20000 in a pattern"),
    ({"type": "string", "pattern": "a" * 600}, "a pattern of 600 characters"),
    ({"$ref": "https://example.com/s.json"}, "only local $ref"),
    ({"type": "integer", "minimum": 1e300}, "magnitude"),
    ({"type": "object", "required": ["a"] * 5000}, "too many values (at most 4096)"),
]


@pytest.mark.parametrize(("schema", "needle"), OVER, ids=range(len(OVER)))
def test_schemas_over_the_limits_are_refused_before_converting(
    schema: Any, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(_schema: Any) -> str:
        raise AssertionError("the converter was called")

    monkeypatch.setattr(schema_mod, "schema_to_grammar", never)
    with pytest.raises(SchemaTooComplex) as e:
        compile_schema(schema)
    assert needle in str(e.value)
    assert isinstance(e.value, InvalidGrammar)  # the protocol's InvalidSchema
    with pytest.raises(SchemaTooComplex):
        GrammarCache().compile(schema)


def test_a_big_schema_within_the_limits_compiles_and_is_cached() -> None:
    gbnf = compile_schema(BIG_ALLOWED)
    assert "a_rather_long_property_name_255" in gbnf
    cache = GrammarCache(size=2)
    assert cache.compile(BIG_ALLOWED) == gbnf
    assert cache.compile(json.loads(json.dumps(BIG_ALLOWED))) is cache.compile(BIG_ALLOWED)
    assert compile_schema(SCHEMA)  # an ordinary one


def test_agentds_own_step_schemas_are_within_the_limits(engine: Engine) -> None:
    """The executor's step schemas (answer 600 characters...) must never be refused:
    an agent's free-form task would fail at its first step."""
    from agentd.executor import ACTION_ARGS, step_schema

    for actions in (["finish"], list(ACTION_ARGS)):
        gbnf = compile_schema(step_schema(actions))
        grammar_sampler(engine.vocab.handle, gbnf)  # llama.cpp parses it


def test_grammar_limits_guard_llama_cpps_parser(engine: Engine) -> None:
    deep = "root ::= " + "(" * 20000 + ' "a" ' + ")" * 20000
    with pytest.raises(SchemaTooComplex, match="nests 20000 groups"):
        check_grammar(deep)
    # without the check this parse overflowed llama.cpp's stack: SIGSEGV
    with pytest.raises(SchemaTooComplex):
        grammar_sampler(engine.vocab.handle, deep)
    quoted = 'root ::= "((((" [(((] x # ((((\nx ::= ("a" ("b"))'
    check_grammar(quoted)
    assert schema_mod._nesting(quoted) == 2
    with pytest.raises(SchemaTooComplex, match="bytes"):
        check_grammar('root ::= "' + "a" * (300 * 1024) + '"')


# ---------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Svc]:
    """One sequence; a queue of 8 of which an owner may hold 2."""
    with running(
        tmp_path_factory.mktemp("one"),
        model_path,
        sequences=1,
        max_queue=8,
        max_queue_per_owner=2,
        max_queue_per_agent=8,
    ) as s:
        yield s


def test_schema_attacks_are_refused_and_the_service_lives(one: Svc) -> None:
    pid = one.proc.pid
    for schema, needle in OVER[:2] + OVER[6:9]:  # (100,000 deep does not fit a line)
        events = call(one, gen("evil", "Hi", 8, owner="1001", json_schema=schema))
        assert [e["event"] for e in events] == ["error"], events
        assert events[0]["error"] == "InvalidSchema" and needle in events[0]["message"]
    assert one.proc.poll() is None and one.proc.pid == pid  # not crashed
    assert show(one)["state"] == "loaded"
    events = call(
        one, gen("good", "What is the capital of France? Answer in JSON.", 48, json_schema=SCHEMA)
    )
    assert isinstance(json.loads(done(events)["text"])["answer"], str)


def test_owner_share_over_the_socket(one: Svc) -> None:
    wait_idle(one)
    opened = []
    try:
        opened.append(Open(one, {**LONG, "agent": "x1", "owner": "1001"}))
        assert opened[0].until("token")[-1]["event"] == "token"  # has the sequence
        for agent in ("x2", "x3"):  # two more agents of owner 1001: its share
            opened.append(Open(one, {**LONG, "agent": agent, "owner": "1001"}))
            assert opened[-1].next()["event"] == "queued"
        refused = call(one, {**LONG, "agent": "x4", "owner": "1001"})
        assert refused[-1]["error"] == "Overloaded", refused
        message = refused[-1]["message"]
        assert "owner's share of the inference queue is full (2/2" in message
        assert "at most 2 of the 8 places" in message
        opened.append(Open(one, {**LONG, "agent": "y1", "owner": "1002"}))
        assert opened[-1].next()["event"] == "queued"  # another owner still gets in
        bad = call(one, {**LONG, "agent": "z", "owner": 1002})
        assert bad[-1]["error"] == "InvalidRequest" and "owner" in bad[-1]["message"]
    finally:
        for o in opened:
            o.close()
    assert wait_idle(one)["active"] == 0


# ---------------------------------------------------------------- off the event loop


async def _lines(sock: Path, request: dict[str, Any]) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        return [json.loads(line) async for line in reader]
    finally:
        writer.close()
        await writer.wait_closed()


def test_a_schema_compiling_does_not_hold_up_other_tokens(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the schema compiles, the service streams at least 3 more tokens of
    another request. Compiled on the event loop, the hook would hold the loop
    and see none (it waits up to 60 s, then the test fails)."""
    seen: dict[str, Any] = {}
    services: list[Service] = []
    real_compile, real_sampler = GrammarCache.compile, Engine.sampler

    def compile_watching(self: GrammarCache, schema: Any) -> str:
        svc = services[0]
        seen["compile thread"] = threading.current_thread()
        base, deadline = svc.tokens_generated, time.monotonic() + 60
        while svc.tokens_generated < base + 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        seen["tokens meanwhile"] = svc.tokens_generated - base
        return real_compile(self, schema)

    def sampler_watching(self: Engine, params: Any) -> Any:
        if params.grammar is not None:
            seen["sampler thread"] = threading.current_thread()
        return real_sampler(self, params)

    monkeypatch.setattr(GrammarCache, "compile", compile_watching)
    monkeypatch.setattr(Engine, "sampler", sampler_watching)
    sock = tmp_path / "run" / "socket"
    config = ModelConfig(path=str(model_path), context=512, sequences=2, batch=64, threads=2)

    async def main() -> list[dict[str, Any]]:
        svc = Service(str(tmp_path / "agentd.toml"), str(sock), {ME}, config)
        services.append(svc)
        task = asyncio.create_task(svc.run())
        try:
            deadline = time.monotonic() + 60
            while not sock.exists():
                assert not task.done() and time.monotonic() < deadline, "service did not start"
                await asyncio.sleep(0.02)
            reader, writer = await asyncio.open_unix_connection(str(sock))
            talker = {"op": "generate", "agent": "talker", "owner": "1001"}
            writer.write(
                json.dumps({**talker, "prompt": "1, 2, 3, 4,", "max_tokens": 200}).encode()
            )
            writer.write(b"\n")
            assert json.loads(await reader.readline())["event"] == "queued"
            assert json.loads(await reader.readline())["event"] == "token"  # it streams
            request = gen("schemer", "Describe yourself in JSON.", 16, json_schema=BIG_ALLOWED)
            events = await _lines(sock, {**request, "owner": "1002"})
            writer.close()
            await writer.wait_closed()
            return events
        finally:
            svc._stop.set()
            await task

    events = asyncio.run(main())
    assert events[0]["event"] == "queued" and events[-1]["event"] == "done", events
    assert seen["tokens meanwhile"] >= 3, seen
    assert seen["compile thread"] is not threading.main_thread()  # the loop's
    assert seen["sampler thread"] is not threading.main_thread()

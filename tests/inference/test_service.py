"""agentd-inference over its socket: the real service in a subprocess, the real model.

Each service instance is ``python3 -m agentd.inference`` on a temporary socket
and config; readiness is its sd_notify READY=1 on a socket of the test's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inference_helpers import (
    LONG,
    ME,
    QUESTIONS,
    ROOT,
    SCHEMA,
    Open,
    Svc,
    acall,
    call,
    done,
    gen,
    running,
    show,
    streamed,
    wait_idle,
)

from agentd.inference import config
from agentd.inference.config import ConfigError, ModelConfig, parse_model_table
from agentd.inference.protocol import parse_generate
from agentd.inference.server import bind_socket
from agentd.inference.unit import sd_notify


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Svc]:
    tmp = tmp_path_factory.mktemp("svc")
    with running(tmp, model_path, sequences=4, max_queue=16, max_queue_per_agent=8) as s:
        yield s


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Svc]:
    """One sequence, a queue of two, one per agent."""
    tmp = tmp_path_factory.mktemp("tiny")
    with running(tmp, model_path, sequences=1, max_queue=2, max_queue_per_agent=1) as s:
        yield s


# ---------------------------------------------------------------- generate


def test_concurrent_agents_match_one_at_a_time(svc: Svc) -> None:
    requests = [gen(f"agent{i % 3}", q) for i, q in enumerate(QUESTIONS)]
    alone = [call(svc, r) for r in requests]

    async def together() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(acall(svc, r) for r in requests))

    batched = asyncio.run(together())
    for a, b in zip(alone, batched, strict=True):
        assert done(b)["text"] == done(a)["text"]
        assert b[0]["event"] == "queued" and b[0]["prompt_tokens"] == done(b)["prompt_tokens"]
        # the token lines are the text, as it came
        assert streamed(b) == done(b)["text"] == streamed(a)
        assert done(b)["completion_tokens"] >= 1
        assert 0 <= done(b)["queued_s"] <= done(b)["first_token_s"] <= done(b)["total_s"]
    # 6 requests on 4 sequences: some of them waited
    assert max(b[0]["queued"] for b in batched) >= 1


def test_stop_strings_and_raw_prompts(svc: Svc) -> None:
    full = done(call(svc, {"op": "generate", "prompt": "1, 2, 3, 4,", "max_tokens": 12}))
    assert full["finish_reason"] == "length" and full["completion_tokens"] == 12
    stop = full["text"][3:5]
    cut = call(svc, {"op": "generate", "prompt": "1, 2, 3, 4,", "max_tokens": 12, "stop": [stop]})
    assert done(cut)["finish_reason"] == "stop"
    assert done(cut)["text"] == full["text"][: full["text"].find(stop)] == streamed(cut)


def test_json_schema_output_parses(svc: Svc) -> None:
    events = call(
        svc, gen("j", "What is the capital of France? Answer in JSON.", 48, json_schema=SCHEMA)
    )
    assert done(events)["finish_reason"] == "eos"
    assert isinstance(json.loads(done(events)["text"])["answer"], str)
    assert streamed(events) == done(events)["text"]


def test_show_reports_model_config_and_stats(svc: Svc, model_path: Path) -> None:
    call(svc, gen("s", "Hi", 3))
    reply = show(svc)
    assert reply["state"] == "loaded"
    m = reply["model"]
    assert m["path"] == str(model_path) and m["size"] == model_path.stat().st_size
    assert m["architecture"] == "llama" and m["quantization"] == "Q4_1"
    assert m["n_params"] > 100_000_000 and m["context_train"] == 8192 and m["description"]
    assert reply["config"] == {
        "context": 256,
        "sequences": 4,
        "batch": 64,
        "threads": 2,
        "max_queue": 16,
        "max_queue_per_owner": 16,
        "max_queue_per_agent": 8,
    }
    st = reply["stats"]
    assert st["requests_total"] >= 1 and st["tokens_generated"] >= 3
    assert st["prompt_tokens"] > 0 and st["tokens_per_second"] > 0
    assert st["queued"] == 0 and st["active"] == 0
    assert abs(st["loaded_at"] - time.time()) < 600 and st["uptime_s"] > 0


BAD = [
    b"not json\n",
    b"[1, 2]\n",
    b'{"op": "fly"}\n',
    b'{"op": "show", "x": 1}\n',
    b'{"op": "generate", "agent": "a"}\n',
    b'{"op": "generate", "prompt": "a", "messages": [{"role": "user", "content": "b"}]}\n',
    b'{"op": "generate", "prompt": "a", "max_tokens": "many"}\n',
    b'{"op": "generate", "prompt": "a", "max_tokens": 0}\n',
    b'{"op": "generate", "prompt": "a", "temperature": -1}\n',
    b'{"op": "generate", "prompt": "a", "top_p": 0}\n',
    b'{"op": "generate", "prompt": "a", "stop": "x"}\n',
    b'{"op": "generate", "prompt": "a", "json_schema": "x"}\n',
    b'{"op": "generate", "prompt": "a", "colour": "red"}\n',
    b'{"op": "generate", "messages": [{"role": "user"}]}\n',
    b'{"op": "generate", "agent": 7, "prompt": "a"}\n',
    b'{"op": "reload", "path": "relative.gguf"}\n',
]


@pytest.mark.parametrize("raw", BAD, ids=range(len(BAD)))
def test_bad_requests_get_invalid_request(svc: Svc, raw: bytes) -> None:
    events = call(svc, raw=raw)
    assert [e["event"] for e in events] == ["error"], events
    assert events[0]["error"] == "InvalidRequest" and events[0]["message"]


def test_other_refusals(svc: Svc) -> None:
    too_long = call(svc, gen("a", "Hi", 1000))
    assert too_long[-1]["error"] == "RequestTooLong"
    schema = call(svc, gen("a", "Hi", 8, json_schema={"type": "nonsense"}))
    assert schema[-1]["error"] == "InvalidSchema"
    missing = call(svc, {"op": "reload", "path": "/nonexistent/model.gguf"})
    assert missing[-1]["error"] == "LoadError" and "no such file" in missing[-1]["message"]
    assert show(svc)["state"] == "loaded"  # the old model stays
    assert done(call(svc, gen("a", "Hi", 2)))["completion_tokens"] == 2


def test_reload_while_a_request_is_in_flight(svc: Svc, model_path: Path) -> None:
    loaded_at = show(svc)["stats"]["loaded_at"]
    running = Open(svc, {**LONG, "agent": "busy", "max_tokens": 60})
    try:
        assert running.until("token")[-1]["event"] == "token"

        reload = Open(svc, {"op": "reload"})
        first = [reload.next()]
        assert first[0]["event"] == "progress"  # loading: a second reload is refused
        second = call(svc, {"op": "reload", "path": str(model_path)})
        assert second[-1]["error"] == "Busy"
        first += reload.until("done")
        reload.close()
        progress = [e["fraction"] for e in first if e["event"] == "progress"]
        assert progress and progress == sorted(progress) and 0 <= progress[0] <= 1
        assert done(first)["model"]["path"] == str(model_path) and done(first)["load_s"] > 0
        rest = running.until("done")
        assert done(rest)["finish_reason"] in ("length", "eos")  # finished on the old model
    finally:
        running.close()
    after = show(svc)
    assert after["state"] == "loaded" and after["stats"]["loaded_at"] > loaded_at
    assert done(call(svc, gen("a", QUESTIONS[0])))["text"]


# ---------------------------------------------------------------- queue and cancel


def test_full_queue_gets_overloaded(tiny: Svc) -> None:
    opened = []
    try:
        opened.append(Open(tiny, {**LONG, "agent": "x"}))
        assert opened[0].until("token")[-1]["event"] == "token"  # has the sequence
        opened.append(Open(tiny, {**LONG, "agent": "x"}))
        assert opened[1].next()["event"] == "queued"
        same_agent = call(tiny, {**LONG, "agent": "x"})
        assert same_agent[-1]["error"] == "Overloaded"  # its share (1) is taken
        opened.append(Open(tiny, {**LONG, "agent": "y"}))
        assert opened[2].next()["event"] == "queued"  # another agent still has room
        full = call(tiny, {**LONG, "agent": "z"})
        assert full[-1]["error"] == "Overloaded" and "2/2" in full[-1]["message"]
    finally:
        for o in opened:
            o.close()
    assert wait_idle(tiny)["active"] == 0


def test_hanging_up_cancels_the_request(tiny: Svc) -> None:
    wait_idle(tiny)
    before = show(tiny)["stats"]["tokens_generated"]
    running = Open(tiny, {**LONG, "agent": "quitter"})
    lines = running.until("token")
    lines.append(running.next())
    running.close()
    stats = wait_idle(tiny, 3.0)
    assert stats["active"] == 0 and stats["queued"] == 0
    assert stats["tokens_generated"] - before < 180  # it did not run to max_tokens
    # the sequence is free again
    assert done(call(tiny, {**LONG, "agent": "next", "max_tokens": 2}))["completion_tokens"] == 2


# ---------------------------------------------------------------- access, life cycle


def test_a_disallowed_uid_is_refused(tmp_path: Path) -> None:
    other = 12345 if ME != 12345 else 12346
    s = Svc(tmp_path, tmp_path / "absent.gguf", [other])
    try:
        events = call(s, {"op": "show"})
        assert events == [
            {
                "event": "error",
                "error": "PermissionDenied",
                "message": f"uid {ME} may not use this service",
            }
        ]
    finally:
        assert s.stop() == 0


def test_unloaded_start_then_reload_then_sigterm(tmp_path: Path, model_path: Path) -> None:
    target = tmp_path / "models" / "model.gguf"
    s = Svc(tmp_path, target, [ME], context=256, sequences=2, batch=32, threads=2)
    try:
        assert any("no model loaded" in m for m in s.messages)  # STATUS=
        assert oct(s.socket.stat().st_mode & 0o777) == "0o600"
        reply = show(s)
        assert reply["state"] == "unloaded" and reply["model"] is None
        assert call(s, gen("a", "Hi"))[-1]["error"] == "Unavailable"
        target.parent.mkdir()
        target.symlink_to(model_path)  # what `agentctl model install` would do
        assert done(call(s, {"op": "reload"}))["model"]["path"] == str(target)
        assert show(s)["state"] == "loaded"
        running = Open(s, {**LONG, "agent": "late"})
        assert running.until("token")[-1]["event"] == "token"
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        rest = []
        while line := running.lines.readline():
            rest.append(json.loads(line))
        running.close()
        assert rest[-1]["event"] == "error" and rest[-1]["error"] == "Unavailable", rest
        assert s.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
        assert not s.socket.exists()
    finally:
        assert s.stop() == 0, s.stderr()


def test_bad_config_exits_78(tmp_path: Path) -> None:
    for text, needle in [
        ("[model]\ncontext = 'big'\n", "context"),
        ("[model]\nsequences = 0\n", "sequences"),
        ("[model]\nsequences = 8\nbatch = 4\n", "batch"),
        ("[model]\npath = 'relative'\n", "path"),
        ("[model\n", "agentd.toml"),
    ]:
        cfg = tmp_path / "agentd.toml"
        cfg.write_text(text)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "agentd.inference",
                "--config",
                str(cfg),
                "--socket",
                str(tmp_path / "s"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(
                os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
            ),
        )
        assert proc.returncode == 78, (text, proc.stderr)
        assert needle in proc.stderr, proc.stderr


# ---------------------------------------------------------------- in-process units


def test_model_table_validation() -> None:
    cfg = parse_model_table(
        {
            "path": "/m.gguf",
            "context": 512,
            "sequences": 2,
            "batch": 8,
            "threads": 1,
            "max_queue": 4,
            "max_queue_per_agent": 9,
        }
    )
    assert cfg.engine_config().max_queue_per_agent == 4  # never more than the queue
    assert ModelConfig().path == config.DEFAULT_MODEL
    for bad in (
        {"context": True},
        {"threads": 0},
        {"max_queue": 2.5},
        {"path": 3},
        {"future_key": 1},
    ):
        with pytest.raises(ConfigError):
            parse_model_table(bad)


def test_generate_defaults() -> None:
    g = parse_generate({"op": "generate", "prompt": "x"})
    assert g.agent == "" and g.params.max_tokens == 128 and g.params.temperature == 0
    assert g.params.stop == () and g.json_schema is None
    g = parse_generate(
        {
            "op": "generate",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 1,
            "top_k": 5,
            "seed": None,
            "stop": ["\n\n"],
        }
    )
    assert g.prompt is None and g.params.temperature == 1.0 and g.params.stop == ("\n\n",)


def test_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "n"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
        assert sd_notify("READY=1\nSTATUS=hi") is True
        assert s.recv(100) == b"READY=1\nSTATUS=hi"


def test_bind_socket_replaces_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "new" / "socket"
    stale = socket.socket(socket.AF_UNIX)
    path.parent.mkdir()
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    live = bind_socket(path)
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        with pytest.raises(OSError, match="another process"):
            bind_socket(path)
    finally:
        live.close()
    fresh = tmp_path / "made" / "sub" / "socket"
    bind_socket(fresh).close()
    assert oct(fresh.parent.stat().st_mode & 0o777) == "0o700"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="not a socket"):
        bind_socket(tmp_path / "file")


def test_config_short_form_and_unknown_keys(tmp_path: Path) -> None:
    conf = tmp_path / "agentd.toml"
    conf.write_text('model = "/srv/x.gguf"\nuid_min = 70000\n')
    assert config.load_config(conf).path == "/srv/x.gguf"
    conf.write_text('[model]\npath = "/srv/x.gguf"\ncontxt = 512\n')
    with pytest.raises(ConfigError, match="contxt: unknown key"):
        config.load_config(conf)

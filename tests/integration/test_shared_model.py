"""The shared model end to end in the systemd machine: agentd-inference.service
(unprivileged, no network) with the real default GGUF, chat streaming through
agentd over D-Bus, concurrent agents batched and matching one-at-a-time greedy
output, quotas refusing with the reset time, the service killed mid-generation
and recovered, free-form tasks done through the model, and agents kept away
from the service.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

from agentd.names import account_name

pytestmark = pytest.mark.integration
UNIT = "agentd-inference.service"
SOCKET = "/run/agentd-inference/socket"
AGENTS = ("md-a", "md-b", "md-c", "md-d")
PROMPTS = ("Name a colour.", "What is 2+2?", "Say hello.", "Name a fruit.")


@pytest.fixture(scope="module")
def model(agentd: Agentd) -> Agentd:
    for name in AGENTS:
        if not agentd.sh(["getent", "passwd", account_name(name)], check=False).stdout:
            agentd.create(name, template="sandbox", user="alice")
    wait_for(lambda: agentd.ctl_json("model", "show")["state"] == "loaded", 60, "model loaded")
    return agentd


def chat(
    a: Agentd, name: str, text: str, *args: str, user: str = "alice", check: bool = True
) -> Any:
    return a.ctl("chat", name, "-m", text, "--max-tokens", "24", *args, user=user, check=check)


def chat_json(a: Agentd, name: str, text: str, *args: str, user: str = "alice") -> dict:
    return json.loads(chat(a, name, text, "--json", *args, user=user).stdout)


def service_pid(a: Agentd) -> int:
    return a.main_pid(UNIT)


def test_service_is_unprivileged_without_network(model: Agentd) -> None:
    props = model.show(
        UNIT, "ActiveState", "DynamicUser", "PrivateNetwork", "MemoryMax", "NRestarts"
    )
    assert props["ActiveState"] == "active" and props["DynamicUser"] == "yes"
    assert props["PrivateNetwork"] == "yes" and props["MemoryMax"] != "infinity"
    status = model.proc_status(service_pid(model))
    uids = status["Uid"].split()
    assert all(u == uids[0] for u in uids) and int(uids[0]) not in (0,)
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1"
    ours = model.sh(["readlink", "/proc/1/ns/net"]).stdout
    theirs = model.sh(["readlink", f"/proc/{service_pid(model)}/ns/net"]).stdout
    assert ours != theirs
    assert model.sh(["stat", "-c", "%a", "/run/agentd-inference"]).stdout.strip() == "700"


def test_model_show_describes_the_default_gguf(model: Agentd) -> None:
    info = model.ctl_json("model", "show", user="alice")
    assert info["state"] == "loaded" and info["quantization"] == "Q4_1"
    assert info["path"] == "/var/lib/agentd-models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert info["size"] == 98_362_432 and info["context"] > 0
    sha = model.sh(["sha256sum", info["path"]]).stdout.split()[0]
    assert sha == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


STREAM = """
import asyncio, json, sys, time
sys.path.insert(0, "/usr/lib/agentd/python")
from agentctl.client import AgentdClient
async def main():
    c = AgentdClient.connect()
    t0, out = time.monotonic(), []
    async for e in c.chat(sys.argv[1], [{"role": "user", "content": "Tell me a story."}],
                          {"max_tokens": 48}):
        out.append((round(time.monotonic() - t0, 4), e))
    print(json.dumps(out))
asyncio.run(main())
"""


def test_chat_streams_tokens_as_they_come(model: Agentd) -> None:
    r = model.sh(["python3", "-c", STREAM, "md-a"], user="alice")
    events = json.loads(r.stdout)
    kinds = [e["event"] for _t, e in events]
    assert kinds[0] == "queued" and kinds[-1] == "done" and kinds.count("token") > 5
    tokens = [(t, e["text"]) for t, e in events if e["event"] == "token"]
    assert tokens[0][0] < events[-1][0]  # the first token came before the end
    done = events[-1][1]
    assert "".join(text for _t, text in tokens) == done["text"]
    assert done["completion_tokens"] >= len(tokens)


def test_concurrent_agents_match_one_at_a_time(model: Agentd) -> None:
    alone = [chat_json(model, n, p)["text"] for n, p in zip(AGENTS, PROMPTS, strict=True)]
    script = (
        " & ".join(
            f"agentctl chat {n} -m '{p}' --max-tokens 24 --json > /tmp/md-{n}.json"
            for n, p in zip(AGENTS, PROMPTS, strict=True)
        )
        + " & wait"
    )
    model.sh(["sh", "-c", script], user="alice")
    together = [json.loads(model.sh(["cat", f"/tmp/md-{n}.json"]).stdout)["text"] for n in AGENTS]
    assert together == alone and all(alone)


def test_structured_output_follows_the_schema(model: Agentd) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 20}},
        "required": ["colour"],
    }
    model.m.write_file("/tmp/colour.json", json.dumps(schema), mode=0o644)
    out = chat_json(model, "md-a", "Name a colour.", "--schema", "/tmp/colour.json")
    assert isinstance(json.loads(out["text"])["colour"], str)


def test_quota_runs_out_with_the_reset_time(model: Agentd) -> None:
    # A request is admitted only if what it may cost (its prompt, counted generously,
    # plus max_tokens) fits: 150 admits one "Hello" and not a second.
    model.ctl("quota", "set", "md-b", "150", "--period", "daily", user="carol")
    model.ctl("quota", "reset", "md-b", user="carol")  # earlier tests' tokens do not count
    try:
        chat_json(model, "md-b", "Hello")  # admitted: the quota was not used up yet
        r = chat(model, "md-b", "Hello again", check=False)
        assert r.returncode == 1 and "(QuotaExceeded)" in r.stderr, r.stderr
        assert "of its 150 daily tokens" in r.stderr and "resets at" in r.stderr
        assert "may need up to" in r.stderr
        tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
        assert f"{tomorrow} 00:00 UTC" in r.stderr
        refused = model.audit("model.refused", "md-b")
        assert refused and refused[-1]["result"] == "denied"
        usage = model.ctl_json("usage", user="alice")
        (q,) = [q for q in usage["quotas"] if q["subject"] == "md-b"]
        assert q["limit"] == 150 and 0 < q["used"] <= 150 and q["source"] == "admin"
        used = q["used"]  # a quota of exactly what was used: nothing left, a warning
        model.ctl("quota", "set", "md-b", str(used), "--period", "daily", user="carol")
        r = model.ctl("usage", user="alice")
        assert f"warning: md-b has 0 of its {used} daily tokens left" in r.stderr
        # the agent's own thinking is refused too: its free-form task waits, blocked
        tid = int(model.ctl("task", "submit", "Think hard", "--agent", "md-b", user="alice").stdout)
        wait_for(
            lambda: model.ctl_json("task", "show", str(tid))["status"] == "blocked",
            60,
            "task blocked by the quota",
        )
        assert "resets at" in model.ctl_json("task", "show", str(tid))["block_reason"]
        model.ctl("task", "cancel", str(tid), user="alice")
        r = model.ctl("quota", "set", "md-b", "1000000", user="alice", check=False)
        assert r.returncode == 77
        assert model.audit("quota.set", "md-b")[-1]["result"] == "denied"
    finally:
        model.ctl("quota", "set", "md-b", "0", user="carol")
    assert chat_json(model, "md-b", "Hello")["completion_tokens"] > 0


def test_owners_may_not_chat_with_others_agents(model: Agentd) -> None:
    r = chat(model, "md-a", "hi", user="bob", check=False)
    assert r.returncode in (1, 77) and (
        "PermissionDenied" in r.stderr or "NoSuchAgent" in r.stderr
    ), r.stderr


def test_killed_service_mid_generation_fails_cleanly_and_recovers(model: Agentd) -> None:
    before = int(model.show(UNIT, "NRestarts")["NRestarts"])
    proc = model.m.popen(
        ["agentctl", "chat", "md-c", "-m", "Write a long story.", "--max-tokens", "400"],
        user="alice",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.read(8)  # tokens are flowing
    assert first
    model.sh(["systemctl", "kill", "-s", "KILL", UNIT])
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 69, err  # EX_UNAVAILABLE, one clean line
    assert "(ModelUnavailable)" in err and "Traceback" not in err
    wait_for(
        lambda: int(model.show(UNIT, "NRestarts")["NRestarts"]) > before,
        30,
        "systemd restarted the service",
    )
    # agentd waits for the restarted service: the next request just works
    assert chat_json(model, "md-c", "Say hello.")["completion_tokens"] > 0
    rows = model.sh(
        [
            "sqlite3",
            "/var/lib/agentd/agentd.db",
            "SELECT status FROM usage WHERE agent = 'md-c' ORDER BY id",
        ]
    ).stdout
    assert rows.split()[-2:] == ["error", "ok"]  # the lost request was metered too


def test_agents_cannot_reach_the_inference_service(model: Agentd) -> None:
    model.ctl("agent", "start", "md-d", user="alice")
    model.wait_online("md-d")
    probe = (
        "import socket; s = socket.socket(socket.AF_UNIX); "
        f"s.connect('{SOCKET}'); s.sendall(b'{{\"op\": \"show\"}}\\n'); "
        "print(s.recv(4096))"
    )
    r = model.m.run_in_unit(
        "agent-md-d.service", ["python3", "-c", probe], user=account_name("md-d"), check=False
    )
    assert r.returncode != 0 and "loaded" not in r.stdout
    assert "PermissionError" in r.stderr or "FileNotFoundError" in r.stderr, r.stderr
    # nor the Model interface over the bus (the bus policy refuses agents)
    r = model.m.run_in_unit(
        "agent-md-d.service",
        [
            "busctl",
            "--system",
            "call",
            "org.agentos.agentd1",
            "/org/agentos/agentd1",
            "org.agentos.agentd1.Model",
            "Describe",
        ],
        user=account_name("md-d"),
        check=False,
    )
    assert r.returncode != 0 and "Access denied" in r.stderr  # the bus policy, not agentd


def test_only_root_may_use_the_socket_directly(model: Agentd) -> None:
    """A local user cannot connect (the runtime directory is 0700); root, which
    is what agentd runs as, can. (The service's own SO_PEERCRED check, behind
    the mode, is tested in tests/inference/test_service.py.)"""
    probe = (
        "import socket, json; s = socket.socket(socket.AF_UNIX); "
        f"s.connect('{SOCKET}'); s.sendall(b'{{\"op\": \"show\"}}\\n'); "
        "print(s.makefile().readline())"
    )
    r = model.sh(["python3", "-c", probe], user="alice", check=False)
    assert r.returncode != 0 and "PermissionError" in r.stderr
    r = model.sh(["python3", "-c", probe])  # root: agentd's identity
    assert json.loads(r.stdout)["state"] == "loaded"


def test_free_form_task_is_done_through_the_model(model: Agentd) -> None:
    out = model.ctl(
        "task", "submit", "Say hello to the team", "--agent", "md-d", user="alice"
    ).stdout.strip()
    tid = int(out)
    r = model.ctl(
        "task", "wait", str(tid), "--timeout", "180", user="alice", check=False, timeout=240
    )
    info = model.ctl_json("task", "show", str(tid), user="alice")
    result = json.loads(info["result"]) if isinstance(info["result"], str) else info["result"]
    if r.returncode == 0:
        assert isinstance(result["answer"], str) and result["answer"]  # minLength 1
    else:  # SmolLM2-135M's steps may run to max_tokens (seen in CI, 2026-12-01, and
        # at the last landed tree alone): the task then fails saying so, the model used
        assert info["status"] == "failed" and "valid step" in info["error"], info
    assert result["completion_tokens"] > 0
    rows = model.sh(
        [
            "sqlite3",
            "/var/lib/agentd/agentd.db",
            f"SELECT kind, agent FROM usage WHERE task_id = {tid}",
        ]
    ).stdout.split()
    # think: the steps and the lesson; embed: the memory recalled before the first step
    assert rows and all(r in ("think|md-d", "embed|md-d") for r in rows)
    assert "think|md-d" in rows


def test_reload_shows_progress_and_is_for_admins(model: Agentd) -> None:
    r = model.ctl("model", "reload", user="alice", check=False)
    assert r.returncode == 77
    done = model.ctl_json("model", "reload", user="carol")
    assert done["event"] == "done" and done["load_s"] > 0
    assert model.ctl_json("model", "show")["state"] == "loaded"
    assert model.audit("model.reload")[-1]["result"] == "ok"


MSG = json.dumps([{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["Chat", "md-a", "not json", "{}"], "InvalidArgument"),
        (
            ["Chat", "md-a", json.dumps([{"role": "robot", "content": "x"}]), "{}"],
            "InvalidArgument",
        ),
        (["Chat", "md-a", MSG, "{'max_tokens': <'lots'>}"], "InvalidArgument"),
        (["Chat", "md-a", MSG, "{'colour': <'red'>}"], "InvalidArgument"),
        (["Chat", "no-such-agent", MSG, "{}"], "NoSuchAgent"),
        (["SetQuota", "agent", "md-a", "5", "monthly"], "PermissionDenied"),
        (["ListUsage", "0"], "InvalidArgument"),
    ],
)
def test_bad_model_calls_get_typed_errors(model: Agentd, args: list[str], error: str) -> None:
    method, *rest = args
    r = model.sh(
        [
            "gdbus",
            "call",
            "--system",
            "--dest",
            "org.agentos.agentd1",
            "--object-path",
            "/org/agentos/agentd1",
            "--method",
            f"org.agentos.agentd1.Model.{method}",
            *rest,
        ],
        user="alice",
        check=False,
    )
    assert r.returncode != 0 and f"org.agentos.agentd1.Error.{error}:" in r.stderr, r.stderr


def test_bad_quota_and_schema_leave_nothing_changed(model: Agentd) -> None:
    r = model.ctl("quota", "set", "md-a", "5", "--period", "hourly", check=False)
    assert r.returncode == 2  # click refuses the period before any call
    r = model.sh(
        [
            "gdbus",
            "call",
            "--system",
            "--dest",
            "org.agentos.agentd1",
            "--object-path",
            "/org/agentos/agentd1",
            "--method",
            "org.agentos.agentd1.Model.SetQuota",
            "agent",
            "md-a",
            "5",
            "hourly",
        ],
        check=False,
    )
    assert "org.agentos.agentd1.Error.InvalidArgument:" in r.stderr, r.stderr
    (q,) = [q for q in model.ctl_json("quota", "list") if q["subject"] == "md-a"]
    assert q["source"] == "template"  # nothing was written
    model.m.write_file("/tmp/bad-schema.json", '{"type": "no-such-type"}', mode=0o644)
    r = chat(model, "md-a", "hi", "--schema", "/tmp/bad-schema.json", check=False)
    assert r.returncode == 1 and "(InvalidArgument)" in r.stderr, r.stderr
    assert chat_json(model, "md-a", "Say hello.")["completion_tokens"] > 0  # still serving

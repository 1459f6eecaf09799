"""The agents' OpenAI-compatible endpoint in the machine (issue 16): the official
openai client, unmodified, run by an --exec task inside an agent's unit,
chats, streams and gets schema-constrained JSON from the shared model, told
where and with what key only by its environment; curl gets server-sent
events; the key is in no unit property and no other user's reach; another
agent and a local user on the host cannot reach the endpoint; an offline
agent reaches nothing but its own loopback; over quota is HTTP 429; the
tokens are the agent's, metered as its thinking. Real users, units, bus and
model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
ROOT = __file__.rsplit("/tests/", 1)[0]
CLIENTS = f"{ROOT}/build/test-clients"
CLIENT = f"{ROOT}/tests/integration/clients/openai_chat.py"
BASE = "http://127.0.0.1:8080/v1"


@pytest.fixture(scope="module")
def pair(agentd: Agentd) -> Agentd:
    agentd.create("oa-a", template="sandbox", user="alice", start=True)
    agentd.create("oa-b", template="sandbox", user="bob", start=True)
    agentd.wait_online("oa-a")
    agentd.wait_online("oa-b")
    return agentd


def run(a: Agentd, agent: str, command: str, user: str) -> dict[str, Any]:
    """An --exec task on AGENT, waited for: its status and the command's output."""
    tid = a.submit(f"run on {agent}", "--agent", agent, "--exec", command, user=user)
    a.ctl("task", "wait", str(tid), "--timeout", "400", user=user, check=False, timeout=450)
    t = a.ctl_json("task", "show", str(tid), user=user)
    assert t["status"] in ("completed", "failed"), t
    return {**t, "out": json.loads(t["result"] or "{}")}


def curl(body: dict[str, Any]) -> str:
    """curl in the unit, told where and with what key by the runtime's environment."""
    data = shlex.quote(json.dumps(body))
    return (
        'curl -sS -N -w "\\nHTTP %{http_code}\\n" -H "Authorization: Bearer $OPENAI_API_KEY" '
        f'-H "Content-Type: application/json" "$OPENAI_BASE_URL/chat/completions" -d {data}'
    )


def test_the_official_openai_client_in_the_unit_chats_streams_makes_json_and_embeds(
    pair: Agentd,
) -> None:
    a = pair
    before = sum(r["completion_tokens"] for r in usage_of(a, "oa-a"))
    got = run(a, "oa-a", f"PYTHONPATH={CLIENTS} python3 {CLIENT}", "alice")
    assert got["status"] == "completed", got["out"]
    seen = json.loads(got["out"]["stdout"])
    assert seen["base_url"] == BASE
    chat = seen["chat"]
    assert chat["finish_reason"] in ("stop", "length") and chat["usage"]["prompt_tokens"] > 0
    assert chat["usage"]["completion_tokens"] >= 1
    assert chat["usage"]["total_tokens"] == sum(
        chat["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )
    stream = seen["stream"]
    assert stream["chunks"] >= 3 and stream["usage"]["completion_tokens"] >= 1
    # greedy and the same prompt: the stream says what the whole answer said
    assert stream["text"] == chat["content"]
    shaped = seen["json"]
    assert shaped["finish_reason"] == "stop", shaped
    city = json.loads(shaped["content"])
    assert set(city) == {"city", "population"} and isinstance(city["population"], int)
    too_long = seen["too_long"]
    assert too_long["status"] == 400 and too_long["code"] == "context_length_exceeded"
    assert "maximum context length" in too_long["message"]
    vectors = seen["embeddings"]  # the memory's embedding model (all-MiniLM-L6-v2)
    assert vectors["dimensions"] == [384, 384] and vectors["tokens"] > 0
    assert all(abs(n - 1) < 1e-3 for n in vectors["norms"]) and vectors["cosine"] > 0.5
    # the tokens are the agent's, metered as its thinking
    after = sum(r["completion_tokens"] for r in usage_of(a, "oa-a"))
    assert (
        after - before >= chat["usage"]["completion_tokens"] + stream["usage"]["completion_tokens"]
    )


def usage_of(a: Agentd, agent: str) -> list[dict[str, Any]]:
    rows = a.ctl_json("usage", "--days", "1", user="alice")["days"]
    return [r for r in rows if r["agent"] == agent]


def test_curl_gets_server_sent_events(pair: Agentd) -> None:
    body = {
        "model": "m",
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    got = run(pair, "oa-a", curl(body), "alice")
    out = got["out"]["stdout"]
    assert got["status"] == "completed" and "HTTP 200" in out, got["out"]
    events = [line.removeprefix("data: ") for line in out.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_nobody_else_reaches_the_endpoint_nor_its_key(pair: Agentd) -> None:
    a = pair
    key = run(a, "oa-a", 'printf %s "$OPENAI_API_KEY"', "alice")["out"]["stdout"]
    assert key.startswith("sk-agent-") and len(key) > 40
    # not in the unit's properties, which every local user may read
    shown = a.sh(["systemctl", "show", "agent-oa-a.service"]).stdout
    assert key not in shown and "OPENAI" not in shown
    # not in the runtime's environment for another user
    pid = a.main_pid("agent-oa-a.service")
    peek = a.sh(["cat", f"/proc/{pid}/environ"], user="bob", check=False)
    assert peek.returncode != 0 and key not in peek.stdout
    # bob's agent, with alice's agent's key: its 127.0.0.1:8080 is its own endpoint
    models = "$OPENAI_BASE_URL/models"
    other = run(
        a,
        "oa-b",
        f'curl -sS -o /dev/null -w "%{{http_code}}" -H "Authorization: Bearer {key}" {models}',
        "bob",
    )
    assert other["out"]["stdout"] == "401", other["out"]
    # its own key works there (the endpoint is there, and the key is per agent)
    own = run(
        a,
        "oa-b",
        'curl -sS -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $OPENAI_API_KEY" '
        + models,
        "bob",
    )
    assert own["out"]["stdout"] == "200", own["out"]
    # a local user on the host: nothing listens there
    host = a.sh(
        ["curl", "-sS", "-m", "5", "-H", f"Authorization: Bearer {key}", f"{BASE}/models"],
        user="bob",
        check=False,
    )
    assert host.returncode != 0 and "sk-" not in host.stdout, host.stdout


def test_an_offline_agent_reaches_only_its_own_loopback(pair: Agentd) -> None:
    probe = (
        "python3 - <<'EOF'\n"
        "import socket\n"
        "for host in ('10.0.2.2', '1.1.1.1', '::ffff:192.0.2.1'):\n"
        "    try:\n"
        "        socket.create_connection((host, 80), timeout=3)\n"
        "        print(host, 'reached')\n"
        "    except OSError as e:\n"
        "        print(host, e.strerror)\n"
        "EOF"
    )
    got = run(pair, "oa-a", probe, "alice")
    lines = got["out"]["stdout"].splitlines()
    assert got["status"] == "completed" and len(lines) == 3, got["out"]
    # no route but loopback's: not a timeout, not a firewall's refusal
    assert all(line.endswith("Network is unreachable") for line in lines), lines


def test_over_quota_is_429_insufficient_quota(pair: Agentd) -> None:
    a = pair
    a.create("oa-q", template="sandbox", user="alice", start=True)  # its own quota
    a.ctl("quota", "set", "oa-q", "5", "--period", "daily", user="carol")
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    got = run(a, "oa-q", curl(body), "alice")
    out = got["out"]["stdout"]
    assert "HTTP 429" in out, out
    error = json.loads(out.split("\nHTTP")[0])["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "5 daily tokens" in error["message"]


BOT_TEMPLATE = f"""\
description = "an agent whose program is the owner's script, built on the openai client"
capabilities = ["general"]
tools = ["files", "shell"]
profile = "offline"
program = ["/usr/bin/env", "PYTHONPATH={CLIENTS}", "python3", "bot.py"]

[approval]
tools = []
"""


def test_a_template_program_runs_as_the_agent_on_its_endpoint(agentd: Agentd) -> None:
    a = agentd
    a.sh(["mkdir", "-p", "/etc/agentd/templates"])
    a.m.write_file("/etc/agentd/templates/oa-bot.toml", BOT_TEMPLATE, mode=0o644)
    a.create("oa-bot", template="oa-bot", user="alice")
    uid = a.uid_of("agent-oa-bot")
    home = "/home/agents/oa-bot"
    bot = (Path(__file__).parent / "clients" / "bot.py").read_text()
    a.m.write_file(f"{home}/bot.py", bot, mode=0o600, owner=f"{uid}:{uid}")
    a.ctl("agent", "start", "oa-bot", user="alice")
    wait_for(lambda: a.sh(["test", "-e", f"{home}/bot.json"], check=False).returncode == 0, 120,
             "the program's bot.json")  # fmt: skip
    seen = json.loads(a.sh(["cat", f"{home}/bot.json"]).stdout)
    assert seen["uid"] == uid and "agent-oa-bot.service" in seen["cgroup"]
    assert seen["completion_tokens"] >= 1
    # the runtime went on: registered, and it still runs tasks
    a.wait_online("oa-bot")
    done = run(a, "oa-bot", "echo still here", "alice")
    assert done["status"] == "completed" and done["out"]["stdout"] == "still here\n"
    journal = a.sh(["journalctl", "-u", "agent-oa-bot.service", "--no-pager", "-o", "cat"]).stdout
    assert "program started" in journal and "program exited with status 0" in journal


def test_agentctl_serve_gives_the_owner_the_api_on_the_host_with_a_key(pair: Agentd) -> None:
    a = pair
    unit = "oa-serve"
    a.sh(["systemd-run", "--unit", unit, "-p", "User=alice", "--",
          "agentctl", "serve", "oa-a", "--listen", "127.0.0.1:18080"])  # fmt: skip
    try:
        key = wait_for(lambda: _served_key(a, unit), 30, "agentctl serve's key")
        url = "http://127.0.0.1:18080/v1/chat/completions"
        body = json.dumps(
            {"model": "m", "max_tokens": 6, "messages": [{"role": "user", "content": "Hi"}]}
        )

        def post(user: str, bearer: str) -> tuple[int, dict[str, Any]]:
            auth = f"Authorization: Bearer {bearer}"
            got = a.sh(["curl", "-sS", "-w", "\n%{http_code}", "-H", auth, url, "-d", body],
                       user=user)  # fmt: skip
            text, _, code = got.stdout.rpartition("\n")
            return int(code), json.loads(text)

        code, answer = post("alice", key)
        assert code == 200 and answer["object"] == "chat.completion", answer
        assert answer["usage"]["completion_tokens"] >= 1
        # bob, on the same host, reaches the port but not the agent without the key
        code, refused = post("bob", "sk-guess")
        assert code == 401 and refused["error"]["code"] == "invalid_api_key"
    finally:
        a.sh(["systemctl", "stop", unit], check=False)
    # serve refuses what it must not do, before listening
    wide = a.sh(
        ["agentctl", "serve", "oa-a", "--listen", "0.0.0.0:18081"], user="alice", check=False
    )
    assert wide.returncode == 2 and "loopback" in wide.stderr
    # bob may not serve alice's agent: agentd refuses his chat (403)
    a.sh(["systemd-run", "--unit", unit + "-bob", "-p", "User=bob", "--",
          "agentctl", "serve", "oa-a", "--listen", "127.0.0.1:18082"])  # fmt: skip
    try:
        bob_key = wait_for(lambda: _served_key(a, unit + "-bob"), 30, "bob's serve key")
        auth = f"Authorization: Bearer {bob_key}"
        bob_url = "http://127.0.0.1:18082/v1/chat/completions"
        got = a.sh(["curl", "-sS", "-w", "\n%{http_code}", "-H", auth, bob_url, "-d", body],
                   user="bob")  # fmt: skip
        assert got.stdout.endswith("\n403"), got.stdout
    finally:
        a.sh(["systemctl", "stop", unit + "-bob"], check=False)


def _served_key(a: Agentd, unit: str) -> str | None:
    out = a.sh(["journalctl", "-u", unit, "--no-pager", "-o", "cat"]).stdout
    keys = [
        line.split("=", 1)[1] for line in out.splitlines() if line.startswith("OPENAI_API_KEY=")
    ]
    return keys[-1] if keys else None

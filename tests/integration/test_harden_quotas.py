"""Issue 10, finding 6, attacked in the systemd machine with the real model:

- many `agentctl chat` at once against a small quota: before, each was checked
  against the usage alone and all ran; now each holds its worst case (prompt
  bound plus max_tokens) at admission, so the agent's usage stays within its
  quota. The documented slack is zero when agentd's prompt bound covers the
  real prompt (one token per byte plus the chat frame: always, for SmolLM2's
  tokenizer), else a stopped request's prompt beyond its bound; so the test
  asserts used <= quota.
- a chat killed mid-stream (agentctl SIGKILLed while tokens flow) is charged
  its prompt and the completion tokens it streamed, not only its prompt;
- removing and re-creating an agent keeps its usage and admin quota for the
  same owner (no reset by re-creation), while another owner's agent of the
  name starts afresh;

and bob's `busctl get-property ... Version` is answered within 1 s throughout.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from agentd_helpers import Agentd, answering, wait_for

pytestmark = pytest.mark.integration

AGENT = "hq-a"
REUSED = "hq-r"
CHATS = 10
# "Say hello." as sandbox's persona at --max-tokens 24: agentd holds 48 +
# (8 + 28) + (8 + 10) + 24 = 126 tokens per chat (agentd.thinking.prompt_estimate);
# the model charges about 30 prompt tokens and at most 24 completion tokens.
# 300 holds two chats at a time; ten admitted at once would be charged ~500.
QUOTA = 300


@pytest.fixture(scope="module")
def model(agentd: Agentd) -> Agentd:
    if AGENT not in {a["name"] for a in agentd.ctl_json("agent", "list", user="alice")}:
        agentd.create(AGENT, template="sandbox", user="alice")
    wait_for(lambda: agentd.ctl_json("model", "show")["state"] == "loaded", 120, "model loaded")
    return agentd


def agent_quota(a: Agentd, name: str, user: str = "alice") -> dict[str, Any]:
    usage = a.ctl_json("usage", user=user)
    (q,) = [q for q in usage["quotas"] if q["kind"] == "agent" and q["subject"] == name]
    return dict(q)


def completion_today(a: Agentd, name: str) -> int:
    days = a.ctl_json("usage", "--days", "1", user="alice")["days"]
    return sum(int(d["completion_tokens"]) for d in days if d["agent"] == name)


def usage_rows(a: Agentd, name: str) -> list[tuple[int, int, str]]:
    out = a.sh(
        [
            "sqlite3",
            "-separator",
            " ",
            "/var/lib/agentd/agentd.db",
            f"SELECT prompt_tokens, completion_tokens, status FROM usage WHERE agent = '{name}' "
            "ORDER BY id",
        ]
    ).stdout
    return [(int(p), int(c), s) for p, c, s in (line.split() for line in out.splitlines())]


def test_concurrent_chats_stay_within_the_quota(model: Agentd) -> None:
    model.ctl("quota", "set", AGENT, str(QUOTA), "--period", "daily", user="carol")
    model.ctl("quota", "reset", AGENT, user="carol")  # earlier tokens do not count
    assert agent_quota(model, AGENT)["used"] == 0
    script = (
        " ".join(
            f"agentctl chat {AGENT} -m 'Say hello.' --max-tokens 24 --json "
            f">/tmp/hq-{i}.out 2>/tmp/hq-{i}.err &"
            for i in range(CHATS)
        )
        + " wait"
    )
    try:
        with answering(model):
            model.sh(["sh", "-c", script], user="alice", timeout=300)
        answers, refusals = [], []
        for i in range(CHATS):
            out = model.sh(["cat", f"/tmp/hq-{i}.out"]).stdout
            err = model.sh(["cat", f"/tmp/hq-{i}.err"]).stdout
            if out.strip():
                answers.append(json.loads(out))
            else:
                assert "(QuotaExceeded)" in err and "resets at" in err, err
                refusals.append(err)
        q = agent_quota(model, AGENT)
        charged = [d["prompt_tokens"] + d["completion_tokens"] for d in answers]
        print(f"{len(answers)} chats admitted {charged}, {len(refusals)} refused, used {q['used']}")
        assert answers and refusals
        assert all(d["completion_tokens"] > 0 for d in answers)
        assert sum(charged) <= q["used"] <= QUOTA  # the attack: ~500 tokens before
        assert any("may need up to" in e for e in refusals)
        refused = model.audit("model.refused", AGENT)
        assert len(refused) >= len(refusals) and refused[-1]["result"] == "denied"
    finally:
        model.ctl("quota", "set", AGENT, "0", user="carol")


def test_a_chat_killed_mid_stream_is_charged_what_it_streamed(model: Agentd) -> None:
    model.ctl("quota", "set", AGENT, "0", user="carol")
    before_rows = len(usage_rows(model, AGENT))
    before = completion_today(model, AGENT)
    with answering(model):
        proc = model.m.popen(
            ["agentctl", "chat", AGENT, "-m", "Write a long story.", "--max-tokens", "400"],
            user="alice",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.read(16)  # tokens are flowing
        proc.kill()  # the caller goes away mid-stream: its end of the stream closes
        proc.communicate(timeout=30)
        wait_for(lambda: len(usage_rows(model, AGENT)) > before_rows, 60, "the killed chat settled")
    (prompt, completion, status) = usage_rows(model, AGENT)[before_rows]
    print(f"killed chat: prompt {prompt}, completion {completion}, {status}")
    assert status == "cancelled" and prompt > 0
    assert 1 <= completion < 400  # before: 0, only the prompt was charged
    assert completion_today(model, AGENT) - before == completion  # agentctl usage shows it


def test_recreating_an_agent_keeps_its_usage_and_quota_for_its_owner_only(
    model: Agentd,
) -> None:
    for user in ("alice", "bob"):  # a name left over from an earlier run
        model.ctl("agent", "rm", REUSED, user=user, check=False)
    model.create(REUSED, template="sandbox", user="alice")
    answer = json.loads(
        model.ctl(
            "chat", REUSED, "-m", "Say hello.", "--max-tokens", "8", "--json", user="alice"
        ).stdout
    )
    spent = answer["prompt_tokens"] + answer["completion_tokens"]
    model.ctl("quota", "set", REUSED, "5", "--period", "daily", user="carol")
    before = agent_quota(model, REUSED)
    assert before["limit"] == 5 and before["used"] >= spent and before["source"] == "admin"
    # the attack: remove and re-create to start afresh
    model.ctl("agent", "rm", REUSED, user="alice")
    model.create(REUSED, template="sandbox", user="alice")
    after = agent_quota(model, REUSED)
    assert (after["used"], after["limit"], after["source"]) == (before["used"], 5, "admin")
    r = model.ctl("chat", REUSED, "-m", "Say hello.", user="alice", check=False)
    assert r.returncode == 1 and "(QuotaExceeded)" in r.stderr, r.stderr
    # another owner's agent of the name is another agent: its own count and quota
    model.ctl("agent", "rm", REUSED, user="alice")
    model.create(REUSED, template="sandbox", user="bob")
    theirs = agent_quota(model, REUSED, user="bob")
    assert (theirs["used"], theirs["source"]) == (0, "template")
    assert json.loads(
        model.ctl(
            "chat", REUSED, "-m", "Say hello.", "--max-tokens", "8", "--json", user="bob"
        ).stdout
    )["completion_tokens"]
    model.ctl("agent", "rm", REUSED, user="bob")

"""Models end to end in the machine: an admin (carol) installs a GGUF with
`agentctl model install --file`, lists it, makes it the active model (the
service reloads it), goes back to the default and removes it; alice (no admin)
is refused every change with PermissionDenied, each refusal audited, and
agentd keeps answering bob meanwhile. Every change is an audit row with the
file's sha256.
"""

from __future__ import annotations

import json

import pytest
from agentd_helpers import Agentd, answering, wait_for

pytestmark = pytest.mark.integration

DEFAULT = "smollm2-135m"
DEFAULT_FILE = "/var/lib/agentd-models/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
COPY = "/var/lib/agentd-test-copy.gguf"  # readable by agentd (not /tmp: PrivateTmp)


def models(a: Agentd, user: str = "bob") -> dict[str, dict]:
    return {r["name"]: r for r in a.ctl_json("model", "list", user=user)}


@pytest.fixture(scope="module")
def copy(agentd: Agentd) -> str:
    wait_for(lambda: agentd.ctl_json("model", "show")["state"] == "loaded", 120, "model loaded")
    agentd.sh(["cp", DEFAULT_FILE, COPY])
    agentd.sh(["chmod", "0644", COPY])
    return COPY


def test_the_catalog_lists_the_default_as_installed_and_active(agentd: Agentd) -> None:
    rows = models(agentd, user="alice")
    assert set(rows) >= {DEFAULT, "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"}
    assert rows[DEFAULT]["installed"] and rows[DEFAULT]["active"]
    assert not rows["qwen2.5-coder-1.5b"]["installed"]
    assert rows["qwen2.5-coder-1.5b"]["sha256"] == (
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    )


def test_alice_is_refused_every_change_and_each_refusal_is_audited(
    agentd: Agentd, copy: str
) -> None:
    since = agentd.ctl("audit", "--limit", "1", "--json").stdout
    first = json.loads(since)[-1]["seq"] if json.loads(since) else 0
    attempts = [
        ("model", "install", "--file", copy, "--name", "evil"),
        ("model", "install", "qwen2.5-coder-0.5b"),
        ("model", "use", DEFAULT),
        ("model", "rm", DEFAULT),
    ]
    with answering(agentd, user="bob"):
        for args in attempts:
            r = agentd.ctl(*args, user="alice", check=False)
            assert r.returncode == 77 and "PermissionDenied" in r.stderr, (args, r.stderr)
    uid = agentd.uid_of("alice")
    denied = [
        r for r in agentd.audit()
        if r["seq"] > first and r["actor_uid"] == uid and r["result"] == "denied"
    ]  # fmt: skip
    actions = sorted(r["action"] for r in denied)
    assert actions == ["model.install", "model.install", "model.remove", "model.use"], denied
    assert "evil" not in models(agentd)
    assert agentd.sh(["ls", "/var/lib/agentd-models"]).stdout.split().count("evil.gguf") == 0


def test_carol_installs_uses_and_removes_a_gguf_and_it_is_audited(
    agentd: Agentd, copy: str
) -> None:
    carol = agentd.uid_of("carol")
    with answering(agentd, user="bob"):
        out = agentd.ctl_json("model", "install", "--file", copy, "--name", "mine", user="carol")
    assert out["result"] == "done", out
    row = models(agentd)["mine"]
    assert row["installed"] and not row["active"] and row["sha256"] == SHA
    installed = agentd.audit("model.installed")[-1]
    assert installed["actor_uid"] == carol and installed["result"] == "ok"
    assert installed["detail"]["sha256"] == SHA and installed["detail"]["source"] == copy

    # not a GGUF: refused at once, nothing written
    agentd.sh(["sh", "-c", "echo '#!/bin/sh' > /var/lib/agentd-test-junk.gguf"])
    r = agentd.ctl("model", "install", "--file", "/var/lib/agentd-test-junk.gguf",
                   user="carol", check=False)  # fmt: skip
    assert r.returncode != 0 and "GGUF" in r.stderr, r.stderr
    assert "agentd-test-junk" not in agentd.sh(["ls", "-a", "/var/lib/agentd-models"]).stdout

    with answering(agentd, user="bob"):
        out = agentd.ctl_json("model", "use", "mine", user="carol")
    assert out["result"] == "done", out
    info = agentd.ctl_json("model", "show", user="bob")
    assert info["path"] == "/var/lib/agentd-models/mine.gguf" and info["state"] == "loaded"
    assert models(agentd)["mine"]["active"]
    activated = agentd.audit("model.activated")[-1]
    assert activated["actor_uid"] == carol and activated["detail"]["model"] == "mine"

    r = agentd.ctl("model", "rm", "mine", user="carol", check=False)
    assert r.returncode != 0 and "active" in r.stderr, r.stderr  # never the active one

    assert agentd.ctl_json("model", "use", DEFAULT, user="carol")["result"] == "done"
    agentd.ctl("model", "rm", "mine", user="carol")
    assert "mine" not in models(agentd)
    assert "mine.gguf" not in agentd.sh(["ls", "/var/lib/agentd-models"]).stdout
    removed = agentd.audit("model.removed")[-1]
    assert removed["actor_uid"] == carol and removed["detail"]["sha256"] == SHA
    info = agentd.ctl_json("model", "show", user="bob")
    assert info["path"] == DEFAULT_FILE

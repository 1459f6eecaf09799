"""Watching the fleet in the machine (issue 16): `agentctl top --once --json`
shows alice's running agent with what its unit uses and bob not at all;
`agentctl agent ps` lists the processes in the unit, as the agent's UID (as
/proc says); the live view under tmux shows the agent, filters, and quits on
q; the metrics endpoint (agentd-metrics.socket on 127.0.0.1) answers
Prometheus text from a process that is not root, and `agentctl metrics`
prints the same, filtered per caller. Real users, units, bus and sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
URL = "http://127.0.0.1:9479/metrics"


@pytest.fixture(scope="module")
def fleet(agentd: Agentd) -> Agentd:
    agentd.create("ob-alice", user="alice", start=True)
    agentd.create("ob-bob", user="bob", start=True)
    agentd.wait_online("ob-alice")
    return agentd


def top_once(a: Agentd, user: str) -> dict[str, Any]:
    out = a.ctl("top", "--once", "--json", "--delay", "0.5", user=user).stdout
    return json.loads(out)


def test_top_once_shows_the_callers_running_agents_with_their_use(fleet: Agentd) -> None:
    a = fleet
    snap = top_once(a, "alice")
    mine = {r["name"]: r for r in snap["agents"]}
    assert "ob-alice" in mine and "ob-bob" not in mine, list(mine)
    row = mine["ob-alice"]
    assert row["state"] == "active" and row["owner"] == "alice"
    assert row["memory_current"] > 0 and row["tasks_current"] >= 1, row
    assert row["main_pid"] == a.main_pid("agent-ob-alice.service")
    assert isinstance(row["cpu_percent"], float) and row["cpu_percent"] >= 0
    assert snap["interval"] > 0 and "state" in snap["model"]
    assert "ob-alice" not in {r["name"] for r in top_once(a, "bob")["agents"]}
    assert {"ob-alice", "ob-bob"} <= {r["name"] for r in top_once(a, "root")["agents"]}


def test_agent_ps_lists_the_units_processes_as_the_agent(fleet: Agentd) -> None:
    a = fleet
    uid = a.uid_of("agent-ob-alice")
    procs = a.ctl_json("agent", "ps", "ob-alice", user="alice")
    main = a.main_pid("agent-ob-alice.service")
    assert main in [p["pid"] for p in procs], procs
    for p in procs:
        assert p["uid"] == uid, p
        assert a.proc_status(p["pid"])["Uid"].split()[0] == str(uid)
    assert any("agentd-runtime" in p["command"] for p in procs), procs
    refused = a.ctl("agent", "ps", "ob-alice", user="bob", check=False)
    assert refused.returncode == 77, refused.stderr


def tmux(a: Agentd, *args: str, check: bool = True) -> Any:
    return a.sh(["tmux", *args], user="alice", check=check)


def test_top_live_under_tmux_shows_filters_and_quits(fleet: Agentd) -> None:
    a = fleet
    tmux(a, "new-session", "-d", "-s", "top", "-x", "160", "-y", "40", "agentctl top")
    try:

        def screen() -> str:
            return str(tmux(a, "capture-pane", "-p", "-t", "top").stdout)

        shown = wait_for(lambda: "ob-alice" in screen() and screen(), 20, "top shows the agent")
        assert "NAME" in shown and "CPU%" in shown and "q quit" in shown, shown
        assert "ob-bob" not in shown
        tmux(a, "send-keys", "-t", "top", "/", "zzz", "Enter")
        wait_for(lambda: "filter: zzz" in screen() and "ob-alice" not in screen(), 10, "filtered")
        tmux(a, "send-keys", "-t", "top", "Escape")
        wait_for(lambda: "ob-alice" in screen(), 10, "filter cleared")
        tmux(a, "send-keys", "-t", "top", "q")
        wait_for(
            lambda: tmux(a, "has-session", "-t", "top", check=False).returncode != 0, 10, "top quit"
        )
    finally:
        tmux(a, "kill-server", check=False)


@pytest.fixture(scope="module")
def endpoint(fleet: Agentd) -> Agentd:
    fleet.sh(["systemctl", "start", "agentd-metrics.socket"])
    yield fleet
    fleet.sh(["systemctl", "stop", "agentd-metrics.socket"])


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of family NAME: {'{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key[len(name) :]] = float(value)
    return out


def test_the_metrics_endpoint_serves_the_fleet_from_an_unprivileged_process(
    endpoint: Agentd,
) -> None:
    a = endpoint
    text = a.sh(["curl", "-sf", URL], user="alice").stdout
    assert "# TYPE agentd_agents gauge" in text
    assert samples(text, "agentd_agents")['{state="running"}'] >= 2
    assert 'agent="ob-bob"' in text and 'agent="ob-alice"' in text  # the fleet
    assert 'agentd_task_claim_latency_seconds_bucket{le="+Inf"}' in text
    assert "agentd_audit_rows" in text and "# TYPE agentd_tokens_total counter" in text
    # root's agentctl sees the same families and the same agents
    mine = a.ctl("metrics", user="root").stdout
    assert samples(mine, "agentd_agents") == samples(text, "agentd_agents")
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names == {line.split()[2] for line in mine.splitlines() if line.startswith("# TYPE")}
    # a person's own: bob sees his agent, not alice's, nor the daemon's counters
    bobs = a.ctl("metrics", user="bob").stdout
    assert 'agent="ob-bob"' in bobs and 'agent="ob-alice"' not in bobs
    assert "agentd_audit_rows" not in bobs
    assert a.sh(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", URL + "x"]).stdout == "404"

    # a connection that says nothing keeps its instance waiting: whose is it?
    a.sh(
        "setsid python3 -c 'import socket, time; s = socket.create_connection("
        '("127.0.0.1", 9479)); time.sleep(4)\' >/dev/null 2>&1 &'
    )

    def serving_uids() -> set[str]:
        out = a.sh(["systemctl", "list-units", "--plain", "--no-legend", "agentd-metrics@*"])
        uids = set()
        for line in out.stdout.splitlines():
            pid = a.main_pid(line.split()[0]) if "running" in line else 0
            status = a.sh(["cat", f"/proc/{pid}/status"], check=False).stdout if pid else ""
            uids.update(x.split()[1] for x in status.splitlines() if x.startswith("Uid:"))
        return uids

    uids = wait_for(serving_uids, 10, "a metrics instance")
    assert uids == {str(a.uid_of("agentd-metrics"))} and "0" not in uids

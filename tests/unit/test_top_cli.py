"""`agentctl top`, `agent ps` and `metrics` against a stand-in client; top's view
(CPU shares from two snapshots, sorting, filtering, keys); the metrics unit's
request handling (agentctl.metricsd)."""

from __future__ import annotations

import json
import socket
from typing import Any

from agentctl_fakes import invoke
from rich.console import Console

from agentctl import metricsd, topview
from agentctl.commands.metrics import samples
from agentctl.topview import View, cpu_percent, render, rows, select


def agent(name: str, cpu: int | None, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "owner": "alice",
        "owner_uid": 1000,
        "state": "active",
        "main_pid": 7,
        "cpu_usage_nsec": cpu,
        "memory_current": 10 << 20,
        "tasks_current": 2,
        "task_id": None,
        "tokens_last_minute": 0,
        "approvals_pending": 0,
        **more,
    }


class Client:
    """Two snapshots a second apart: a1 used half a CPU, b2 a quarter."""

    def __init__(self) -> None:
        self.snaps = [
            {
                "at": 100.0,
                "agents": [agent("a1", 1_000_000_000), agent("b2", 0, owner="bob")],
                "model": {"state": "loaded", "queued": 1, "active": 2, "sequences": 16},
            },
            {
                "at": 101.0,
                "agents": [
                    agent("a1", 1_500_000_000),
                    agent("b2", 250_000_000, owner="bob", task_id=4, task_title="apples", step=2),
                ],
                "model": {
                    "state": "loaded",
                    "queued": 0,
                    "active": 1,
                    "sequences": 16,
                    "tokens_per_second": 12.5,
                },
            },
        ]
        self.processes = [
            {
                "pid": 42,
                "ppid": 1,
                "uid": 70001,
                "state": "S",
                "threads": 3,
                "rss_bytes": 20 << 20,
                "cpu_seconds": 1.5,
                "started_at": 1e9,
                "command": "/usr/bin/python3 -I agentd-runtime",
            }
        ]

    async def fleet(self) -> dict[str, Any]:
        return self.snaps.pop(0) if len(self.snaps) > 1 else self.snaps[0]

    async def list_processes(self, name: str) -> list[dict[str, Any]]:
        return self.processes if name == "a1" else []

    async def metrics(self) -> str:
        return (
            "# HELP agentd_agents x\n# TYPE agentd_agents gauge\n"
            'agentd_agents{state="run\\"ning"} 2\n'
        )


# -- the view ---------------------------------------------------------------------------------
def test_cpu_share_is_the_counter_delta_over_wall_time() -> None:
    before, now = agent("a", 1_000_000_000), agent("a", 3_000_000_000)
    assert cpu_percent(before, now, 2.0) == 100.0
    assert cpu_percent(None, now, 2.0) is None  # the first sample
    assert cpu_percent(now, before, 2.0) is None  # the counter went down: restarted
    assert cpu_percent(before, dict(now, main_pid=8), 2.0) is None  # a new main process
    assert cpu_percent(before, dict(now, cpu_usage_nsec=None), 2.0) is None  # stopped


def test_select_sorts_and_filters() -> None:
    found = rows(*Client().snaps)
    assert [r["name"] for r in select(found, "cpu")] == ["a1", "b2"]
    assert [r["name"] for r in select(found, "cpu", reverse=True)] == ["b2", "a1"]
    assert [r["name"] for r in select(found, "name", reverse=True)] == ["b2", "a1"]
    assert [r["name"] for r in select(found, "cpu", pattern="APPLE")] == ["b2"]  # task title
    assert [r["name"] for r in select(found, "cpu", pattern="bob")] == ["b2"]  # owner


def test_keys_sort_reverse_filter_and_quit() -> None:
    view = View()
    view.key("m")
    assert (view.sort, view.reverse) == ("memory", False)
    view.key("m")
    assert view.reverse  # the same key again
    for ch in "/ab\x7fpl\r":
        view.key(ch)
    assert (view.pattern, view.typing) == ("apl", None)
    view.key("/")
    view.key("x")
    view.key("\x1b")  # Esc while typing: cancelled, the filter stays
    assert (view.pattern, view.typing) == ("apl", None)
    view.key("\x1b")  # Esc: the filter cleared
    assert view.pattern == "" and not view.done
    view.key("q")
    assert view.done


def test_the_screen_shows_agents_model_and_keys() -> None:
    console = Console(width=140, record=True, color_system=None)
    console.print(render(rows(*Client().snaps), Client().snaps[1]["model"], View()))
    text = console.export_text()
    assert "a1" in text and "50.0" in text and "#4 apples" in text
    assert "queue 0" in text and "batch 1/16" in text and "12.5 tok/s" in text
    assert topview.HELP in text


# -- the commands -----------------------------------------------------------------------------
def test_top_once_json_has_cpu_shares_and_model() -> None:
    r = invoke(Client(), "top", "--once", "--json", "--delay", "0.2")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"at", "interval", "agents", "model"}
    assert out["interval"] == 1.0 and out["model"]["tokens_per_second"] == 12.5
    assert [(a["name"], a["cpu_percent"]) for a in out["agents"]] == [("a1", 50.0), ("b2", 25.0)]


def test_top_once_filters_by_owner_and_prints_plain_lines() -> None:
    r = invoke(Client(), "top", "--once", "--owner", "bob", "--delay", "0.2")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["b2\tbob\tactive\t25.0\t10 MiB\t2\t#4 apples\t2\t0\t0"]


def test_top_needs_a_terminal_or_once() -> None:
    assert invoke(Client(), "top").exit_code == 2
    assert invoke(Client(), "top", "--json").exit_code == 2  # --json needs --once


def test_agent_ps_lists_the_units_processes() -> None:
    r = invoke(Client(), "agent", "ps", "a1", "--json")
    assert json.loads(r.stdout) == Client().processes
    r = invoke(Client(), "agent", "ps", "a1")
    fields = r.stdout.split("\t")
    assert fields[0] == "42" and fields[-1] == "/usr/bin/python3 -I agentd-runtime\n"


def test_metrics_prints_the_text_or_its_samples() -> None:
    assert invoke(Client(), "metrics").stdout.endswith('agentd_agents{state="run\\"ning"} 2\n')
    out = json.loads(invoke(Client(), "metrics", "--json").stdout)
    assert out == [{"name": "agentd_agents", "labels": {"state": 'run"ning'}, "value": 2.0}]
    assert samples('a_b{x="1\\\\2\\n"} 3.5') == [
        {"name": "a_b", "labels": {"x": "1\\2\n"}, "value": 3.5}
    ]


# -- the metrics unit -------------------------------------------------------------------------
def test_metricsd_routes_requests() -> None:
    assert metricsd.route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == (200, "OK")
    assert metricsd.route(b"HEAD / HTTP/1.0\r\n\r\n")[0] == 200
    assert metricsd.route(b"POST /metrics HTTP/1.1\r\n\r\n")[0] == 405
    assert metricsd.route(b"GET /etc/passwd HTTP/1.1\r\n\r\n")[0] == 404
    assert metricsd.route(b"\x16\x03\x01 garbage")[0] == 400


def test_metricsd_answers_one_request_and_says_so_when_agentd_is_away(monkeypatch: Any) -> None:
    async def away() -> str:
        from agentctl.client import ClientError

        raise ClientError("agentd is not running", kind="unavailable")

    monkeypatch.setattr(metricsd, "_metrics", away)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert metricsd.serve(ours) == 1
        ours.shutdown(socket.SHUT_WR)
        answer = theirs.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 503 ") and answer.endswith("agentd is not running\n")

    async def text() -> str:
        return "agentd_x 1\n"

    monkeypatch.setattr(metricsd, "_metrics", text)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert metricsd.serve(ours) == 0
        answer = theirs.recv(4096).decode()
    assert "Content-Type: text/plain; version=0.0.4" in answer
    assert answer.endswith("\r\n\r\nagentd_x 1\n") and "Content-Length: 11" in answer

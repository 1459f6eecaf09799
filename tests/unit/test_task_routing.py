"""Routing when an agent's template goes bad: a missing or broken template means
the agent runs nothing ("lacks a valid template", wip 0); any other error is a
bug and propagates instead of being disguised as one."""

from __future__ import annotations

from pathlib import Path

import pytest
from world import ALICE, World

from agentd.errors import NoCapableAgent
from agentd.tasks.queue import TaskQueue

SANDBOX = (Path(__file__).resolve().parents[2] / "policies/templates/sandbox.toml").read_text()


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def _override(w: World, text: str) -> None:
    """An admin's sandbox.toml in /etc/agentd/templates (here: tmp/etc)."""
    d = w.db.parent / "etc" / "templates"
    d.mkdir(parents=True, exist_ok=True)
    (d / "sandbox.toml").write_text(text)


@pytest.mark.parametrize(
    "bad",
    [
        "this is [[not TOML",  # InvalidConfig: unparsable
        SANDBOX.replace('profile = "offline"', 'profile = "nowhere"'),  # InvalidConfig: profile
        SANDBOX.replace("concurrency = 2", "concurrency = 0"),  # InvalidConfig: out of range
    ],
)
def test_an_agent_with_a_broken_template_runs_nothing(w: World, bad: str) -> None:
    q = TaskQueue(w.store, w.reg)
    a1 = w.run(w.reg.create(ALICE, "a1", "sandbox"))
    waiting = q.submit(ALICE, {"title": "queued before the template broke"}).id
    _override(w, bad)
    assert q.router.missing(a1, [], False) == ["a valid template"]
    assert q.router.wip(a1) == 0
    with pytest.raises(NoCapableAgent, match="lacks a valid template"):
        q.submit(ALICE, {"title": "t", "agent": "a1"})
    with pytest.raises(NoCapableAgent, match="none of your agents"):
        q.submit(ALICE, {"title": "t"})
    assert q.assign() == set() and q.claim(a1) is None
    assert q.find(waiting).status == "pending"


def test_a_bug_behind_the_template_look_up_is_not_a_missing_template(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = TaskQueue(w.store, w.reg)
    a1 = w.run(w.reg.create(ALICE, "a1", "sandbox"))
    q.submit(ALICE, {"title": "t"})

    def broken(name: str) -> object:
        raise KeyError(name)

    monkeypatch.setattr(w.reg.catalog, "template", broken)
    for call in (
        lambda: q.assign(),
        lambda: q.claim(a1),
        lambda: q.submit(ALICE, {"title": "t", "agent": "a1"}),
    ):
        with pytest.raises(KeyError):
            call()

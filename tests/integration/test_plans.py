"""Quota plans in the machine (issue 16): an administrator (carol, in
agentd-admin) assigns a plan to a Unix group with `agentctl plan assign`; a
member of that group (alice) may then create agents up to the plan's
max_agents, of its templates only, each refusal audited with nothing made,
while bob, outside the group, is not bound by it; `agentctl usage` shows
alice's plan and warns with fewer than 50 tokens left, and a chat over the
plan's tokens is refused; a plan given to alice herself counts at once; each
change is in the audit log. Real users, groups, units and bus.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agentd_helpers import Agentd

pytestmark = pytest.mark.integration
GROUP = "plan-starters"
PLANS = """
[plans.starter]
tokens = 40
period = "daily"
max_agents = 2
templates = ["sandbox"]

[plans.roomy]
max_agents = 16
"""


@pytest.fixture(scope="module")
def plans(agentd: Agentd) -> Iterator[Agentd]:
    agentd.sh(["groupadd", "-f", GROUP])
    agentd.sh(["usermod", "-aG", GROUP, "alice"])
    with agentd.configured(PLANS) as a:
        for name in [x["name"] for x in a.ctl_json("agent", "list", user="alice")]:
            a.ctl("agent", "rm", "--force", name)  # left by an earlier module: count from 0
        yield a
        a.ctl("plan", "unassign", "--group", GROUP, user="carol", check=False)
        a.ctl("plan", "unassign", "--user", "alice", user="carol", check=False)
    agentd.sh(["gpasswd", "-d", "alice", GROUP], check=False)
    agentd.sh(["groupdel", GROUP], check=False)


def nothing_of(a: Agentd, name: str) -> None:
    assert a.sh(["getent", "passwd", f"agent-{name}"], check=False).returncode == 2
    assert a.sh(["stat", f"/home/agents/{name}"], check=False).returncode != 0
    assert name not in {x["name"] for x in a.ctl_json("agent", "list")}


def create(a: Agentd, name: str, template: str = "sandbox", user: str = "alice") -> Any:
    return a.ctl("agent", "create", name, "--template", template, user=user, check=False)


def test_a_groups_plan_bounds_its_members_agents_and_templates(plans: Agentd) -> None:
    a = plans
    a.ctl("plan", "assign", "starter", "--group", GROUP, user="carol")
    mine = a.ctl_json("plan", "show", user="alice")["plan"]
    assert (mine["name"], mine["source"], mine["group"]) == ("starter", "group", GROUP), mine
    for name in ("pl-1", "pl-2"):
        assert create(a, name).returncode == 0
    r = create(a, "pl-3")
    assert r.returncode == 1 and "(LimitExceeded)" in r.stderr, r.stderr
    assert "max_agents_per_owner=2, of plan 'starter'" in r.stderr, r.stderr
    nothing_of(a, "pl-3")
    a.ctl("agent", "rm", "pl-2", user="alice")  # room for one, but not of this template
    r = create(a, "pl-r", "research")
    assert r.returncode == 77 and "(PermissionDenied)" in r.stderr, r.stderr
    assert "template 'research' is not in plan 'starter'" in r.stderr, r.stderr
    nothing_of(a, "pl-r")
    row = a.audit("agent.create", "pl-r")[-1]
    assert (row["result"], row["detail"]["plan"]) == ("denied", "starter"), row
    assert create(a, "pl-b", "research", user="bob").returncode == 0  # bob: not in the group
    row = a.audit("plan.assign")[-1]
    assert row["actor_uid"] == a.uid_of("carol"), row
    assert (row["detail"]["kind"], row["detail"]["subject"], row["detail"]["plan"]) == (
        "group",
        GROUP,
        "starter",
    )


def test_usage_warns_and_a_change_of_plan_counts_at_once(plans: Agentd) -> None:
    a = plans
    a.ctl("plan", "assign", "starter", "--group", GROUP, user="carol")
    if "pl-1" not in {x["name"] for x in a.ctl_json("agent", "list", user="alice")}:
        assert create(a, "pl-1").returncode == 0
    r = a.ctl("usage", user="alice")
    assert r.stdout.splitlines()[-1] == "plan\tstarter", r.stdout
    assert "of plan starter's 40 daily tokens left" in r.stderr, r.stderr
    r = a.ctl("chat", "pl-1", "-m", "hi", "--max-tokens", "64", user="alice", check=False)
    assert r.returncode == 1 and "(QuotaExceeded)" in r.stderr, r.stderr
    assert "40 daily tokens" in r.stderr, r.stderr
    r = a.ctl("plan", "assign", "roomy", "--user", "alice", user="alice", check=False)
    assert r.returncode == 77 and "(PermissionDenied)" in r.stderr, r.stderr
    a.ctl("plan", "assign", "roomy", "--user", "alice", user="carol")
    shown = a.ctl_json("plan", "show", "--user", "alice", user="carol")["plan"]
    assert (shown["name"], shown["source"]) == ("roomy", "user"), shown
    for name in ("pl-4", "pl-5"):  # past starter's two, and of any template: at once
        assert create(a, name, "research").returncode == 0
    assert "plan\troomy" in a.ctl("usage", user="alice").stdout
    a.ctl("plan", "unassign", "--user", "alice", user="carol")
    assert a.ctl_json("plan", "show", user="alice")["plan"]["name"] == "starter"
    rows = [r["detail"] for r in a.audit("plan.assign") if r["result"] == "ok"]
    rows = [d for d in rows if d["kind"] == "user"]
    assert [(d["plan"], d["previous"]) for d in rows[-2:]] == [("roomy", ""), ("", "roomy")]

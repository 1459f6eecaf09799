"""polkit decides agentd's administrative actions for people agentd's own rules
do not already make administrators: a rules file in /etc/polkit-1/rules.d
grants one user one action, and only that one (the real polkitd, over the
real system bus, asked by agentd with the caller's bus name)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration

RULES = "/etc/polkit-1/rules.d/50-agentd-test.rules"
GRANT_BOB_QUOTAS = """\
polkit.addRule(function(action, subject) {
    if (action.id == "org.agentos.agentd1.set-quota" && subject.user == "bob") {
        return polkit.Result.YES;
    }
});
"""


@contextlib.contextmanager
def rules_file(agentd: Agentd, text: str) -> Iterator[None]:
    agentd.m.write_file(RULES, text, mode=0o644)
    # polkitd watches rules.d with inotify and reloads; ask until it answers yes
    try:
        yield
    finally:
        agentd.sh(["rm", "-f", RULES])


def pkcheck_says_yes(agentd: Agentd, user: str, action: str) -> bool:
    """What polkit itself answers for USER's process (a shell run as USER)."""
    r = agentd.sh(
        ["runuser", "-u", user, "--", "sh", "-c", f"pkcheck --action-id {action} --process $$"],
        check=False,
    )
    return r.returncode == 0


def test_the_actions_are_installed_with_their_defaults(agentd: Agentd) -> None:
    out = agentd.sh(
        ["pkaction", "--verbose", "--action-id", "org.agentos.agentd1.set-quota"]
    ).stdout
    assert "implicit active:   auth_admin_keep" in out
    assert "implicit any:      no" in out


def test_without_a_rule_a_user_may_not_set_quotas(agentd: Agentd) -> None:
    agentd.create("pk-a", user="alice")
    try:
        r = agentd.ctl("quota", "set", "--agent", "pk-a", "1000", user="bob", check=False)
        assert r.returncode == 77 and "PermissionDenied" in r.stderr, r.stderr
    finally:
        agentd.ctl("agent", "rm", "pk-a", user="alice")


def test_a_rules_file_grants_one_user_one_action(agentd: Agentd) -> None:
    agentd.create("pk-b", user="alice")
    try:
        with rules_file(agentd, GRANT_BOB_QUOTAS):
            wait_for(
                lambda: pkcheck_says_yes(agentd, "bob", "org.agentos.agentd1.set-quota"),
                30,
                "polkitd to load the rules file",
            )
            agentd.ctl(
                "quota", "set", "--agent", "pk-b", "1234", "--period", "daily", user="bob"
            )  # bob cannot list alice's agents: say it is one
            quotas = agentd.ctl_json("quota", "list")
            assert any(q["subject"] == "pk-b" and q["limit"] == 1234 for q in quotas), quotas
            row = agentd.audit("quota.set", "pk-b")[-1]
            assert row["result"] == "ok" and row["actor_uid"] == agentd.uid_of("bob")
            # only that action: bob is no administrator for anything else
            r = agentd.ctl("audit", "verify", user="bob", check=False)
            assert r.returncode == 77, r.stderr
            r = agentd.ctl("agent", "stop", "pk-b", user="bob", check=False)
            assert r.returncode == 77, r.stderr
            # and only that user
            r = agentd.ctl("quota", "set", "--agent", "pk-b", "99", user="alice", check=False)
            assert r.returncode == 77, r.stderr
    finally:
        agentd.ctl("agent", "rm", "pk-b", user="alice")

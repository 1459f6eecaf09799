"""Issue 10, finding 10's leftovers, attacked in the systemd machine:

- an administrator removed from the admin group kept its rights on every
  connection its processes made afterwards (the bus reports the groups a
  process started with): a process of carol's started while she was an
  administrator is refused once `gpasswd -d` has run, with no re-login;
- narrowing the agent UID range (uid_min above an existing agent's UID) turned
  that agent into a person in agentd's eyes: its runtime could no longer
  register (the Runtime interface is the agents' own). After the restart it is
  still an agent: online again;

and bob is answered within 1 s throughout.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentd_helpers import Agentd, answering

pytestmark = pytest.mark.integration
FIFO = "/tmp/revoke.fifo"
AGENT = "id-narrow"


def verify_later(a: Agentd, revoke: bool) -> tuple[int, str]:
    """`agentctl audit verify` by a process of carol's started now (her groups
    include agentd-admin), run once the fifo is written, after REVOKE or not."""
    a.sh(["rm", "-f", FIFO])
    a.sh(["mkfifo", "-m", "0666", FIFO])
    p = a.m.popen(
        ["/bin/sh", "-c", f"id -G; read x < {FIFO}; agentctl audit verify; echo rc=$?"],
        user="carol",
    )
    try:
        assert p.stdout is not None
        groups = p.stdout.readline()  # the process is running, with its groups set
        if revoke:
            a.sh(["gpasswd", "-d", "carol", "agentd-admin"])
        a.sh(["/bin/sh", "-c", f"echo go > {FIFO}"])
        out, err = p.communicate(timeout=60)
    finally:
        a.sh(["gpasswd", "-a", "carol", "agentd-admin"], check=False)
    group = a.sh(["getent", "group", "agentd-admin"]).stdout
    assert group.split(":")[2] in groups.split(), (group, groups)  # it had the group
    return int(out.strip().splitlines()[-1].removeprefix("rc=")), out + err


def test_an_admin_removed_from_the_group_is_refused_at_once(agentd: Agentd) -> None:
    rc, out = verify_later(agentd, revoke=False)
    assert rc == 0, out  # the control: the same process, still an administrator
    with answering(agentd):
        rc, out = verify_later(agentd, revoke=True)
    assert rc != 0 and "PermissionDenied" in out, out
    denied = [r for r in agentd.audit("audit.verify") if r["result"] == "denied"]
    assert denied and denied[-1]["actor_uid"] == agentd.uid_of("carol")


@pytest.fixture
def narrowed(agentd: Agentd) -> Iterator[dict]:
    agentd.create(AGENT, user="alice")
    info = agentd.ctl_json("agent", "show", AGENT, user="alice")
    with agentd.configured(f"uid_min = {info['uid'] + 1}\n"):
        yield info


def test_narrowing_the_uid_range_leaves_agents_agents(agentd: Agentd, narrowed: dict) -> None:
    with answering(agentd):
        agentd.ctl("agent", "start", AGENT, user="alice")
        # Its runtime registered over the Runtime interface, which agentd opens to
        # agents only (Scope.SELF): a UID outside the range is still an agent's.
        agentd.wait_online(AGENT)
    assert agentd.ctl_json("agent", "show", AGENT, user="alice")["uid"] == narrowed["uid"]
    refused = [
        r
        for r in agentd.audit("runtime.register")
        if r["actor_uid"] == narrowed["uid"] and r["result"] != "ok"
    ]
    assert not refused, refused

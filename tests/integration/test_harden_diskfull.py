"""Disk full (issue 10, "Also"): /var/lib/agentd on a small tmpfs, filled to ENOSPC.

Invariant: with no byte left where the registry and the audit log live, every
call either succeeds (it needed no space: reads, or a write that fit in pages
SQLite already had) or fails with a typed error, at once; agentd stays up; nothing
is half done (users, homes, units and registry rows agree; SQLite's quick_check
passes); and once space returns the audit chain verifies and new writes work and
are durable (read back by a connection of our own, and after a restart).

The tmpfs is mounted with agentd stopped and masked (an agent's heartbeat would
otherwise start it by D-Bus activation mid-copy), over a copy of the real state;
the real directory stays reachable through a bind mount and gets the tmpfs's
final state back at the end, so the machine goes on (shared by later tests) with
one continuous registry and audit trail, agentd running.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration
STATE, ORIG = "/var/lib/agentd", "/run/agentd-diskfull-orig"  # ORIG: the real STATE, bound
ROOT, BUS, PREFIX = "/org/agentos/agentd1", "org.agentos.agentd1", "org.agentos.agentd1.Error."
INTERNAL = PREFIX + "Failed(internal error)"  # api.access's net for bugs: typed, but a crash
USER, AGENT, OTHER = "dfuser", "df-a", "df-other"  # OTHER: root's, for a refused (audited) call
MESSAGE_ID = "9d6f3c1e0b1a4f0fa0b6a1c2d3e4f501"  # agentd.audit's journald catalog id
SPARE = 8 << 20  # the tmpfs: what the state takes now, plus 8 MiB
ROWS = """import apsw, json, sys
c = apsw.Connection(sys.argv[1] + '/agentd.db')
q = "SELECT name, uid, gid, state FROM agents WHERE state != 'removed'"
print(json.dumps([dict(zip(('name', 'uid', 'gid', 'state'), r)) for r in c.execute(q)]))
print(c.execute('PRAGMA quick_check').fetchall()[0][0])"""


def gdbus(agentd: Agentd, user: str, method: str, *args: str, path: str = ROOT) -> str:
    """'ok' or the D-Bus error name METHOD(ARGS) gets, called by USER with gdbus."""
    cmd = ["gdbus", "call", "--system", "--timeout", "20", "--dest", BUS, "--object-path", path]
    r = agentd.m.run([*cmd, "--method", f"{BUS}.{method}", *args], user=user, check=False)
    if r.returncode == 0:
        return "ok"
    m = re.search(r"GDBus\.Error:([\w.]+): (.*)", r.stderr)
    if not m:
        return str(r.stderr).strip()  # a timeout, a lost connection: no D-Bus error name
    internal = m.group(1) == PREFIX + "Failed" and "internal error" in m.group(2)
    return INTERNAL if internal else m.group(1)


WRITES = [  # (caller, method, args): calls that need the disk
    (USER, "Manager.CreateAgent", "'df-b'", "'writing'", "@a{sv} {}"),
    (USER, "Tasks.CreateProject", "'dfp'", "'made while the disk was full'"),
    (USER, "Tasks.SubmitTask", "{'title': <'t'>, 'exec': <'true'>}"),
    ("root", "Model.SetQuota", "'agent'", f"'{AGENT}'", "uint64 100", "'daily'"),
    (USER, "Manager.StopAgent", f"'{OTHER}'"),  # refused: the refusal is an audit row
    (USER, "Manager.RemoveAgent", f"'{AGENT}'", "false"),
]
READS = [
    (USER, "Manager.ListAgents"),
    (USER, "Manager.DescribeAgent", f"'{AGENT}'"),
    (USER, "Tasks.ListTasks", "@a{sv} {}"),
    (USER, "Manager.ListAuditEntries", "uint64 0", "uint32 10"),
    ("root", "Manager.VerifyAudit"),
    (USER, "Model.ListQuotas"),
]


def inventory(agentd: Agentd) -> dict[str, Any]:
    """Everything that says an agent exists, each from its own source."""
    cfg = agentd.ctl_json("status")["config"]
    lo, hi = int(cfg["uid_min"]), int(cfg["uid_max"])
    out = agentd.m.run(["/usr/bin/python3", "-c", ROWS, cfg["state_dir"]]).stdout.split("\n")

    def ids(db: str) -> set[int]:
        fields = (line.split(":") for line in agentd.m.run(["getent", db]).stdout.splitlines())
        return {int(f[2]) for f in fields if lo <= int(f[2]) <= hi}

    homes = agentd.sh(f"stat -c %u {cfg['home_root']}/*/ 2>/dev/null || true").stdout.split()
    units = agentd.sh(
        "systemctl list-units --all --plain --no-legend 'agent-*.service' | "
        "awk '$3 != \"inactive\" {print $1}'"
    ).stdout.split()
    return dict(rows=json.loads(out[0]), quick_check=out[1], users=ids("passwd"),
                groups=ids("group"), homes={int(u) for u in homes}, units=set(units),
                listed=sorted(a["name"] for a in agentd.ctl_json("agent", "list")))  # fmt: skip


def assert_whole(agentd: Agentd) -> list[dict[str, Any]]:
    inv = inventory(agentd)
    rows = inv["rows"]
    assert inv["quick_check"] == "ok", inv["quick_check"]
    assert [r for r in rows if r["state"] != "present"] == [], rows
    assert inv["listed"] == sorted(r["name"] for r in rows)
    assert inv["users"] == inv["homes"] == {r["uid"] for r in rows}, inv
    assert inv["groups"] == {r["gid"] for r in rows}, inv
    assert inv["units"] <= {f"agent-{r['name']}.service" for r in rows}, inv["units"]
    return list(rows)


def free_bytes(agentd: Agentd) -> int:
    return int(agentd.m.run(["df", "--output=avail", "-B1", STATE]).stdout.split()[-1])


def stop_masked(agentd: Agentd) -> None:
    agentd.sh("systemctl mask --runtime agentd.service && systemctl stop agentd.service")


def start_unmasked(agentd: Agentd) -> None:
    agentd.m.run(["systemctl", "unmask", "--runtime", "agentd.service"])
    agentd.m.run(["systemctl", "start", "agentd.service"], timeout=120)


@pytest.fixture(scope="module")
def full(agentd: Agentd) -> Iterator[dict[str, int]]:
    """agentd running on a tmpfs over STATE, the tmpfs filled to the last byte."""
    agentd.sh(f"id {USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {USER}")
    agentd.create(AGENT, template="writing", user=USER)
    agentd.create(OTHER, template="writing")
    stop_masked(agentd)
    try:
        size = int(agentd.m.run(["du", "-sb", STATE]).stdout.split()[0]) + SPARE
        agentd.sh(f"mkdir -p {ORIG} && mount --bind {STATE} {ORIG}")
        agentd.sh(f"mount -t tmpfs -o size={size},mode=0700 agentd-full {STATE}")
        agentd.sh(f"cp -a {ORIG}/. {STATE}/")
        start_unmasked(agentd)
        r = agentd.sh(f"dd if=/dev/zero of={STATE}/filler bs=64k", check=False)
        assert r.returncode != 0 and "No space left" in r.stderr, r.stderr
        head = agentd.busctl("get-property", BUS, ROOT, f"{BUS}.Manager", "AuditHead").stdout
        yield {"pid": agentd.main_pid("agentd.service"), "head": int(head.split()[1])}
    finally:
        restore(agentd)
    for name in (AGENT, "df-b", "df-c", OTHER):
        agentd.ctl("agent", "rm", name, check=False)
    for task in agentd.ctl_json("task", "list", user=USER):
        agentd.ctl("task", "cancel", str(task["id"]), check=False)
    agentd.ctl("project", "rm", "dfp", check=False)


def restore(agentd: Agentd) -> None:
    """The tmpfs's state back into the real directory, agentd running on it again
    (the filler goes first, so that agentd can checkpoint its log as it stops)."""
    agentd.m.run(["rm", "-f", f"{STATE}/filler"])
    stop_masked(agentd)
    try:
        fstype = agentd.m.run(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", STATE], check=False)
        if fstype.stdout.strip() == "tmpfs":  # else STATE is the real directory: leave it
            agentd.sh(f"find {ORIG} -mindepth 1 -delete && cp -a {STATE}/. {ORIG}/")
            agentd.sh(f"umount {STATE}")
        agentd.sh(f"! mountpoint -q {ORIG} || umount {ORIG}; rmdir {ORIG} 2>/dev/null || true")
    finally:
        start_unmasked(agentd)


def test_the_disk_is_full(agentd: Agentd, full: dict[str, int]) -> None:
    assert free_bytes(agentd) == 0


def test_every_call_fails_cleanly_or_succeeds_and_agentd_stays_up(
    agentd: Agentd, full: dict[str, int]
) -> None:
    outcomes = {f"{c[1]}#{i}": gdbus(agentd, *c) for i in range(3) for c in WRITES}
    outcomes |= {c[1]: gdbus(agentd, *c) for c in READS}
    print(json.dumps(outcomes, indent=1))
    untyped = {k: v for k, v in outcomes.items() if v != "ok" and not v.startswith(PREFIX)}
    assert not untyped, untyped
    assert all(outcomes[c[1]] == "ok" for c in READS), outcomes
    assert any(v != "ok" for k, v in outcomes.items() if "#" in k), "no write was refused"
    assert agentd.main_pid("agentd.service") == full["pid"]
    version = ["get-property", BUS, ROOT, f"{BUS}.Manager", "Version"]
    assert agentd.busctl(*version, user="bob").stdout.startswith("s ")


def test_a_full_disk_is_reported_as_such(agentd: Agentd, full: dict[str, int]) -> None:
    refused = [o for o in (gdbus(agentd, *WRITES[0]) for _ in range(3)) if o != "ok"]
    assert refused and INTERNAL not in refused, refused
    assert PREFIX + "NoSpace" in refused, refused


def test_nothing_is_half_done_while_full(agentd: Agentd, full: dict[str, int]) -> None:
    assert_whole(agentd)


def test_after_space_returns_the_chain_verifies_and_writes_work(
    agentd: Agentd, full: dict[str, int]
) -> None:
    agentd.m.run(["rm", "-f", f"{STATE}/filler"])
    assert free_bytes(agentd) > 0
    r = agentd.ctl("audit", "verify", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    agentd.create("df-c", template="writing", user=USER)
    assert gdbus(agentd, "root", "Model.SetQuota", "'agent'", "'df-c'", "uint64 100",
                 "'daily'") == "ok"  # fmt: skip
    assert "df-c" in {r["name"] for r in assert_whole(agentd)}  # committed: our connection sees it
    assert agentd.main_pid("agentd.service") == full["pid"]
    agentd.restart()
    wait_for(lambda: "df-c" in {a["name"] for a in agentd.ctl_json("agent", "list")}, 30, "df-c")
    r = agentd.ctl("audit", "verify", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_journal_copy_of_the_audit_agrees_with_the_log(
    agentd: Agentd, full: dict[str, int]
) -> None:
    """journald's copy of each audit row (AGENTD_AUDIT_SEQ, _HASH) is the row in the
    database: no row the full disk refused is announced by a later commit."""
    agentd.m.run(["rm", "-f", f"{STATE}/filler"])
    agentd.ctl("quota", "set", "--agent", AGENT, "200", check=False)  # a commit or two
    rows = agentd.ctl_json("audit", "--after", str(full["head"]), "--limit", "100000")
    logged = {r["seq"]: r["hash"] for r in rows}
    out = agentd.m.run(["journalctl", "-b", "-o", "json", f"MESSAGE_ID={MESSAGE_ID}"]).stdout
    copies = [json.loads(line) for line in out.splitlines()]
    copies = [(int(c["AGENTD_AUDIT_SEQ"]), c["AGENTD_AUDIT_HASH"]) for c in copies]
    wrong = [(seq, h) for seq, h in copies if seq > full["head"] and logged.get(seq) != h]
    assert not wrong, f"journald announces rows the log does not hold: {wrong[:10]}"

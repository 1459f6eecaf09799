"""Agents end to end in a real systemd machine: what getent, stat, systemctl,
/proc, the cgroup tree and the journal show after agentctl and busctl calls."""

from __future__ import annotations

import json
import time

import pytest
from agentd_helpers import Agentd, wait_for

from agentd.names import account_name

pytestmark = pytest.mark.integration

UID_MIN, UID_MAX = 70000, 99999


def test_agentd_service_is_up_and_notified(agentd: Agentd) -> None:
    props = agentd.show("agentd.service", "ActiveState", "Type", "BusName", "StatusText")
    assert props["ActiveState"] == "active" and props["Type"] == "notify"
    assert props["StatusText"].startswith("serving")
    status = agentd.ctl_json("status")
    assert status["version"]
    assert agentd.sh(["stat", "-c", "%a %U", "/var/lib/agentd"]).stdout.split() == ["700", "root"]
    assert agentd.sh(["stat", "-c", "%a", "/home/agents"]).stdout.strip() == "711"


def test_create_makes_a_real_locked_user_with_a_private_home(agentd: Agentd) -> None:
    agentd.create("it-basic", user="alice")
    _name, _, uid, gid, _gecos, home, shell = (
        agentd.sh(["getent", "passwd", account_name("it-basic")]).stdout.strip().split(":")
    )
    assert UID_MIN <= int(uid) <= UID_MAX and gid == uid
    assert home == "/home/agents/it-basic" and shell == "/usr/sbin/nologin"
    assert agentd.sh(["getent", "group", account_name("it-basic")]).stdout.split(":")[2] == gid
    assert account_name("it-basic") in agentd.sh(["getent", "group", "agentd-agents"]).stdout
    assert (
        agentd.sh(["getent", "shadow", account_name("it-basic")])
        .stdout.split(":")[1]
        .startswith("!")
    )
    assert agentd.sh(["passwd", "-S", account_name("it-basic")]).stdout.split()[1] == "L"
    stat = agentd.sh(["stat", "-c", "%u %g %a", home]).stdout.split()
    assert stat == [uid, gid, "700"]
    info = agentd.ctl_json("agent", "show", "it-basic", user="alice")
    assert info["owner_uid"] == agentd.uid_of("alice") and info["uid"] == int(uid)
    (row,) = agentd.audit("agent.create", "it-basic")
    assert row["result"] == "ok" and row["actor_uid"] == agentd.uid_of("alice")


def test_start_runs_the_runtime_in_a_hardened_unit(agentd: Agentd) -> None:
    agentd.create("it-run", user="alice", start=True)
    unit = "agent-it-run.service"
    uid = agentd.uid_of(account_name("it-run"))
    p = agentd.show(
        unit,
        "ActiveState",
        "User",
        "Slice",
        "MemoryMax",
        "TasksMax",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateNetwork",
        "CollectMode",
        "CapabilityBoundingSet",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "RestrictSUIDSGID",
        "CPUQuotaPerSecUSec",
        "BindPaths",
        "SystemCallFilter",
    )
    assert p["ActiveState"] == "active" and p["User"] == account_name("it-run")
    assert p["Slice"] == "agents.slice" and p["CollectMode"] == "inactive-or-failed"
    assert p["MemoryMax"] == str(256 << 20) and p["TasksMax"] == "32"
    assert p["CPUQuotaPerSecUSec"] == "500ms"
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateNetwork",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "RestrictSUIDSGID",
    ):
        assert p[key] == "yes", key
    assert p["ProtectSystem"] == "strict" and p["ProtectHome"] == "tmpfs"
    assert "/home/agents/it-run" in p["BindPaths"]
    assert p["CapabilityBoundingSet"] == ""
    assert p["SystemCallFilter"]

    pid = agentd.main_pid(unit)
    st = agentd.proc_status(pid)
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1"
    assert st["Uid"].split() == [str(uid)] * 4
    assert st["CapEff"] == "0000000000000000"
    cmdline = agentd.sh(["cat", f"/proc/{pid}/cmdline"]).stdout
    assert "agentd-runtime" in cmdline

    cg = f"/sys/fs/cgroup/memory/agents.slice/{unit}"
    assert agentd.sh(["cat", f"{cg}/memory.limit_in_bytes"]).stdout.strip() == str(256 << 20)
    pids = f"/sys/fs/cgroup/pids/agents.slice/{unit}/pids.max"
    assert agentd.sh(["cat", pids]).stdout.strip() == "32"
    cpu = f"/sys/fs/cgroup/cpu/agents.slice/{unit}"
    quota = agentd.sh(f"cat {cpu}/cpu.cfs_quota_us {cpu}/cpu.cfs_period_us").stdout.split()
    assert quota == ["50000", "100000"]  # CPUQuota=50%
    assert str(pid) in agentd.sh(["cat", f"{cg}/cgroup.procs"]).stdout

    agentd.wait_online("it-run")
    # journald reads the runtime's stdout on its own schedule: wait for the line
    line = f"agent it-run online as uid {uid}"
    wait_for(
        lambda: line in agentd.sh(["journalctl", "-u", unit, "--no-pager", "-o", "cat"]).stdout,
        30,
        f"journald's copy of {line!r}",
    )
    info = agentd.ctl_json("agent", "show", "it-run", user="alice")
    assert info["active_state"] == "active" and info["online"] is True
    assert info["main_pid"] == pid and info["memory_current"] > 0
    out = agentd.ctl("agent", "logs", "it-run", "-n", "50", user="root").stdout
    assert "online" in out
    # its owner reads them through agentd, though journalctl shows her none of them
    own = agentd.sh(
        ["runuser", "-u", "alice", "--", "journalctl", "-q", "--no-pager", "-u", "agent-it-run"],
        check=False,
    )
    assert "online as uid" not in own.stdout
    out = agentd.ctl("agent", "logs", "it-run", "-n", "50", user="alice").stdout
    assert f"agent it-run online as uid {uid}" in out, out
    refused = agentd.ctl("agent", "logs", "it-run", user="bob", check=False)
    assert refused.returncode == 77, refused


def test_stop_and_remove_leave_nothing_behind(agentd: Agentd) -> None:
    agentd.create("it-gone", user="alice", start=True)
    agentd.wait_online("it-gone")
    agentd.ctl("agent", "stop", "it-gone", user="alice")
    assert agentd.show("agent-it-gone.service", "LoadState")["LoadState"] == "not-found"
    assert not agentd.ctl_json("agent", "show", "it-gone", user="alice")["online"]
    uid = agentd.uid_of(account_name("it-gone"))
    agentd.ctl("agent", "rm", "it-gone", user="alice")
    assert agentd.sh(["getent", "passwd", account_name("it-gone")], check=False).returncode == 2
    assert agentd.sh(["getent", "group", account_name("it-gone")], check=False).returncode == 2
    assert agentd.sh(["test", "-e", "/home/agents/it-gone"], check=False).returncode == 1
    assert (
        agentd.sh(f"find / -xdev -uid {uid} 2>/dev/null | head -1", check=False).stdout.strip()
        == ""
    )
    names = [a["name"] for a in agentd.ctl_json("agent", "list", user="alice")]
    assert "it-gone" not in names
    assert agentd.audit("agent.remove", "it-gone")[-1]["result"] == "ok"


def test_remove_keep_home_archives_it_root_only(agentd: Agentd) -> None:
    agentd.create("it-keep", user="alice")
    agentd.sh("echo precious > /home/agents/it-keep/notes.txt")
    agentd.ctl("agent", "rm", "it-keep", "--keep-home", user="alice")
    assert agentd.sh(["test", "-e", "/home/agents/it-keep"], check=False).returncode == 1
    archive = agentd.audit("agent.remove", "it-keep")[-1]["detail"]["archive"]
    assert archive.startswith("/var/lib/agentd/archive/it-keep-")
    assert agentd.sh(["stat", "-c", "%a %U", archive]).stdout.split() == ["600", "root"]
    listing = agentd.sh(["tar", "-tzvf", archive]).stdout
    assert "it-keep/notes.txt" in listing


def test_list_and_show_are_scoped_to_owner(agentd: Agentd) -> None:
    agentd.create("it-bobs", user="bob")
    bob = [a["name"] for a in agentd.ctl_json("agent", "list", user="bob")]
    alice = [a["name"] for a in agentd.ctl_json("agent", "list", user="alice")]
    admin = [a["name"] for a in agentd.ctl_json("agent", "list", user="carol")]
    assert "it-bobs" in bob and "it-bobs" not in alice and "it-bobs" in admin
    assert "it-basic" in alice and "it-basic" not in bob
    table = agentd.ctl("agent", "list", user="bob").stdout
    assert "it-bobs" in table


def test_a_user_cannot_manage_anothers_agent_and_it_is_audited(agentd: Agentd) -> None:
    agentd.create("it-owned", user="alice")
    for verb in ("start", "stop", "rm", "show"):
        r = agentd.ctl("agent", verb, "it-owned", user="bob", check=False)
        assert r.returncode == 77, (verb, r.stderr)
        assert "PermissionDenied" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    denied = [r for r in agentd.audit(agent="it-owned") if r["result"] == "denied"]
    assert len(denied) >= 4 and all(r["actor_uid"] == agentd.uid_of("bob") for r in denied)
    # The admin group may manage it.
    agentd.ctl("agent", "start", "it-owned", user="carol")
    agentd.ctl("agent", "rm", "it-owned", user="carol")


@pytest.mark.parametrize(
    "name", ["Upper", "has space", "a/b", "dot.ted", "x" * 33, "root", "daemon", "-lead"]
)
def test_invalid_names_are_refused_and_create_nothing(agentd: Agentd, name: str) -> None:
    before = agentd.sh("getent passwd | wc -l").stdout
    r = agentd.ctl(
        "agent", "create", "--template", "sandbox", "--", name, user="alice", check=False
    )
    assert r.returncode == 1 and "(InvalidName)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert agentd.sh("getent passwd | wc -l").stdout == before


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["it-t1", "--template", "no-such-template"], "NoSuchTemplate"),
        (["it-t2", "--template", "sandbox", "--memory-max", "1K"], "InvalidArgument"),
        (["it-t3", "--template", "sandbox", "--tasks-max", "100000000"], "InvalidArgument"),
        (["it-basic", "--template", "sandbox"], "AlreadyExists"),
    ],
)
def test_bad_create_arguments_get_typed_errors(agentd: Agentd, args: list[str], error: str) -> None:
    r = agentd.ctl("agent", "create", *args, user="alice", check=False)
    assert r.returncode != 0 and f"({error})" in r.stderr
    if args[0] != "it-basic":
        assert agentd.sh(["getent", "passwd", account_name(args[0])], check=False).returncode == 2


@pytest.mark.parametrize(
    ("key", "sig", "value"),
    [
        ("cpu_quota", "u", "0"),
        ("cpu_quota", "u", "100000"),
        ("memory_max", "s", "lots"),
        ("tasks_max", "s", "many"),
        ("swap_max", "t", "1"),
    ],
)
def test_the_service_checks_limits_itself(agentd: Agentd, key: str, sig: str, value: str) -> None:
    """agentctl checks some limits client-side; the service must not rely on it."""
    r = agentd.busctl(
        "call",
        "org.agentos.agentd1",
        "/org/agentos/agentd1",
        "org.agentos.agentd1.Manager",
        "CreateAgent",
        "ssa{sv}",
        "it-lim",
        "sandbox",
        "1",
        key,
        sig,
        value,
        user="alice",
        check=False,
    )
    assert r.returncode != 0, r.stdout
    assert agentd.sh(["getent", "passwd", account_name("it-lim")], check=False).returncode == 2
    err = agentd.audit("agent.create", "it-lim")[-1]["detail"]["error"]
    assert err == "InvalidArgument"


def test_busctl_drives_the_same_api(agentd: Agentd) -> None:
    out = agentd.busctl(
        "call",
        "org.agentos.agentd1",
        "/org/agentos/agentd1",
        "org.agentos.agentd1.Manager",
        "CreateAgent",
        "ssa{sv}",
        "it-bus",
        "writing",
        "1",
        "tasks_max",
        "t",
        "48",
        user="alice",
    ).stdout
    path = "/org/agentos/agentd1/agent/it_2dbus"
    assert out.strip() == f'o "{path}"'
    agentd.busctl(
        "call", "org.agentos.agentd1", path, "org.agentos.agentd1.Agent", "Start", user="alice"
    )
    assert agentd.show("agent-it-bus.service", "TasksMax")["TasksMax"] == "48"
    prop = agentd.busctl(
        "get-property", "org.agentos.agentd1", path, "org.agentos.agentd1.Agent", "Unit"
    ).stdout
    assert prop.strip() == 's "agent-it-bus.service"'
    intro = agentd.busctl("introspect", "org.agentos.agentd1", "/org/agentos/agentd1").stdout
    assert "CreateAgent" in intro and "org.agentos.agentd1.Runtime" in intro
    bad = agentd.busctl(
        "call",
        "org.agentos.agentd1",
        "/org/agentos/agentd1",
        "org.agentos.agentd1.Manager",
        "GetAgent",
        "s",
        "nope",
        user="alice",
        check=False,
    )
    assert bad.returncode != 0 and "no agent named 'nope'" in bad.stderr
    agentd.busctl(
        "call",
        "org.agentos.agentd1",
        path,
        "org.agentos.agentd1.Agent",
        "Remove",
        "b",
        "false",
        user="alice",
    )
    assert agentd.sh(["getent", "passwd", account_name("it-bus")], check=False).returncode == 2


def test_gdbus_sees_typed_errors(agentd: Agentd) -> None:
    r = agentd.sh(
        [
            "gdbus",
            "call",
            "--system",
            "--dest",
            "org.agentos.agentd1",
            "--object-path",
            "/org/agentos/agentd1",
            "--method",
            "org.agentos.agentd1.Manager.CreateAgent",
            "Bad Name",
            "sandbox",
            "{}",
        ],
        user="alice",
        check=False,
    )
    assert r.returncode != 0
    assert "org.agentos.agentd1.Error.InvalidName" in r.stderr
    r = agentd.sh(
        [
            "gdbus",
            "call",
            "--system",
            "--dest",
            "org.agentos.agentd1",
            "--object-path",
            "/org/agentos/agentd1",
            "--method",
            "org.agentos.agentd1.Manager.ListTemplates",
        ],
        user="alice",
    )
    assert "'sandbox'" in r.stdout


def test_templates_are_listed_with_profiles(agentd: Agentd) -> None:
    templates = {t["name"]: t for t in agentd.ctl_json("template", "list", user="alice")}
    assert {"research", "writing", "ops", "sandbox"} <= set(templates)
    writing = agentd.ctl_json("template", "show", "writing", user="alice")
    assert writing["network"] == "none" and writing["profile"] == "offline"
    r = agentd.ctl("template", "show", "nope", user="alice", check=False)
    assert r.returncode == 1 and "(NoSuchTemplate)" in r.stderr


def test_audit_goes_to_journald_with_structured_fields(agentd: Agentd) -> None:
    out = agentd.sh(
        [
            "journalctl",
            "-o",
            "json",
            "--no-pager",
            "AGENT_NAME=it-basic",
            "SYSLOG_IDENTIFIER=agentd",
        ]
    ).stdout
    events = [json.loads(line) for line in out.splitlines()]
    create = [e for e in events if e.get("AGENTD_ACTION") == "agent.create"]
    assert create and create[0]["AGENT_UID"] == str(agentd.uid_of(account_name("it-basic")))
    rows = agentd.audit("agent.create", "it-basic")
    assert create[0]["AGENTD_AUDIT_HASH"] == rows[0]["hash"]


def test_audit_follow_streams_new_rows(agentd: Agentd) -> None:
    proc = agentd.m.popen(["agentctl", "audit", "--follow", "--json"])
    try:
        wait_for(lambda: agentd.busctl("status", "org.agentos.agentd1").returncode == 0)
        # No wait for the follower to subscribe: it lists the newest rows first and
        # subscribes before it fetches what came after them, so the new row is in
        # its output whenever the follower got going.
        agentd.create("it-follow", user="alice")
        line = ""
        deadline = time.monotonic() + 20
        while "it-follow" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "it-follow" in line and json.loads(line)["action"] == "agent.create"
    finally:
        proc.kill()
        proc.wait()


def test_agent_state_survives_an_agentd_restart(agentd: Agentd) -> None:
    agentd.create("it-persist", user="alice", start=True)
    agentd.wait_online("it-persist")
    pid = agentd.main_pid("agent-it-persist.service")
    agentd.restart()
    assert agentd.main_pid("agent-it-persist.service") == pid  # agents outlive agentd
    info = agentd.ctl_json("agent", "show", "it-persist", user="alice")
    assert info["active_state"] == "active"
    agentd.wait_online("it-persist")  # the runtime re-registers by heartbeat


def test_audit_verify_detects_a_modified_or_deleted_row(agentd: Agentd) -> None:
    """Tamper with the live database as root would, then put it back."""
    db = "/var/lib/agentd/agentd.db"
    assert agentd.ctl_json("audit", "verify")["ok"]
    seq, actor = (
        agentd.sh(["sqlite3", db, "SELECT seq, actor_uid FROM audit ORDER BY seq LIMIT 1 OFFSET 2"])
        .stdout.strip()
        .split("|")
    )
    agentd.sh(["sqlite3", db, f"UPDATE audit SET actor_uid=4242 WHERE seq={seq}"])
    r = agentd.ctl("audit", "verify", check=False)
    assert r.returncode == 1 and f"row {seq} was modified" in r.stdout + r.stderr
    agentd.sh(["sqlite3", db, f"UPDATE audit SET actor_uid={actor} WHERE seq={seq}"])
    assert agentd.ctl_json("audit", "verify")["ok"]

    agentd.sh(
        [
            "sqlite3",
            db,
            f"CREATE TABLE saved AS SELECT * FROM audit WHERE seq={seq}; "
            f"DELETE FROM audit WHERE seq={seq};",
        ]
    )
    r = agentd.ctl("audit", "verify", check=False)
    assert r.returncode == 1 and f"row {seq} is missing" in r.stdout + r.stderr
    agentd.sh(["sqlite3", db, "INSERT INTO audit SELECT * FROM saved; DROP TABLE saved;"])
    assert agentd.ctl_json("audit", "verify")["ok"]


def test_audit_verify_detects_a_cut_tail_with_a_rewritten_head(agentd: Agentd) -> None:
    """Issue 10, finding 10: the last rows deleted and the stored head rewritten to
    the new last row leave a chain that is intact by itself; journald's copy of
    the cut rows (AGENTD_AUDIT_CHAIN=, the same log's) gives it away."""
    db = "/var/lib/agentd/agentd.db"
    agentd.ctl("agent", "show", "no-such-agent-xyz", check=False)  # a row or two more
    head = agentd.sh(["sqlite3", db, "SELECT value FROM meta WHERE key='audit_head'"])
    last = int(head.stdout.strip().split(":")[0])
    wait_for(
        lambda: agentd.sh(
            ["journalctl", "-o", "cat", f"AGENTD_AUDIT_SEQ={last}"], check=False
        ).stdout.strip(),
        30,
        f"journald's record of row {last}",
    )
    assert agentd.ctl_json("audit", "verify")["ok"]
    keep = last - 2
    agentd.sh(
        [
            "sqlite3",
            db,
            f"CREATE TABLE saved AS SELECT * FROM audit WHERE seq>{keep}; "
            f"CREATE TABLE saved_head AS SELECT value FROM meta WHERE key='audit_head'; "
            f"DELETE FROM audit WHERE seq>{keep}; "
            "UPDATE meta SET value=(SELECT seq || ':' || hash FROM audit "
            f"WHERE seq={keep}) WHERE key='audit_head';",
        ]
    )
    r = agentd.ctl("audit", "verify", check=False)
    agentd.sh(
        [
            "sqlite3",
            db,
            "INSERT INTO audit SELECT * FROM saved; DROP TABLE saved; "
            "UPDATE meta SET value=(SELECT value FROM saved_head) WHERE key='audit_head'; "
            "DROP TABLE saved_head;",
        ]
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "journald recorded row" in r.stdout + r.stderr, r.stdout + r.stderr
    assert f"{keep + 1}-" in r.stdout + r.stderr  # "rows KEEP+1-N were removed"
    assert agentd.ctl_json("audit", "verify")["ok"]


def list_events(agentd: Agentd, *types: str, user: str | None = None) -> list[list]:
    """ListEvents over busctl: the rows, as JSON arrays."""
    out = agentd.busctl(
        "--json=short",
        "call",
        "org.agentos.agentd1",
        "/org/agentos/agentd1",
        "org.agentos.agentd1.Manager",
        "ListEvents",
        "tuas",
        "0",
        "10000",
        str(len(types)),
        *types,
        user=user,
    ).stdout
    rows: list[list] = json.loads(out)["data"][0]
    return rows


def test_list_events_filters_by_type_in_agentd(agentd: Agentd) -> None:
    """ListEvents applies the shell patterns in agentd: only matching rows cross the bus."""
    agentd.create("it-events", user="alice")
    rows = list_events(agentd, "agent.create", "agentd.st*")
    actions = {row[3] for row in rows}
    assert "agent.create" in actions and actions <= {"agent.create", "agentd.start", "agentd.stop"}
    assert any(row[4] == "it-events" for row in rows)
    # as alice: only her own rows, still filtered
    mine = list_events(agentd, "agent.*", user="alice")
    assert mine and all(r[3].startswith("agent.") for r in mine)
    assert any(r[3] == "agent.create" and r[4] == "it-events" for r in mine)
    agentd.ctl("agent", "rm", "it-events", user="alice")

"""agentctl's command tree against a fake client: output, exit codes, error lines.

No bus is needed: commands get their client from Env.connect, which the tests
replace through CliRunner.invoke(obj=Env(...)).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from agentctl_fakes import DESCRIBE, NOBODY_UID, FakeClient, entry, local_iso
from click.testing import CliRunner
from sdbus.dbus_exceptions import DbusAccessDeniedError, DbusServiceUnknownError
from sdbus.sd_bus_internals import SdBusLibraryError, SdBusUnmappedMessageError

from agentctl import cli as cli_mod
from agentctl.app import Env
from agentctl.cli import cli
from agentctl.client import NOT_RUNNING, ClientError, translate
from agentctl.commands import audit as audit_cmd
from agentctl.marshal import limit_variants, unwrap
from agentctl.params import parse_size
from agentd import __version__
from agentd.api.errors import BY_NAME, PREFIX


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


def invoke(fake: FakeClient, *args: str, tty: bool = False, execvp: Any = None):
    env = Env(connect=lambda: fake, tty=tty)
    if execvp is not None:
        env.execvp = execvp
    return CliRunner(mix_stderr=False).invoke(cli, list(args), obj=env)


# -- agent list -------------------------------------------------------------------------
def test_list_plain_is_tab_separated_sorted_without_header(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "list")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"alpha\tops\tfailed\t61000\t{NOBODY_UID}",
        "scout\tresearch\tactive\t61001\troot",
    ]


def test_list_on_terminal_is_a_table(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "ls", tty=True)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["NAME", "TEMPLATE", "STATE", "UID", "OWNER"]
    assert "\t" not in r.output
    assert any(line.split() == ["scout", "research", "active", "61001", "root"] for line in lines)


def test_list_json(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "list", "--json")
    data = json.loads(r.output)
    assert [a["name"] for a in data] == ["alpha", "scout"]
    assert data[1]["owner"] == "root" and data[1]["owner_uid"] == 0
    assert data[0]["owner"] is None


# -- agent show -------------------------------------------------------------------------
def test_show_formats_fields(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "show", "scout")
    assert r.exit_code == 0, r.output
    fields = dict(line.split("\t", 1) for line in r.output.splitlines())
    assert fields["memory_max"] == "512 MiB"
    assert fields["memory_current"] == "12 MiB"
    assert fields["cpu_usage_nsec"] == "1.500 s"
    assert fields["cpu_quota"] == "150%"
    assert fields["owner_uid"] == "root (0)"
    assert fields["created_at"] == local_iso(1700000000.5)
    assert fields["active_state"] == "active (running)"
    assert fields["online"] == "yes"
    assert fields["future_field"] == "x"  # keys this version does not know still show
    assert "last_seen" not in fields  # missing means unknown: left out


def test_show_on_terminal_uses_labels(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "show", "scout", tty=True)
    assert "Memory max:" in r.output and "512 MiB" in r.output
    assert "Owner:" in r.output and "root (0)" in r.output


def test_show_json_is_raw(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "show", "scout", "--json")
    assert json.loads(r.output) == DESCRIBE


# -- errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            ClientError("no agent named 'x'", "NoSuchAgent"),
            1,
            "agentctl: no agent named 'x' (NoSuchAgent)",
        ),
        (
            ClientError("you do not own agent 'x'", "PermissionDenied", "denied"),
            77,
            "agentctl: you do not own agent 'x' (PermissionDenied)",
        ),
        (
            ClientError(NOT_RUNNING, kind="unavailable"),
            69,
            "agentctl: agentd is not running (start it with: systemctl start agentd)",
        ),
    ],
)
def test_errors_are_one_line_with_exit_code(
    fake: FakeClient, error: ClientError, code: int, line: str
) -> None:
    fake.fail["describe_agent"] = error
    r = invoke(fake, "agent", "show", "x")
    assert r.exit_code == code
    assert r.stderr == line + "\n"
    assert r.stdout == ""
    assert isinstance(r.exception, SystemExit)  # no traceback


def test_error_from_connect_is_reported(fake: FakeClient) -> None:
    def connect() -> FakeClient:
        raise ClientError(
            "cannot connect to the system bus: No such file or directory", kind="unavailable"
        )

    r = CliRunner(mix_stderr=False).invoke(cli, ["status"], obj=Env(connect=connect))
    assert r.exit_code == 69
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("agentctl: cannot connect")


def test_translate_typed_agentd_errors() -> None:
    e = translate(BY_NAME[PREFIX + "NoSuchAgent"]("no agent named 'x'"))
    assert (e.message, e.name, e.kind) == ("no agent named 'x'", "NoSuchAgent", "failed")
    e = translate(BY_NAME[PREFIX + "PermissionDenied"]("not yours"))
    assert (e.name, e.kind) == ("PermissionDenied", "denied")


def test_translate_bus_errors() -> None:
    e = translate(DbusServiceUnknownError("The name was not provided by any .service files"))
    assert (e.message, e.kind) == (NOT_RUNNING, "unavailable")
    e = translate(DbusAccessDeniedError("Rejected send message"))
    assert e.kind == "denied"
    e = translate(SdBusUnmappedMessageError("org.example.Weird", "odd\nthing"))
    assert (e.message, e.name, e.kind) == ("odd thing", "org.example.Weird", "failed")
    e = translate(
        SdBusLibraryError("File: x.c Line: 37. sd_bus_open_system returned error number: 2")
    )
    assert e.kind == "unavailable" and "No such file or directory" in e.message


# -- agent create / rm / start / logs ---------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("2g", 2 << 30),
        ("1.5G", 3 << 29),
        ("512MiB", 512 << 20),
        ("64K", 64 << 10),
        ("1048576", 1 << 20),
        (" 1T ", 1 << 40),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "12Q", "-1M", "0", "0M", "1.2.3G", "1 G B x"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_create_with_bad_size_is_a_usage_error(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "create", "x", "-t", "research", "--memory-max", "lots")
    assert r.exit_code == 2
    assert "Invalid value for '--memory-max'" in r.stderr
    assert fake.calls == []


def test_create_with_bad_cpu_quota_is_a_usage_error(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "create", "x", "-t", "research", "--cpu-quota", "half")
    assert r.exit_code == 2 and fake.calls == []


def test_create_passes_limits_and_prints_name(fake: FakeClient) -> None:
    r = invoke(
        fake,
        "agent",
        "create",
        "scout",
        "--template",
        "research",
        "--memory-max",
        "1G",
        "--cpu-quota",
        "150%",
        "--tasks-max",
        "64",
        "--start",
    )
    assert r.exit_code == 0, r.stderr
    assert r.output == "scout\n"
    assert fake.calls == [
        (
            "create_agent",
            "scout",
            "research",
            {"memory_max": 1 << 30, "cpu_quota": 150, "tasks_max": 64},
        ),
        ("start_agent", "scout", True),
    ]


def test_create_json_prints_description(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "create", "scout", "-t", "research", "--json")
    assert json.loads(r.output)["unit"] == "agent-scout.service"
    assert fake.calls[0] == ("create_agent", "scout", "research", {})


def test_create_requires_template(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "create", "scout")
    assert r.exit_code == 2 and fake.calls == []


def test_remove_alias_and_keep_home(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "remove", "scout", "--keep-home")
    assert r.exit_code == 0 and r.output == ""
    assert fake.calls == [("remove_agent", "scout", True)]
    invoke(fake, "agent", "rm", "scout")
    assert fake.calls[-1] == ("remove_agent", "scout", False)


class ForceClient(FakeClient):
    """The fake client, with the forced removal (RemoveAgentWithFlags) and an agent
    whose removal failed."""

    async def force_remove_agent(self, name: str) -> None:
        self._record("force_remove_agent", name)

    async def describe_agent(self, name: str) -> dict[str, Any]:
        info = await super().describe_agent(name)
        return dict(info, state="removing", removal_error="the home is too big to archive")


def test_remove_force_finishes_a_failed_removal() -> None:
    fake = ForceClient()
    r = invoke(fake, "agent", "show", "scout")
    fields = dict(line.split("\t", 1) for line in r.output.splitlines())
    assert fields["state"] == "removing"
    assert fields["removal_error"] == "the home is too big to archive"
    r = invoke(fake, "agent", "rm", "--force", "scout", "--json")
    assert r.exit_code == 0, r.output
    assert fake.calls[-1] == ("force_remove_agent", "scout")
    assert json.loads(r.output)["force"] is True
    fake.fail["force_remove_agent"] = ClientError(
        "only administrators may force a removal", "PermissionDenied", "denied"
    )
    r = invoke(fake, "agent", "rm", "--force", "scout")
    assert r.exit_code != 0 and "only administrators may force" in r.stderr


def test_remove_force_cannot_keep_the_home() -> None:
    fake = ForceClient()
    r = invoke(fake, "agent", "rm", "--force", "--keep-home", "scout")
    assert r.exit_code == 2 and fake.calls == []


def test_show_labels_the_removal_error_on_a_terminal() -> None:
    r = invoke(ForceClient(), "agent", "show", "scout", tty=True)
    assert "Removal error" in r.output and "too big to archive" in r.output


def test_start_and_stop(fake: FakeClient) -> None:
    assert invoke(fake, "agent", "start", "scout").exit_code == 0
    assert invoke(fake, "agent", "stop", "scout").exit_code == 0
    assert fake.calls == [("start_agent", "scout", True), ("stop_agent", "scout", True)]


def test_logs_execs_journalctl_after_checking_the_agent(fake: FakeClient) -> None:
    seen: list[tuple[str, list[str]]] = []
    r = invoke(
        fake,
        "agent",
        "logs",
        "scout",
        "--journalctl",
        "-f",
        "-n",
        "20",
        execvp=lambda file, argv: seen.append((file, argv)),
    )
    assert r.exit_code == 0, r.stderr
    assert fake.calls == [("get_agent", "scout")]
    ((file, argv),) = seen
    assert file == "journalctl"
    assert argv[:7] == [
        "journalctl",
        "-o",
        "short-iso",
        "-n",
        "20",
        "-f",
        "_SYSTEMD_UNIT=agent-scout.service",
    ]
    assert "+" in argv and "AGENT_NAME=scout" in argv


def test_logs_through_agentd_print_the_last_lines_and_follow(fake: FakeClient) -> None:
    r = invoke(fake, "agent", "logs", "scout", "-n", "20")
    assert r.exit_code == 0, r.stderr
    assert fake.calls == [("read_agent_journal", "scout", "", 20, 0)]
    first, second = r.stdout.splitlines()
    assert first.endswith(" agent-scout[42]: agent scout online") and first[:4].isdigit()
    assert second.endswith(": working")
    fake.calls.clear()
    r = invoke(fake, "agent", "logs", "scout", "-f", "--json")
    assert [json.loads(x)["message"] for x in r.stdout.splitlines()] == [
        "agent scout online",
        "working",
        "agent scout stopping",
    ]
    assert fake.calls[1] == ("read_agent_journal", "scout", "c2", 500, 15000)  # a long poll


def test_logs_refused_through_agentd(fake: FakeClient) -> None:
    fake.fail["read_agent_journal"] = ClientError(
        "alice may not manage x", "PermissionDenied", kind="denied"
    )
    r = invoke(fake, "agent", "logs", "x")
    assert r.exit_code == 77 and "PermissionDenied" in r.stderr, (r.exit_code, r.stderr)


def test_logs_of_unknown_agent_does_not_exec(fake: FakeClient) -> None:
    fake.fail["get_agent"] = ClientError("no agent named 'x'", "NoSuchAgent")
    seen: list[Any] = []
    r = invoke(fake, "agent", "logs", "x", "--journalctl", execvp=lambda *a: seen.append(a))
    assert r.exit_code == 1 and seen == []
    assert r.stderr == "agentctl: no agent named 'x' (NoSuchAgent)\n"


def test_logs_without_journalctl(fake: FakeClient) -> None:
    def missing(file: str, argv: list[str]) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    r = invoke(fake, "agent", "logs", "scout", "--journalctl", execvp=missing)
    assert r.exit_code == 69
    assert r.stderr == "agentctl: cannot run journalctl: No such file or directory\n"


# -- templates --------------------------------------------------------------------------
def test_template_list_plain_and_json(fake: FakeClient) -> None:
    r = invoke(fake, "template", "list")
    assert r.output == "research\toffline\tread,summarise\tReads and summarises\n"
    r = invoke(fake, "template", "list", "--json")
    assert json.loads(r.output)[0]["capabilities"] == ["read", "summarise"]


def test_template_show_escapes_newlines_in_plain_output(fake: FakeClient) -> None:
    r = invoke(fake, "template", "show", "research")
    fields = dict(line.split("\t", 1) for line in r.output.splitlines())
    assert fields["memory_max"] == "1024 MiB"
    assert fields["system_prompt"] == "line one\\nline two"


# -- audit ------------------------------------------------------------------------------
def test_audit_lists_the_newest_entries_across_pages(
    fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_cmd, "AUDIT_PAGE", 3)
    r = invoke(fake, "audit", "-n", "2")
    assert r.exit_code == 0, r.stderr
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["6", "7"]
    assert r.output.splitlines()[0].split("\t")[1:] == [
        local_iso(1700000006.0),
        "root",
        "agent.create",
        "scout",
        "ok",
        "template=t",
    ]
    lists = [c[1:] for c in fake.calls if c[0] == "list_events"]
    assert lists == [(5, 2, ())]  # straight to AuditHead - 2, no scan from the start


def test_audit_tail_scans_when_the_caller_sees_fewer_rows(
    fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user sees only their rows: AuditHead counts everyone's, so near the head
    there may be too few; then the CLI reads back in ever wider windows."""
    monkeypatch.setattr(audit_cmd, "AUDIT_PAGE", 3)

    async def head() -> int:
        return 100

    fake.audit_head = head  # type: ignore[method-assign]
    r = invoke(fake, "audit", "-n", "2")
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["6", "7"]
    lists = [c[1] for c in fake.calls if c[0] == "list_events"]
    assert lists == [98, 94, 86, 70, 38, 0, 3, 6]  # (98, 100], (94, 98], ... (0, 38]


def test_audit_after_and_json(fake: FakeClient) -> None:
    r = invoke(fake, "audit", "--after", "2", "--limit", "3", "--json")
    assert [e["seq"] for e in json.loads(r.output)] == [3, 4, 5]


def test_audit_follow_prints_json_lines(fake: FakeClient) -> None:
    fake.live = [entry(8), entry(9, result="denied")]
    r = invoke(fake, "audit", "-f", "-n", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["seq"] for line in r.output.splitlines()] == [7, 8, 9]
    assert ("follow_events", 7, ()) in fake.calls


def test_audit_verify_ok(fake: FakeClient) -> None:
    r = invoke(fake, "audit", "verify")
    assert r.exit_code == 0
    assert "intact" in r.output and "7" in r.output


def test_audit_verify_broken_exits_1(fake: FakeClient) -> None:
    fake.verdict = {"ok": False, "checked": 3, "message": "entry 4: hash mismatch"}
    r = invoke(fake, "audit", "verify")
    assert r.exit_code == 1
    assert "BROKEN" in r.output and "entry 4: hash mismatch" in r.output
    r = invoke(fake, "audit", "verify", "--json")
    assert r.exit_code == 1 and json.loads(r.output)["ok"] is False


def test_audit_verify_denied(fake: FakeClient) -> None:
    fake.fail["verify_audit"] = ClientError(
        "only administrators may verify the audit log", "PermissionDenied", "denied"
    )
    r = invoke(fake, "audit", "verify")
    assert r.exit_code == 77


# -- status, version --------------------------------------------------------------------
def test_status_plain_and_json(fake: FakeClient) -> None:
    r = invoke(fake, "status")
    fields = dict(line.split("\t", 1) for line in r.output.splitlines())
    assert fields["version"] == "0.1.0"
    assert fields["started"] == local_iso(1_700_000_000)
    assert int(fields["uptime_sec"]) > 0
    assert fields["agents"] == "2" and fields["online"] == "1"
    assert fields["config.uid_min"] == "61000"
    data = json.loads(invoke(fake, "status", "--json").output)
    assert data["config"]["admin_group"] == "agentadm" and data["uptime_sec"] > 0


def test_status_on_terminal(fake: FakeClient) -> None:
    r = invoke(fake, "status", tty=True)
    assert "Uptime:" in r.output and "uid_min" in r.output


def test_version(fake: FakeClient) -> None:
    r = invoke(fake, "--version")
    assert r.output == f"agentctl {__version__}\n"


# -- client helpers ---------------------------------------------------------------------
def test_limit_variants() -> None:
    assert limit_variants({"memory_max": 1 << 30, "cpu_quota": 50, "tasks_max": 10}) == {
        "memory_max": ("t", 1 << 30),
        "cpu_quota": ("u", 50),
        "tasks_max": ("t", 10),
    }
    assert limit_variants({"memory_max": "512M"}) == {"memory_max": ("s", "512M")}


def test_unwrap_nested_variants() -> None:
    assert unwrap({"a": ("s", "x"), "b": ("a{sv}", {"c": ("t", 1)}), "d": ("as", ["y"])}) == {
        "a": "x",
        "b": {"c": 1},
        "d": ["y"],
    }


def test_translate_activation_failure() -> None:
    e = translate(
        SdBusUnmappedMessageError(
            "org.freedesktop.systemd1.UnitMasked", "Unit agentd.service is masked."
        )
    )
    assert e.kind == "unavailable" and e.name == "org.freedesktop.systemd1.UnitMasked"


def test_main_returns_the_exit_status() -> None:
    assert cli_mod.main(["--version"]) == 0
    assert cli_mod.main(["agent", "create"]) == 2  # usage error: no bus needed


# -- jobs ---------------------------------------------------------------------------------
def test_start_waits_for_the_job_unless_no_block(fake: FakeClient) -> None:
    assert invoke(fake, "agent", "start", "scout").exit_code == 0
    assert invoke(fake, "agent", "start", "--no-block", "scout").exit_code == 0
    assert [c for c in fake.calls if c[0] == "start_agent"] == [
        ("start_agent", "scout", True),
        ("start_agent", "scout", False),
    ]


def test_a_failed_start_job_is_one_line_and_exit_1(fake: FakeClient) -> None:
    fake.job_result = "failed"
    r = invoke(fake, "agent", "start", "scout")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "agentctl: start of agent-scout.service ended with job result "
        "'failed'; see: agentctl agent logs scout (JobFailed)"
    )
    r = invoke(fake, "agent", "create", "scout", "-t", "writing", "--start")
    assert r.exit_code == 1 and "(JobFailed)" in r.stderr

"""The D-Bus marshalling of agentd/api: a{sv} variants (api/marshal.py), the
typed list rows (api/rows.py) against the interface definitions
(api/interfaces.py), and what the Manager's describe() and audit_row() and the
Tasks interface's task_row() hand to sdbus, checked value by value against the
D-Bus signature they go out under.
"""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from sdbus import DbusInterfaceCommonAsync
from sdbus.dbus_proxy_async_interface_base import DBUS_CLASS_TO_META
from sdbus.dbus_proxy_async_method import DbusMethodAsync
from world import ALICE, World

from agentd.api import interfaces, rows
from agentd.api.manager import audit_row, describe
from agentd.api.marshal import plain, usec, variants
from agentd.api.rows import (
    ALL_ROWS,
    AgentRow,
    ArtifactRow,
    AuditRow,
    ProjectRow,
    QuotaRow,
    TaskEventRow,
    TaskRow,
    TemplateRow,
    UsageRow,
)
from agentd.api.tasks import task_row
from agentd.audit import Entry
from agentd.policy import Caller
from agentd.tasks.queue import TaskQueue
from agentd.units import UnitStatus


# ------------------------------------------------------------------ D-Bus signatures
def complete_types(signature: str) -> list[str]:
    """ "sa{sv}(tu)" -> ["s", "a{sv}", "(tu)"]; ValueError if unbalanced."""
    out, i = [], 0
    while i < len(signature):
        end = _end(signature, i)
        out.append(signature[i:end])
        i = end
    return out


def _end(sig: str, i: int) -> int:
    if i >= len(sig):
        raise ValueError(f"incomplete signature {sig!r}")
    if sig[i] == "a":
        return _end(sig, i + 1)
    if sig[i] in "({":
        close = {"(": ")", "{": "}"}[sig[i]]
        i += 1
        while i < len(sig) and sig[i] != close:
            i = _end(sig, i)
        if i >= len(sig):
            raise ValueError(f"unbalanced signature {sig!r}")
        return i + 1
    if sig[i] in "ybnqiuxtdsogvh":
        return i + 1
    raise ValueError(f"unknown type {sig[i]!r} in {sig!r}")


INT_RANGES = {
    "y": (0, 2**8),
    "n": (-(2**15), 2**15),
    "q": (0, 2**16),
    "i": (-(2**31), 2**31),
    "u": (0, 2**32),
    "x": (-(2**63), 2**63),
    "t": (0, 2**64),
}


def conforms(value: Any, sig: str) -> bool:
    """Whether VALUE is what sdbus marshals as the complete type SIG."""
    if sig in INT_RANGES:
        lo, hi = INT_RANGES[sig]
        return isinstance(value, int) and not isinstance(value, bool) and lo <= value < hi
    if sig == "b":
        return isinstance(value, bool)
    if sig == "d":
        return isinstance(value, float)
    if sig in ("s", "g"):
        return isinstance(value, str)
    if sig == "o":
        return isinstance(value, str) and value.startswith("/")
    if sig.startswith("a{"):
        key, val = complete_types(sig[2:-1])
        return isinstance(value, dict) and all(
            conforms(k, key) and conforms(v, val) for k, v in value.items()
        )
    if sig.startswith("a"):
        return isinstance(value, list) and all(conforms(v, sig[1:]) for v in value)
    if sig.startswith("("):
        members = complete_types(sig[1:-1])
        return (
            isinstance(value, tuple)
            and len(value) == len(members)
            and all(conforms(v, m) for v, m in zip(value, members, strict=True))
        )
    if sig == "v":
        return isinstance(value, tuple) and len(value) == 2 and conforms(value[1], value[0])
    raise AssertionError(f"no check for {sig!r}")


def test_the_signature_helpers_themselves() -> None:
    assert complete_types("sa{sv}(tu)as") == ["s", "a{sv}", "(tu)", "as"]
    assert complete_types("(sssuuo)") == ["(sssuuo)"]
    with pytest.raises(ValueError):
        complete_types("(ss")
    assert conforms(("a", 1, True), "(stb)")
    assert not conforms(("a", True, True), "(stb)")  # a bool is no count
    assert not conforms(("a", -1, True), "(stb)")
    assert not conforms(("a", 1), "(stb)")
    assert not conforms(3, "d") and conforms(3.0, "d")
    assert conforms({"k": ("at", [1, 2])}, "a{sv}")
    assert not conforms({"k": ("at", ["1"])}, "a{sv}")


# ------------------------------------------------------------------ marshal: variants
@pytest.mark.parametrize(
    ("value", "variant"),
    [
        (True, ("b", True)),
        (False, ("b", False)),
        (0, ("t", 0)),
        (7, ("t", 7)),
        (2**63, ("t", 2**63)),
        (-1, ("x", -1)),
        (-(2**40), ("x", -(2**40))),
        (1.5, ("d", 1.5)),
        (-0.25, ("d", -0.25)),
        ("text", ("s", "text")),
        ("", ("s", "")),
        (Path("/home/agents/a1"), ("s", "/home/agents/a1")),
        ([1, 2, 3], ("at", [1, 2, 3])),
        (["a", "b"], ("as", ["a", "b"])),
        ([], ("as", [])),
        ([True, False], ("as", ["True", "False"])),  # bools are not counts
        (["a", 1], ("as", ["a", "1"])),
    ],
    ids=repr,
)
def test_variants_types_each_value(value: object, variant: tuple[str, object]) -> None:
    got = variants({"key": value})
    assert got == {"key": variant}
    assert type(got["key"][1]) is type(variant[1])
    assert conforms(got["key"], "v")


def test_variants_leave_none_out_and_keep_the_rest() -> None:
    got = variants({"a": None, "b": 0, "c": "", "d": False, "e": []})
    assert got == {"b": ("t", 0), "c": ("s", ""), "d": ("b", False), "e": ("as", [])}


def test_plain_unwraps_an_a_sv() -> None:
    wire = {
        "wip": ("u", 2),
        "tools": ("as", ["files", "shell"]),
        "temperature": ("d", 0.5),
        "ok": ("b", True),
        "ids": ("at", [4, 5]),
        "name": ("s", "x"),
    }
    assert plain(wire) == {
        "wip": 2,
        "tools": ["files", "shell"],
        "temperature": 0.5,
        "ok": True,
        "ids": [4, 5],
        "name": "x",
    }
    assert plain({}) == {}


def test_plain_undoes_variants() -> None:
    info = {"n": 3, "neg": -3, "f": 2.5, "b": True, "s": "x", "ids": [1, 2], "names": ["a"]}
    assert plain(variants(info)) == info


def test_usec_is_microseconds_and_zero_for_never() -> None:
    assert usec(1.5) == 1_500_000 and isinstance(usec(1.5), int)
    assert usec(None) == 0
    assert usec(0) == 0
    assert conforms(usec(1.7e9), "t")


# ------------------------------------------------------------------ rows vs interfaces
# Each row type and the list methods that return it (rows.py's docstrings).
ROW_METHODS: dict[type, tuple[str, ...]] = {
    AgentRow: ("Manager.ListAgents",),
    TemplateRow: ("Manager.ListTemplates",),
    AuditRow: ("Manager.ListAuditEntries", "Manager.ListEvents"),
    TaskRow: ("Tasks.ListTasks",),
    ProjectRow: ("Tasks.ListProjects",),
    ArtifactRow: ("Tasks.ListArtifacts",),
    TaskEventRow: ("Tasks.ListTaskEvents",),
    QuotaRow: ("Model.ListQuotas",),
    UsageRow: ("Model.ListUsage",),
}
PY_TYPES: dict[str, Any] = {
    "s": str,
    "o": str,
    "u": int,
    "t": int,
    "x": int,
    "d": float,
    "b": bool,
    "as": list[str],
    "at": list[int],
}


def interface_classes() -> list[type]:
    return [
        c
        for c in vars(interfaces).values()
        if inspect.isclass(c)
        and issubclass(c, DbusInterfaceCommonAsync)
        and c is not DbusInterfaceCommonAsync
    ]


def methods() -> dict[str, DbusMethodAsync]:
    """Every D-Bus method of every interface, as "Interface.Method"
    (org.agentos.agentd1.Manager.ListAgents is "Manager.ListAgents")."""
    found: dict[str, DbusMethodAsync] = {}
    for cls in interface_classes():
        iface = DBUS_CLASS_TO_META[cls].interface_name
        assert iface.startswith(interfaces.BUS_NAME + ".")
        for member in vars(cls).values():
            if isinstance(member, DbusMethodAsync):
                name = f"{iface.removeprefix(interfaces.BUS_NAME + '.')}.{member.method_name}"
                assert name not in found, name
                found[name] = member
    return found


def test_there_are_interfaces_and_list_methods_to_check() -> None:
    assert len(interface_classes()) == 12
    assert {
        "Approvals.ListApprovals",
        "Manager.ListAgents",
        "Tasks.ListTasks",
        "Model.ListUsage",
        "Agent.Describe",
        "Model.Describe",
    } <= set(methods())


def test_all_rows_lists_every_row_type() -> None:
    declared = {
        c
        for c in vars(rows).values()
        if inspect.isclass(c) and issubclass(c, tuple) and hasattr(c, "_fields")
    }
    assert set(ALL_ROWS) == declared == set(ROW_METHODS)


@pytest.mark.parametrize("row", ALL_ROWS, ids=lambda r: r.__name__)
def test_a_rows_signature_is_its_list_methods_struct(row: type) -> None:
    found = methods()
    for name in ROW_METHODS[row]:
        assert found[name].result_signature == "a" + row.SIGNATURE, name


def test_every_list_method_of_structs_has_its_row_type() -> None:
    """Found by result signature: every method returning an array of structs."""
    by_signature = {"a" + r.SIGNATURE: r for r in ALL_ROWS}
    assert len(by_signature) == len(ALL_ROWS)  # no two rows share a struct
    listing = {
        name: m.result_signature
        for name, m in methods().items()
        if m.result_signature.startswith("a(")
    }
    assert set(listing) == {n for names in ROW_METHODS.values() for n in names}
    for name, signature in listing.items():
        assert name in ROW_METHODS[by_signature[signature]], name


@pytest.mark.parametrize("row", ALL_ROWS, ids=lambda r: r.__name__)
def test_a_rows_fields_are_the_structs_complete_types(row: type) -> None:
    signature = row.SIGNATURE
    assert signature.startswith("(") and signature.endswith(")")
    assert complete_types(signature) == [signature]  # one struct, balanced
    members = complete_types(signature[1:-1])
    assert "SIGNATURE" not in row._fields
    assert len(row._fields) == len(members)
    hints = typing.get_type_hints(row)
    for field, member in zip(row._fields, members, strict=True):
        assert hints[field] == PY_TYPES[member], (field, member)


def test_rows_builds_typed_rows_from_replies() -> None:
    reply = [("a1", "sandbox", "active", 70000, 1000, "/org/agentos/agentd1/agent/a1")]
    (got,) = rows.rows(AgentRow, reply)
    assert isinstance(got, AgentRow) and got.uid == 70000 and got.path.endswith("/a1")
    assert got == reply[0]  # still the tuple sdbus sends and receives
    assert conforms(got, AgentRow.SIGNATURE)


SAMPLES = [  # one value of each row, as the services build them
    AgentRow("a1", "sandbox", "active", 70000, 1000, "/org/agentos/agentd1/agent/a1"),
    TemplateRow("sandbox", "d", "offline", ["code"]),
    AuditRow(1, 1.5, 0, "agent.create", "", 0, "ok", "{}", "ab"),
    TaskRow(1, "t", "pending", "medium", "", "", 0, 3, 1.5),
    ProjectRow("p", "", 1000, 0),
    ArtifactRow("out", "text/plain", "artifacts/out", 3, "ab"),
    TaskEventRow(1, 1.5, 1000, "task.created", "ok", "{}"),
    QuotaRow("agent", "a1", 0, 0, "daily", 1.5, "config"),
    UsageRow("2025-01-01", "a1", 1000, 1, 2, 3),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_a_well_typed_row_conforms_to_its_signature(sample: tuple) -> None:
    assert conforms(sample, type(sample).SIGNATURE)
    assert conforms([sample], "a" + type(sample).SIGNATURE)


# ------------------------------------------------------------------ what the services send
DESCRIBE_TYPES = {  # docs/dbus-api.md, DescribeAgent: every key, and what it goes out as
    "id": "t",
    "name": "s",
    "uid": "t",
    "gid": "t",
    "owner_uid": "t",
    "template": "s",
    "profile": "s",
    "state": "s",
    "home": "s",
    "unit": "s",
    "created_at": "d",
    "last_seen": "d",
    "memory_max": "t",
    "cpu_quota": "t",
    "tasks_max": "t",
    "online": "b",
    "active_state": "s",
    "sub_state": "s",
    "main_pid": "t",
    "memory_current": "t",
    "cpu_usage_nsec": "t",
    "tasks_current": "t",
}


def test_describe_sends_every_documented_key_typed(w: World) -> None:
    w.run(w.reg.create(ALICE, "a1", "sandbox"))
    agent = w.reg.find("a1")
    w.reg.register_runtime(Caller(agent.uid, frozenset({agent.uid})))  # sets last_seen
    agent = w.reg.find("a1")
    assert agent.last_seen
    info = describe(agent, UnitStatus("active", "running", 1234, 1 << 20, 10**9, 3), True)
    assert conforms(info, "a{sv}")
    assert {k: sig for k, (sig, _v) in info.items()} == DESCRIBE_TYPES
    got = plain(info)
    assert got["name"] == "a1" and got["uid"] == agent.uid and got["online"] is True
    assert got["home"] == str(agent.home) and got["unit"] == "agent-a1.service"
    assert (got["active_state"], got["sub_state"], got["main_pid"]) == ("active", "running", 1234)
    assert (got["memory_current"], got["cpu_usage_nsec"], got["tasks_current"]) == (
        1 << 20,
        10**9,
        3,
    )


def test_describe_leaves_unknown_values_out(w: World) -> None:
    w.run(w.reg.create(ALICE, "a1", "sandbox"))
    agent = w.reg.find("a1")
    assert agent.last_seen is None  # never ran
    info = describe(agent, UnitStatus(), False)
    assert conforms(info, "a{sv}")
    assert set(info) == set(DESCRIBE_TYPES) - {
        "last_seen",
        "memory_current",
        "cpu_usage_nsec",
        "tasks_current",
    }
    assert info["online"] == ("b", False)
    assert info["main_pid"] == ("t", 0)
    assert all(info[k][0] == DESCRIBE_TYPES[k] for k in info)


def test_audit_row_is_an_audit_row_of_the_right_types(w: World) -> None:
    w.audit.append("agentd.start", actor_uid=0, version="1", repaired=0)
    w.run(w.reg.create(ALICE, "a1", "sandbox"))
    entries = w.audit.entries(limit=100)
    assert {e.agent is None for e in entries} == {True, False}  # with and without an agent
    for e in entries:
        row = audit_row(e)
        assert isinstance(row, AuditRow)
        assert conforms(row, AuditRow.SIGNATURE), row
        assert (row.seq, row.ts, row.actor_uid, row.action, row.result, row.hash) == (
            e.seq,
            e.ts,
            e.actor_uid,
            e.action,
            e.result,
            e.hash,
        )
        assert (row.agent, row.agent_uid) == (e.agent or "", e.agent_uid or 0)
        assert json.loads(row.detail) == e.detail
        assert row.detail == json.dumps(e.detail, sort_keys=True)  # stable text


def test_audit_row_detail_text_does_not_depend_on_key_order() -> None:
    def entry(detail: dict[str, Any]) -> Entry:
        return Entry(7, 1.5, 1000, "task.created", "a1", 70000, "ok", detail, "00", "ab", 3)

    one, other = audit_row(entry({"b": 1, "a": [2]})), audit_row(entry({"a": [2], "b": 1}))
    assert one == other
    assert one == (7, 1.5, 1000, "task.created", "a1", 70000, "ok", '{"a": [2], "b": 1}', "ab")


def test_task_row_is_a_task_row_of_the_right_types(w: World) -> None:
    q = TaskQueue(w.store, w.reg)
    w.run(w.reg.create(ALICE, "a1", "sandbox"))
    q.create_project(ALICE, "docs")
    free = q.submit(ALICE, {"title": "free"}).id
    pinned = q.submit(ALICE, {"title": "pinned", "agent": "a1", "project": "docs"}).id
    for assigned in ("", "a1"):  # no agent yet ("", not None), then a1
        if assigned:
            q.assign()
        for tid, title, project in ((free, "free", ""), (pinned, "pinned", "docs")):
            row = task_row(q.find(tid))
            assert isinstance(row, TaskRow)
            assert conforms(row, TaskRow.SIGNATURE), row
            assert (row.id, row.title, row.status, row.project, row.agent) == (
                tid,
                title,
                "pending",
                project,
                assigned,
            )

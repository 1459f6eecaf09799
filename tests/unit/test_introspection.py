"""The introspection XML that `make interfaces` installs in
/usr/share/dbus-1/interfaces, checked against the sdbus classes it is made from,
and the polkit action file checked against polkit's DTD.

The expected members come from what sdbus itself registers for each class
(the metadata it exports to sd-bus), not from the renderer's own walk, so a
member the renderer missed, or a signature or argument name it garbled, fails
here; tests/integration/test_dbus_introspection.py compares the installed files
with what the running daemon introspects.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from sdbus import (
    DbusDeprecatedFlag,
    DbusHiddenFlag,
    DbusInterfaceCommonAsync,
    DbusNoReplyFlag,
    DbusPropertyConstFlag,
    DbusPropertyEmitsChangeFlag,
    DbusUnprivilegedFlag,
    dbus_method_async,
    dbus_property_async,
    dbus_signal_async,
)
from sdbus.dbus_proxy_async_interface_base import DBUS_CLASS_TO_META
from sdbus.dbus_proxy_async_method import DbusMethodAsync
from sdbus.dbus_proxy_async_property import DbusPropertyAsync
from sdbus.dbus_proxy_async_signal import DbusSignalAsync

from agentd.api import interfaces
from agentd.api.interfaces.approvals import APPROVALS_INTERFACE
from agentd.api.interfaces.goals import GOALS_INTERFACE
from agentd.api.interfaces.memory import MEMORY_INTERFACE
from agentd.api.interfaces.observe import OBSERVE_INTERFACE
from agentd.api.interfaces.sessions import SESSIONS_INTERFACE
from agentd.api.interfaces.teams import MESSAGES_INTERFACE, TEAMS_INTERFACE
from agentd.api.introspection import (
    DOC_ANNOTATION,
    INTERFACE_CLASSES,
    interface_name,
    main,
    reflow,
    render,
    split_signature,
)

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policies" / "org.agentos.agentd1.policy"
POLKIT_DTD = Path("/usr/share/polkit-1/policyconfig-1.dtd")

Args = tuple[tuple[str, str | None, str | None], ...]  # (type, name, direction)


# ------------------------------------------------------------------ what sdbus exports
def exported(cls: type) -> dict[str, Any]:
    """{D-Bus member name: sdbus member} as sdbus maps them for export_to_dbus."""
    meta = DBUS_CLASS_TO_META[cls]
    return {dbus: vars(cls)[attr] for attr, dbus in meta.python_attr_to_dbus_member.items()}


def expected(cls: type) -> dict[str, dict[str, Any]]:
    methods: dict[str, Args] = {}
    properties: dict[str, tuple[str, str]] = {}
    signals: dict[str, Args] = {}
    for name, m in exported(cls).items():
        if isinstance(m, DbusMethodAsync):
            # strict: every argument has a name (sd-bus would leave it out otherwise)
            ins = zip(split_signature(m.input_signature), m.input_args_names, strict=True)
            outs = zip(split_signature(m.result_signature), m.result_args_names, strict=True)
            methods[name] = (*((t, n, "in") for t, n in ins), *((t, n, "out") for t, n in outs))
        elif isinstance(m, DbusPropertyAsync):
            properties[name] = (m.property_signature, "read")
        elif isinstance(m, DbusSignalAsync):
            sig = zip(split_signature(m.signal_signature), m.args_names, strict=True)
            signals[name] = tuple((t, n, None) for t, n in sig)
    return {"method": methods, "property": properties, "signal": signals}


def parsed(xml: str) -> ET.Element:
    node = ET.fromstring(xml)
    assert node.tag == "node"
    (iface,) = node
    assert iface.tag == "interface"
    return iface


def members(iface: ET.Element) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {"method": {}, "property": {}, "signal": {}}
    for el in iface:
        if el.tag == "annotation":
            continue
        assert el.tag in found, el.tag
        name = el.get("name")
        assert name and name not in found[el.tag], f"{el.tag} {name} twice"
        if el.tag == "property":
            assert set(el.attrib) == {"name", "type", "access"}
            found["property"][name] = (el.get("type"), el.get("access"))
        else:
            args = [a for a in el if a.tag == "arg"]
            assert all(a.tag in ("arg", "annotation") for a in el)
            found[el.tag][name] = tuple(
                (a.get("type"), a.get("name"), a.get("direction")) for a in args
            )
    return found


# ------------------------------------------------------------------ the six interfaces
def test_every_interface_class_is_rendered() -> None:
    declared = {
        obj
        for obj in vars(interfaces).values()
        if inspect.isclass(obj)
        and issubclass(obj, DbusInterfaceCommonAsync)
        and obj is not DbusInterfaceCommonAsync
    }
    assert set(INTERFACE_CLASSES) == declared
    assert [interface_name(c) for c in INTERFACE_CLASSES] == [
        interfaces.MANAGER_INTERFACE,
        interfaces.RUNTIME_INTERFACE,
        interfaces.TASKS_INTERFACE,
        interfaces.AGENT_INTERFACE,
        interfaces.MODEL_INTERFACE,
        APPROVALS_INTERFACE,  # issue 12: approval gates
        MEMORY_INTERFACE,  # issue 13: memory
        SESSIONS_INTERFACE,  # issue 13: chat sessions
        GOALS_INTERFACE,  # issue 14: goals
        TEAMS_INTERFACE,  # issue 15: teams
        MESSAGES_INTERFACE,  # issue 15: messages
        OBSERVE_INTERFACE,  # issue 16: top, agent ps, metrics
    ]


@pytest.mark.parametrize("cls", INTERFACE_CLASSES, ids=lambda c: c.__name__)
def test_xml_has_exactly_the_members_of_the_class(cls: type) -> None:
    iface = parsed(render(cls))
    assert iface.get("name") == DBUS_CLASS_TO_META[cls].interface_name
    want = expected(cls)
    got = members(iface)
    for kind in ("method", "property", "signal"):
        assert got[kind] == want[kind], kind
    assert sum(map(len, got.values())) == len(exported(cls))


@pytest.mark.parametrize("cls", INTERFACE_CLASSES, ids=lambda c: c.__name__)
def test_docstrings_and_flags_become_annotations(cls: type) -> None:
    iface = parsed(render(cls))
    by_name = {(el.tag, el.get("name")): el for el in iface if el.tag != "annotation"}
    for name, m in exported(cls).items():
        tag = (
            "method"
            if isinstance(m, DbusMethodAsync)
            else "property"
            if isinstance(m, DbusPropertyAsync)
            else "signal"
        )
        notes = {a.get("name"): a.get("value") for a in by_name[tag, name] if a.tag == "annotation"}
        assert notes.get(DOC_ANNOTATION) == (reflow(m.__doc__) if m.__doc__ else None), name
        # agentd's methods are all unprivileged (agentd authorizes per caller UID),
        # and its properties emit no PropertiesChanged: what sd-bus says of them.
        assert "org.freedesktop.systemd1.Privileged" not in notes, name
        if tag == "property":
            assert notes["org.freedesktop.DBus.Property.EmitsChangedSignal"] == "false", name
    iface_doc = {a.get("name"): a.get("value") for a in iface if a.tag == "annotation"}
    assert iface_doc.get(DOC_ANNOTATION) == (reflow(cls.__doc__) if cls.__doc__ else None)


def test_manager_spot_check() -> None:
    """A few members written out by hand, as docs/dbus-api.md gives them."""
    got = members(parsed(render(interfaces.ManagerInterface)))
    assert got["method"]["CreateAgent"] == (
        ("s", "name", "in"),
        ("s", "template", "in"),
        ("a{sv}", "limits", "in"),
        ("o", "agent", "out"),
    )
    assert got["method"]["ListAgents"] == (("a(sssuuo)", "agents", "out"),)
    assert got["method"]["VerifyAudit"] == (
        ("b", "ok", "out"),
        ("t", "checked", "out"),
        ("s", "message", "out"),
    )
    assert got["property"]["AuditHead"] == ("t", "read")
    assert got["signal"]["JobRemoved"] == (
        ("s", "name", None),
        ("o", "job", None),
        ("s", "operation", None),
        ("s", "result", None),
    )


def test_main_writes_one_file_per_interface(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{interface_name(c)}.xml" for c in INTERFACE_CLASSES)
    for cls in INTERFACE_CLASSES:
        text = (tmp_path / "out" / f"{interface_name(cls)}.xml").read_text()
        assert text == render(cls)
        assert text.startswith(
            '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"'
        )
    assert len(capsys.readouterr().out.splitlines()) == len(INTERFACE_CLASSES)
    assert main([]) == 2


def test_main_runs_as_a_module(tmp_path: Path) -> None:
    """`python3 -m agentd.api.introspection OUTDIR`, as `make interfaces` runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run(
        [sys.executable, "-m", "agentd.api.introspection", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert len(list(tmp_path.glob("org.agentos.agentd1.*.xml"))) == len(INTERFACE_CLASSES)


# ------------------------------------------------------------------ the renderer itself
def test_split_signature() -> None:
    assert split_signature("") == []
    assert split_signature("sa{sv}(tu)") == ["s", "a{sv}", "(tu)"]
    assert split_signature("a(sssas)aa{s(ii)}hvay") == ["a(sssas)", "aa{s(ii)}", "h", "v", "ay"]
    for bad in ("a", "(s", "s)", "{sv", "(s}"):
        with pytest.raises(ValueError):
            split_signature(bad)


def test_reflow_keeps_paragraphs() -> None:
    assert (
        reflow("""First line
        goes on.

        Second paragraph.
        """)
        == "First line goes on.\n\nSecond paragraph."
    )


class _FlagsProbe(DbusInterfaceCommonAsync, interface_name="org.agentos.test.Probe"):
    """Every sd-bus flag that changes introspection, on one made-up interface."""

    @dbus_method_async("s", "", method_name="Privileged", input_args_names=("x",))
    async def privileged(self, x: str) -> None:
        raise NotImplementedError

    @dbus_method_async(
        "",
        "",
        flags=DbusUnprivilegedFlag | DbusNoReplyFlag | DbusDeprecatedFlag,
        method_name="Fire",
    )
    async def fire(self) -> None:
        raise NotImplementedError

    @dbus_method_async("", "", flags=DbusHiddenFlag | DbusUnprivilegedFlag, method_name="Hidden")
    async def hidden(self) -> None:
        raise NotImplementedError

    @dbus_property_async("s", flags=DbusPropertyConstFlag, property_name="Const")
    def const(self) -> str:
        raise NotImplementedError

    @dbus_property_async("u", flags=DbusPropertyEmitsChangeFlag, property_name="Writable")
    def writable(self) -> int:
        raise NotImplementedError

    @writable.setter
    def _writable_set(self, value: int) -> None:
        raise NotImplementedError

    @dbus_signal_async("as", signal_name="Happened", signal_args_names=("what",))
    def happened(self) -> list[str]:
        raise NotImplementedError


def test_flags_become_the_annotations_sd_bus_writes() -> None:
    iface = parsed(render(_FlagsProbe))

    def notes(tag: str, name: str) -> dict[str | None, str | None]:
        (el,) = (e for e in iface if e.tag == tag and e.get("name") == name)
        return {a.get("name"): a.get("value") for a in el if a.tag == "annotation"}

    assert notes("method", "Privileged") == {"org.freedesktop.systemd1.Privileged": "true"}
    assert notes("method", "Fire") == {
        "org.freedesktop.DBus.Deprecated": "true",
        "org.freedesktop.DBus.Method.NoReply": "true",
    }
    assert not [e for e in iface if e.get("name") == "Hidden"]
    assert notes("property", "Const") == {
        "org.freedesktop.DBus.Property.EmitsChangedSignal": "const"
    }
    # a writable property: readwrite, and Privileged without the unprivileged flag
    (writable,) = (e for e in iface if e.get("name") == "Writable")
    assert writable.get("access") == "readwrite"
    assert notes("property", "Writable") == {"org.freedesktop.systemd1.Privileged": "true"}
    assert notes("signal", "Happened") == {}
    assert members(iface)["signal"] == {"Happened": (("as", "what", None),)}


# ------------------------------------------------------------------ the polkit actions
ACTIONS = (
    "org.agentos.agentd1.manage-agents",
    "org.agentos.agentd1.read-audit",
    "org.agentos.agentd1.set-quota",
    "org.agentos.agentd1.reload-model",
)


def test_polkit_policy_declares_the_actions_with_admin_defaults() -> None:
    root = ET.parse(POLICY).getroot()
    assert root.tag == "policyconfig"
    assert root.findtext("vendor") == "agentd"
    actions = {a.get("id"): a for a in root.findall("action")}
    assert tuple(actions) == ACTIONS
    for action_id, a in actions.items():
        assert (a.findtext("description") or "").strip(), action_id
        assert (a.findtext("message") or "").startswith("Authentication is required"), action_id
        d = a.find("defaults")
        assert d is not None, action_id
        assert {c.tag: c.text for c in d} == {
            "allow_any": "no",
            "allow_inactive": "no",
            "allow_active": "auth_admin_keep",
        }


@pytest.mark.skipif(
    shutil.which("xmllint") is None or not POLKIT_DTD.exists(),
    reason="xmllint or polkit's DTD missing (tools/deps.sh installs both)",
)
def test_polkit_policy_is_valid_against_polkits_dtd() -> None:
    r = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(POLKIT_DTD), str(POLICY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr

"""The installed interface descriptions and polkit actions, against the running
daemon in the machine.

/usr/share/dbus-1/interfaces/org.agentos.agentd1.*.xml are generated from the
sdbus classes (`make interfaces`); here they are compared with what agentd, as
sd-bus serves it, introspects on the bus (`busctl introspect --xml-interface`):
the same interfaces on the root object and on an agent's object, the same
members with the same signatures, argument names, directions, property access
and flag annotations. Only the docstrings (org.gtk.GDBus.DocString) are the
files' own; the standard org.freedesktop.DBus.* interfaces are sd-bus's.
The polkit action file is checked as polkitd reads it (pkaction).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from agentd_helpers import Agentd

pytestmark = pytest.mark.integration

BUS = "org.agentos.agentd1"
ROOT = "/org/agentos/agentd1"
AGENT = "it-intro"
AGENT_PATH = f"{ROOT}/agent/" + AGENT.replace("-", "_2d")
IFACE_DIR = "/usr/share/dbus-1/interfaces"
DOC = "org.gtk.GDBus.DocString"
STANDARD = "org.freedesktop.DBus."

# The interfaces on each object, as the daemon exports them.
ON_ROOT = {
    f"{BUS}.Manager",
    f"{BUS}.Runtime",
    f"{BUS}.Tasks",
    f"{BUS}.Model",
    f"{BUS}.Approvals",
    f"{BUS}.Memory",  # when agentd's memory opened (it does here: sqlite-vec is vendored)
    f"{BUS}.Sessions",
    f"{BUS}.Goals",
    f"{BUS}.Teams",
    f"{BUS}.Messages",
    f"{BUS}.Observe",
}
ON_AGENT = {f"{BUS}.Agent"}

ACTIONS = {
    "org.agentos.agentd1.manage-agents",
    "org.agentos.agentd1.read-audit",
    "org.agentos.agentd1.set-quota",
    "org.agentos.agentd1.reload-model",
}

Members = dict[tuple[str, str], Any]


def interfaces_of(xml: str) -> dict[str, ET.Element]:
    """{name: <interface>} of an introspection document, less org.freedesktop.DBus.*."""
    node = ET.fromstring(xml)
    assert node.tag == "node"
    found = {i.get("name", ""): i for i in node.findall("interface")}
    return {n: i for n, i in found.items() if not n.startswith(STANDARD)}


def members(iface: ET.Element) -> Members:
    """{(kind, name): what a binding is generated from}: args (type, name,
    direction), property type and access, and every annotation but the docstring."""
    out: Members = {}
    for el in iface:
        if el.tag == "annotation":
            continue
        notes = frozenset(
            (a.get("name"), a.get("value"))
            for a in el
            if a.tag == "annotation" and a.get("name") != DOC
        )
        args = tuple(
            (a.get("type"), a.get("name"), a.get("direction") or "") for a in el if a.tag == "arg"
        )
        key = (el.tag, el.get("name", ""))
        assert key not in out, f"{key} twice"
        out[key] = (args, el.get("type"), el.get("access"), notes)
    return out


def iface_notes(iface: ET.Element) -> frozenset[tuple[str | None, str | None]]:
    return frozenset(
        (a.get("name"), a.get("value"))
        for a in iface
        if a.tag == "annotation" and a.get("name") != DOC
    )


@pytest.fixture(scope="module")
def installed(agentd: Agentd) -> dict[str, str]:
    """{interface name: installed XML text}."""
    names = agentd.sh(["ls", IFACE_DIR]).stdout.split()
    ours = sorted(n for n in names if n.startswith(f"{BUS}."))
    assert ours, f"nothing of agentd's in {IFACE_DIR}: {names}"
    return {n.removesuffix(".xml"): agentd.sh(["cat", f"{IFACE_DIR}/{n}"]).stdout for n in ours}


@pytest.fixture(scope="module")
def served(agentd: Agentd) -> dict[str, dict[str, ET.Element]]:
    """{object path: its interfaces as the running daemon introspects them}."""
    agentd.create(AGENT, user="alice")
    try:
        return {
            path: interfaces_of(agentd.busctl("introspect", "--xml-interface", BUS, path).stdout)
            for path in (ROOT, AGENT_PATH)
        }
    finally:
        agentd.ctl("agent", "rm", AGENT, user="alice")


def test_one_file_per_interface_named_after_it(installed: dict[str, str]) -> None:
    assert set(installed) == ON_ROOT | ON_AGENT
    for name, text in installed.items():
        assert text.startswith("<!DOCTYPE node PUBLIC"), name
        assert list(interfaces_of(text)) == [name]


def test_the_daemon_serves_exactly_the_installed_interfaces(
    installed: dict[str, str], served: dict[str, dict[str, ET.Element]]
) -> None:
    assert set(served[ROOT]) == ON_ROOT
    assert set(served[AGENT_PATH]) == ON_AGENT
    assert set(served[ROOT]) | set(served[AGENT_PATH]) == set(installed)


@pytest.mark.parametrize("name", sorted(ON_ROOT | ON_AGENT))
def test_installed_file_matches_what_the_daemon_introspects(
    name: str, installed: dict[str, str], served: dict[str, dict[str, ET.Element]]
) -> None:
    live = served[AGENT_PATH if name in ON_AGENT else ROOT][name]
    (shipped,) = interfaces_of(installed[name]).values()
    want, got = members(live), members(shipped)
    assert sorted(got) == sorted(want), "members differ"
    for key in want:
        assert got[key] == want[key], key
    assert iface_notes(shipped) == iface_notes(live)
    # Not vacuous: Manager has methods, properties and signals.
    if name == f"{BUS}.Manager":
        kinds = {kind for kind, _ in want}
        assert kinds == {"method", "property", "signal"}
        assert ("method", "ListEvents") in want


def test_installed_files_are_what_the_installed_agentd_generates(
    agentd: Agentd, installed: dict[str, str]
) -> None:
    """Not a stale copy: the installed agentd renders them byte for byte."""
    script = (
        "import json, sys; sys.path.insert(0, '/usr/lib/agentd/python'); "
        "from agentd.api.introspection import INTERFACE_CLASSES, interface_name, render; "
        "print(json.dumps({interface_name(c): render(c) for c in INTERFACE_CLASSES}))"
    )
    rendered = json.loads(agentd.sh(["python3", "-c", script]).stdout)
    assert rendered == installed


def pkaction(agentd: Agentd, action: str) -> dict[str, str]:
    out = agentd.sh(["pkaction", "--action-id", action, "--verbose"], timeout=60).stdout
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines()[1:] if ":" in line)
    }


def test_polkit_knows_the_actions(agentd: Agentd) -> None:
    listed = set(agentd.sh(["pkaction"], timeout=60).stdout.split())
    assert {a for a in listed if a.startswith("org.agentos.")} == ACTIONS
    for action in sorted(ACTIONS):
        info = pkaction(agentd, action)
        assert info["vendor"] == "agentd", info
        assert info["description"] and info["message"], info
        assert info["implicit any"] == "no", info
        assert info["implicit inactive"] == "no", info
        assert info["implicit active"] == "auth_admin_keep", info
    audit = pkaction(agentd, "org.agentos.agentd1.read-audit")
    assert re.search(r"audit log", audit["description"]), audit

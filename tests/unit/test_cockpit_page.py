"""The Cockpit page's files (cockpit/agentd), checked without a browser: the
manifest Cockpit reads, the files the page loads, every element the script
looks up, the script's syntax (node), and the D-Bus calls it makes exist in
agentd's interfaces with the arity it uses. tests/integration/test_cockpit.py
drives it in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from agentd.api.introspection import INTERFACE_CLASSES, interface_element

PAGE = Path(__file__).resolve().parents[2] / "cockpit" / "agentd"
SCRIPTS = sorted(PAGE.glob("*.js"))
SCRIPT = "\n".join(p.read_text() for p in SCRIPTS)
HTML = (PAGE / "index.html").read_text()


def test_the_manifest_puts_the_page_in_cockpits_menu() -> None:
    manifest = json.loads((PAGE / "manifest.json").read_text())
    assert manifest["menu"]["index"]["label"] == "Agents"
    assert (PAGE / "index.html").is_file()


def test_the_page_loads_its_files_and_cockpits_api() -> None:
    loaded = re.findall(r'(?:src|href)="([^"]+)"', HTML)
    assert "../base1/cockpit.js" in loaded
    assert {p.name for p in SCRIPTS} <= set(loaded)
    for name in loaded:
        if not name.startswith("../"):
            assert (PAGE / name).is_file(), name


def test_every_element_the_script_looks_up_is_in_the_page() -> None:
    wanted = set(re.findall(r'\$\("([a-z-]+)"\)', SCRIPT))
    ids = set(re.findall(r'id="([a-z-]+)"', HTML))
    assert wanted and wanted <= ids, wanted - ids


def test_the_script_parses() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node is not None, "node is not installed (tools/deps.sh installs nodejs)"
    assert [p.name for p in SCRIPTS] == ["agent.js", "agentd.js", "task.js"]
    for script in SCRIPTS:
        subprocess.run([node, "--check", str(script)], check=True)


def _in_args() -> dict[tuple[str, str], int]:
    """{(interface's last name, method): its number of input arguments}, from
    the introspection agentd ships (agentd.api.introspection)."""
    out = {}
    for cls in INTERFACE_CLASSES:
        iface = interface_element(cls)
        short = iface.get("name", "").rsplit(".", 1)[-1]
        for method in iface.findall("method"):
            args = [a for a in method.findall("arg") if a.get("direction") == "in"]
            out[(short, method.get("name", ""))] = len(args)
    return out


def test_every_call_the_script_makes_exists_with_its_arity() -> None:
    calls = re.findall(r'call\("(\w+)", "(\w+)", \[([^\]]*)\]', SCRIPT)
    known = _in_args()
    assert len(calls) >= 8
    for iface, method, args in calls:
        given = len([a for a in re.split(r",(?![^{]*})", args) if a.strip()])
        assert known.get((iface, method)) == given, (iface, method, given)


def test_every_signal_the_script_follows_exists() -> None:
    signals = {
        (iface.get("name", "").rsplit(".", 1)[-1], s.get("name"))
        for iface in map(interface_element, INTERFACE_CLASSES)
        for s in iface.findall("signal")
    }
    followed = re.findall(r'\$\{BUS\}\.(\w+)`, member(?:: "(\w+)")?', SCRIPT)
    named = re.findall(r'for \(const member of \[([^\]]+)\]\)\s*\{?\s*client\.subscribe\(\{ '
                       r'interface: `\$\{BUS\}\.(\w+)`', SCRIPT)  # fmt: skip
    wanted = {(i, m) for i, m in followed if m}
    for members, iface in named:
        wanted |= {(iface, m.strip().strip('"')) for m in members.split(",")}
    assert len(wanted) >= 6 and wanted <= signals, wanted - signals

"""The org.agentos.agentd1 interfaces as D-Bus introspection XML, for
bindings and code generators (gdbus-codegen, sdbus's generator, zbus-xmlgen,
qdbusxml2cpp, D-Spy ...).

Like other system services, agentd ships one file per interface in
/usr/share/dbus-1/interfaces/INTERFACE.xml, so a program can be written
against the API without a running daemon. The files are generated from the
sdbus classes in agentd.api.interfaces (the one definition the daemon serves
and agentctl calls), never written by hand, so they cannot drift from what the
daemon introspects: the names, signatures and argument names are read from
the metadata sdbus keeps on each decorated member, and the flags become the
annotations sd-bus itself puts in its introspection data. Docstrings go along
as org.gtk.GDBus.DocString annotations (the name gdbus-codegen reads).

    python3 -m agentd.api.introspection OUTDIR    # `make interfaces`: build/interfaces

tests/unit/test_introspection.py checks the files against the classes,
tests/integration/test_dbus_introspection.py against the running daemon.
"""

from __future__ import annotations

import inspect
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sdbus
from sdbus.dbus_proxy_async_interface_base import DbusInterfaceBaseAsync
from sdbus.dbus_proxy_async_method import DbusMethodAsync
from sdbus.dbus_proxy_async_property import DbusPropertyAsync
from sdbus.dbus_proxy_async_signal import DbusSignalAsync

from . import interfaces

INTERFACE_CLASSES: tuple[type[DbusInterfaceBaseAsync], ...] = interfaces.INTERFACES
"""Every interface agentd serves (agentd.api.interfaces.INTERFACES): a new one is
shipped without a word here."""

DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">'
)
DOC_ANNOTATION = "org.gtk.GDBus.DocString"

Member = DbusMethodAsync | DbusPropertyAsync[Any] | DbusSignalAsync[Any]  # of any value type

# sd-bus's vtable flags, as sdbus exports them.
_DEPRECATED = sdbus.DbusDeprecatedFlag
_HIDDEN = sdbus.DbusHiddenFlag
_UNPRIVILEGED = sdbus.DbusUnprivilegedFlag
_NO_REPLY = sdbus.DbusNoReplyFlag
_CONST = sdbus.DbusPropertyConstFlag
_EMITS_CHANGE = sdbus.DbusPropertyEmitsChangeFlag
_EMITS_INVALIDATION = sdbus.DbusPropertyEmitsInvalidationFlag
_EXPLICIT = sdbus.DbusPropertyExplicitFlag


def interface_name(cls: type[DbusInterfaceBaseAsync]) -> str:
    """The D-Bus name of the interface CLS declares (its members carry it)."""
    names = {m.interface_name for m in _members(cls)}
    if len(names) != 1:
        raise ValueError(f"{cls.__name__}: not one D-Bus interface but {sorted(names)}")
    return names.pop()


def _members(cls: type[DbusInterfaceBaseAsync]) -> Iterator[Member]:
    """The D-Bus members CLS itself declares, in the order they are written."""
    for value in vars(cls).values():
        if isinstance(value, DbusMethodAsync | DbusPropertyAsync | DbusSignalAsync):
            yield value


def split_signature(signature: str) -> list[str]:
    """Split a D-Bus signature into its complete types: "sa{sv}(tu)" ->
    ["s", "a{sv}", "(tu)"]."""
    types: list[str] = []
    i = 0
    while i < len(signature):
        end = _complete_type_end(signature, i)
        types.append(signature[i:end])
        i = end
    return types


def _complete_type_end(signature: str, i: int) -> int:
    """The index just past the complete type that starts at I."""
    if i >= len(signature):
        raise ValueError(f"incomplete D-Bus signature {signature!r}")
    c = signature[i]
    if c == "a":
        return _complete_type_end(signature, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        i += 1
        while i < len(signature) and signature[i] != close:
            i = _complete_type_end(signature, i)
        if i >= len(signature):
            raise ValueError(f"unbalanced D-Bus signature {signature!r}")
        return i + 1
    if c in ")}":
        raise ValueError(f"unbalanced D-Bus signature {signature!r}")
    return i + 1


def _args(parent: ET.Element, signature: str, names: Sequence[str], direction: str | None) -> None:
    types = split_signature(signature)
    if names and len(names) != len(types):
        raise ValueError(f"{len(names)} argument names for signature {signature!r}")
    for i, type_ in enumerate(types):
        arg = ET.SubElement(parent, "arg")
        arg.set("type", type_)
        if names:
            arg.set("name", names[i])
        if direction:
            arg.set("direction", direction)


def _annotate(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, "annotation", name=name, value=value)


def reflow(doc: str) -> str:
    """A docstring as DocString text: each paragraph on one line, paragraphs
    separated by a blank line (an attribute value keeps no layout of its own)."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(doc))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def _doc(parent: ET.Element, doc: str | None) -> None:
    if doc and doc.strip():
        _annotate(parent, DOC_ANNOTATION, reflow(doc))


def _flags(parent: ET.Element, kind: str, flags: int, writable: bool = False) -> None:
    """The annotations sd-bus writes for FLAGS (systemd's bus-introspect.c), so that
    the file says what the daemon says; on the system bus sd-bus marks a method or
    writable property without the unprivileged flag as Privileged."""
    if flags & _DEPRECATED:
        _annotate(parent, "org.freedesktop.DBus.Deprecated", "true")
    if kind == "method" and flags & _NO_REPLY:
        _annotate(parent, "org.freedesktop.DBus.Method.NoReply", "true")
    if kind == "property":
        if flags & _EXPLICIT:
            _annotate(parent, "org.freedesktop.systemd1.Explicit", "true")
        if flags & _CONST:
            _annotate(parent, "org.freedesktop.DBus.Property.EmitsChangedSignal", "const")
        elif flags & _EMITS_INVALIDATION:
            _annotate(parent, "org.freedesktop.DBus.Property.EmitsChangedSignal", "invalidates")
        elif not flags & _EMITS_CHANGE:
            _annotate(parent, "org.freedesktop.DBus.Property.EmitsChangedSignal", "false")
    if (kind == "method" or writable) and not flags & _UNPRIVILEGED:
        _annotate(parent, "org.freedesktop.systemd1.Privileged", "true")


def interface_element(cls: type[DbusInterfaceBaseAsync]) -> ET.Element:
    """<interface> for CLS: its methods, then properties, then signals, each in
    the order the class declares them; members flagged hidden are left out, as
    sd-bus leaves them out of its introspection."""
    iface = ET.Element("interface", name=interface_name(cls))
    _doc(iface, cls.__doc__)
    members = [m for m in _members(cls) if not m.flags & _HIDDEN]
    for m in members:
        if isinstance(m, DbusMethodAsync):
            el = ET.SubElement(iface, "method", name=m.method_name)
            _args(el, m.input_signature, m.input_args_names, "in")
            _args(el, m.result_signature, m.result_args_names, "out")
            _flags(el, "method", m.flags)
            _doc(el, m.__doc__)
    for m in members:
        if isinstance(m, DbusPropertyAsync):
            writable = m.property_setter is not None and m.property_setter_is_public
            el = ET.SubElement(
                iface,
                "property",
                name=m.property_name,
                type=m.property_signature,
                access="readwrite" if writable else "read",
            )
            _flags(el, "property", m.flags, writable)
            _doc(el, m.__doc__)
    for m in members:
        if isinstance(m, DbusSignalAsync):
            el = ET.SubElement(iface, "signal", name=m.signal_name)
            _args(el, m.signal_signature, m.args_names, None)
            _flags(el, "signal", m.flags)
            _doc(el, m.__doc__)
    return iface


def render(cls: type[DbusInterfaceBaseAsync]) -> str:
    """Standard introspection XML for the interface CLS declares: one <node> with
    one <interface>, as INTERFACE.xml in /usr/share/dbus-1/interfaces."""
    node = ET.Element("node")
    node.append(interface_element(cls))
    ET.indent(node, space="  ")
    body = ET.tostring(node, encoding="unicode")
    return (
        f"{DOCTYPE}\n"
        f"<!-- {interface_name(cls)}: generated from agentd/api/interfaces.py by\n"
        "     `python3 -m agentd.api.introspection`; do not edit.\n"
        "     The reference is /usr/share/doc/agentd/dbus-api.md. -->\n"
        f"{body}\n"
    )


def write_all(outdir: Path) -> list[Path]:
    """Write INTERFACE.xml for every interface into OUTDIR; returns the paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for cls in INTERFACE_CLASSES:
        path = outdir / f"{interface_name(cls)}.xml"
        path.write_text(render(cls), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python3 -m agentd.api.introspection OUTDIR", file=sys.stderr)
        return 2
    for path in write_all(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

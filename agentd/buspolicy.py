"""Is the configured agents group the one the D-Bus policy confines?

Agents are kept off systemd, logind, polkit and every other bus service by
the ``<policy group="...">`` block of org.agentos.agentd1.conf, which names
the group every agent unit carries (agentd.toml ``agents_group``). The bus
policy is a static file read by dbus-daemon: if an admin changes
``agents_group`` without a policy block for the new group, agents would be
unconfined on the bus. agentd refuses to start (EX_CONFIG) rather than run so.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from .errors import InvalidConfig

POLICY_FILE = "org.agentos.agentd1.conf"
POLICY_DIRS = (Path("/usr/share/dbus-1/system.d"), Path("/etc/dbus-1/system.d"))


def confined_groups(dirs: Iterable[Path] = POLICY_DIRS) -> set[str]:
    """Groups with a <policy group=...> block in agentd's bus policy files."""
    groups: set[str] = set()
    for directory in dirs:
        path = directory / POLICY_FILE
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            continue
        except ET.ParseError as e:
            raise InvalidConfig(f"{path}: not a D-Bus policy: {e}") from None
        groups |= {p.get("group", "") for p in root.iter("policy") if p.get("group")}
    return groups


def check(agents_group: str, dirs: Iterable[Path] = POLICY_DIRS) -> None:
    """InvalidConfig if a policy file exists but none confines AGENTS_GROUP.

    No policy file at all (agentd run from a source tree without `make
    install`) is left to dbus-daemon, which then refuses agentd the name."""
    dirs = list(dirs)
    if not any((d / POLICY_FILE).exists() for d in dirs):
        return
    if agents_group not in confined_groups(dirs):
        where = " or ".join(str(d / POLICY_FILE) for d in dirs)
        raise InvalidConfig(
            f"agents_group = {agents_group!r}, but the D-Bus policy ({where}) confines no "
            f'such group: agents would reach every bus service. Add a <policy group="'
            f'{agents_group}"> block like the one for agentd-agents, or keep the default.'
        )

"""Is the configured agents group the one the D-Bus policy confines?

Agents are kept off systemd, logind, polkit and every other bus service by
the ``<policy group="...">`` block of org.agentos.agentd1.conf, which names
the group every agent unit carries (agentd.toml ``agents_group``). The bus
policy is a static file read by dbus-daemon: if an admin changes
``agents_group`` without a policy block for the new group, agents would be
unconfined on the bus. agentd refuses to start (EX_CONFIG) rather than run so.

dbus-daemon applies ``<policy user=...>`` blocks after ``group=`` ones
(dbus-daemon(1): default, group, user, at_console, mandatory), so any policy
file naming an agent's user would override that confinement (shown in
tests/integration/test_harden_accounts.py). ``context="mandatory"`` cannot
help: it applies to every connection alike, root's and agentd's included,
and the confinement is for agents only. So agentd refuses, as InvalidConfig
(audited by its caller), to create an agent whose account a ``user=`` rule
names, or to start one whose account or UID one names (dbus-daemon resolves
a name to a UID when it loads the file: the UID is what counts), and a
``user=`` rule naming an ``agent-*`` account stops agentd's own start as the
missing group block does. A file dropped while an agent runs is seen at its
next start (only root writes these files).
"""

from __future__ import annotations

import asyncio
import pwd
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from . import names
from .errors import InvalidConfig

POLICY_FILE = "org.agentos.agentd1.conf"
POLICY_DIRS = (Path("/usr/share/dbus-1/system.d"), Path("/etc/dbus-1/system.d"))
# What the system bus reads besides the system.d directories (system.conf's includes).
BUS_FILES = (
    Path("/usr/share/dbus-1/system.conf"),
    Path("/etc/dbus-1/system.conf"),
    Path("/etc/dbus-1/system-local.conf"),
)


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


def check(
    agents_group: str, dirs: Iterable[Path] = POLICY_DIRS, files: Iterable[Path] = BUS_FILES
) -> None:
    """InvalidConfig if a policy file exists but none confines AGENTS_GROUP, or
    if a user= rule names an agent account (check_no_agent_users).

    No policy file at all (agentd run from a source tree without `make
    install`) is left to dbus-daemon, which then refuses agentd the name."""
    dirs = list(dirs)
    check_no_agent_users(dirs, files)
    if not any((d / POLICY_FILE).exists() for d in dirs):
        return
    if agents_group not in confined_groups(dirs):
        where = " or ".join(str(d / POLICY_FILE) for d in dirs)
        raise InvalidConfig(
            f"agents_group = {agents_group!r}, but the D-Bus policy ({where}) confines no "
            f'such group: agents would reach every bus service. Add a <policy group="'
            f'{agents_group}"> block like the one for agentd-agents, or keep the default.'
        )


def user_rules(
    dirs: Iterable[Path] = POLICY_DIRS, files: Iterable[Path] = BUS_FILES
) -> list[tuple[Path, str]]:
    """Every ``<policy user="...">`` of the system bus's configuration: (file, user).

    Read at each agent start: 1.1 ms for 11 files (15 rules) on the build VM.

    A file that is not XML is skipped: dbus-daemon refuses it too."""
    paths = [*files]
    for directory in dirs:
        try:
            paths += sorted(p for p in directory.iterdir() if p.suffix == ".conf")
        except OSError:
            continue
    rules = []
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            continue
        rules += [(path, p.get("user", "")) for p in root.iter("policy") if p.get("user")]
    return rules


def _uid(user: str) -> int | None:
    """The UID dbus-daemon resolves USER to (a name through NSS, or a number)."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def naming(
    account: str,
    uid: int | None = None,
    dirs: Iterable[Path] = POLICY_DIRS,
    files: Iterable[Path] = BUS_FILES,
) -> list[tuple[Path, str]]:
    """The user= rules that would apply to ACCOUNT (or UID, however named)."""
    return [
        (path, user)
        for path, user in user_rules(dirs, files)
        if user == account or (uid is not None and _uid(user) == uid)
    ]


def refuse_overrides(
    account: str,
    uid: int | None = None,
    dirs: Iterable[Path] = POLICY_DIRS,
    files: Iterable[Path] = BUS_FILES,
) -> None:
    """InvalidConfig if a user= rule of the bus names ACCOUNT or UID."""
    found = naming(account, uid, dirs, files)
    if found:
        where = ", ".join(f'{path} (user="{user}")' for path, user in found[:4])
        raise InvalidConfig(
            f"the D-Bus policy names account {account}: {where}. A user= policy applies "
            "after agentd's confinement of the agents group and would override it; "
            "remove the rule (agent accounts are agentd's alone)"
        )


def check_no_agent_users(
    dirs: Iterable[Path] = POLICY_DIRS, files: Iterable[Path] = BUS_FILES
) -> None:
    """InvalidConfig if a user= rule names any agent-* account (agentd's start)."""
    found = [
        (path, user)
        for path, user in user_rules(dirs, files)
        if user.startswith(names.ACCOUNT_PREFIX)
    ]
    if found:
        path, user = found[0]
        raise InvalidConfig(
            f'{path}: <policy user="{user}"> names an agent account ({names.ACCOUNT_PREFIX}* '
            "are agentd's): it would override agentd's D-Bus confinement of agents"
        )


async def reload_bus() -> None:
    """Ask dbus-daemon to reload its configuration: it resolved user and group
    names to IDs when it loaded it, so a renamed account keeps the old name's
    rules until then. Best effort: a bus that cannot be asked is left as is."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "busctl",
            "--system",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ReloadConfig",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return
    await proc.wait()

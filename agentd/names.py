"""Agent names.

An agent's name is also its Unix user and group name and part of its unit name
(``agent-NAME.service``), so it must be valid for all three and never shadow an
account that agentd did not make.
"""

from __future__ import annotations

import grp
import pwd
import re

from .errors import InvalidName

# Lowercase letter first, then lowercase letters, digits and single hyphens.
# 32 is the longest user name useradd accepts on Debian.
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
MAX_LEN = 32

# Names that must never become agents even if no such account exists here:
# well-known system accounts and agentd's own groups.
RESERVED = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "nogroup",
        "systemd-network",
        "systemd-resolve",
        "systemd-timesync",
        "systemd-journal",
        "messagebus",
        "sshd",
        "adm",
        "sudo",
        "wheel",
        "staff",
        "users",
        "shadow",
        "utmp",
        "tty",
        "disk",
        "kmem",
        "dialout",
        "admin",
        "agentd",
        "agentd-admin",
        "agentd-agents",
        "agents",
        "polkitd",
    }
)


def check_syntax(name: str) -> str:
    """Raise InvalidName unless NAME is well formed; return it."""
    if not isinstance(name, str) or not name:
        raise InvalidName("agent name must not be empty")
    if len(name) > MAX_LEN:
        # never echoed: it may be megabytes, and this message reaches the audit log
        raise InvalidName(f"agent name is {len(name)} characters, longer than {MAX_LEN}")
    if not _NAME_RE.match(name):
        raise InvalidName(
            f"agent name {name!r} is invalid: use lowercase letters, digits and single "
            "hyphens, starting with a letter"
        )
    if name in RESERVED:
        raise InvalidName(f"agent name {name!r} is reserved")
    return name


def check_free_account(name: str) -> None:
    """Raise InvalidName if a user or group NAME already exists on the system."""
    for lookup, what in ((pwd.getpwnam, "user"), (grp.getgrnam, "group")):
        try:
            lookup(name)
        except KeyError:
            continue
        raise InvalidName(f"agent name {name!r} is taken by an existing system {what}")


def unit_name(name: str) -> str:
    return f"agent-{name}.service"


def agent_of_unit(unit: str) -> str | None:
    """NAME for agent-NAME.service, else None: unit_name()'s inverse."""
    if unit.startswith("agent-") and unit.endswith(".service"):
        return unit.removeprefix("agent-").removesuffix(".service")
    return None

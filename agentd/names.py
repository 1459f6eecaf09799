"""Agent names, and the Unix account and unit each one maps to.

An agent NAME is what people type (``build``). Its Unix user and group are
``agent-NAME`` (account_name, the one place this is derived) and its unit
``agent-NAME.service``. The prefix is the point: a bare account name would
squat a system account a package creates later (``getent group docker ||
groupadd -r docker`` finds the agent's group and hands it the docker socket),
while no package makes ``agent-*`` accounts, and agentd never makes an account
outside that prefix. Agents made before the prefix are renamed at start
(agentd.accountnames). The name must be valid for all three and the account
must not exist already (agentd never adopts an account it did not make).
"""

from __future__ import annotations

import grp
import pwd
import re

from .errors import InvalidName

# Lowercase letter first, then lowercase letters, digits and single hyphens.
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
ACCOUNT_PREFIX = "agent-"
# 32 is the longest user name useradd and usermod accept on Debian 12 (33 is
# refused: "invalid user name ... use --badname"), so the name keeps 26.
ACCOUNT_MAX_LEN = 32
MAX_LEN = ACCOUNT_MAX_LEN - len(ACCOUNT_PREFIX)

# Names that must never become agents: well-known system accounts and agentd's
# own groups. Their accounts would be agent-NAME, so this is no longer what
# keeps system accounts safe (the prefix is): it keeps agent names unambiguous.
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


def account_name(name: str) -> str:
    """The Unix user and group of agent NAME: ``agent-NAME``."""
    return ACCOUNT_PREFIX + name


def agent_of_account(account: str) -> str | None:
    """NAME for the account agent-NAME, else None: account_name()'s inverse."""
    if account.startswith(ACCOUNT_PREFIX) and len(account) > len(ACCOUNT_PREFIX):
        return account.removeprefix(ACCOUNT_PREFIX)
    return None


def check_free_account(name: str) -> None:
    """Raise InvalidName if agent NAME's account already exists as a user or a
    group (agentd made none: a live agent's name is refused before this)."""
    account = account_name(name)
    for lookup, what in ((pwd.getpwnam, "user"), (grp.getgrnam, "group")):
        try:
            lookup(account)
        except KeyError:
            continue
        raise InvalidName(
            f"agent name {name!r} is taken: its account {account!r} is an existing system {what}"
        )


def unit_name(name: str) -> str:
    return f"{account_name(name)}.service"


def agent_of_unit(unit: str) -> str | None:
    """NAME for agent-NAME.service, else None: unit_name()'s inverse."""
    if unit.startswith("agent-") and unit.endswith(".service"):
        return unit.removeprefix("agent-").removesuffix(".service")
    return None

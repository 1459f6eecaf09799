"""An agent's Unix account, whichever naming it still has; and the renaming of
accounts made before the ``agent-`` prefix (agentd.names.account_name).

An agent made by an older agentd has user and group NAME: a system account's
name a package may claim later. It is renamed to ``agent-NAME`` (``usermod
--login``, then ``groupmod --new-name``; UID, GID, home and the agents
group's membership stay), at agentd's start if its unit is not running, else
before its next start: usermod renames no user that has processes. Each step
is one shadow tool run, which rewrites /etc/passwd or /etc/group whole under
its lock, so a crash leaves one of three states, each recognised here by the
agent's UID and GID and finished at the next start or agent start:

    user NAME,       group NAME        nothing renamed yet
    user agent-NAME, group NAME        the user renamed, the group not
    user agent-NAME, group agent-NAME  done

Nothing is stored: the accounts themselves say how far it got. Every rename is
an ``agent.repair`` audit row (renamed, deferred while running, or failed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from . import buspolicy, names
from .accounts import Account
from .agent import AccountsAPI, Agent
from .errors import AgentdError, SystemError_
from .policy import AGENTD

if TYPE_CHECKING:
    from .registry import Registry

LIVE = ("creating", "present", "removing")
STOPPED = ("inactive", "failed")  # unit states in which no agent process runs


@runtime_checkable
class Renaming(Protocol):
    """What renaming needs beyond agentd.agent.AccountsAPI (agentd.accounts.Accounts
    has it; a fake without it has no old accounts to rename)."""

    def user(self, name: str) -> Account | None: ...
    def group_gid(self, name: str) -> int | None: ...
    async def rename_user(self, old: str, new: str) -> None: ...
    async def rename_group(self, old: str, new: str) -> None: ...
    async def delete_group(self, name: str) -> None: ...


def check_free(name: str) -> None:
    """Before agent NAME is made: its account exists nowhere (InvalidName) and
    no bus policy user= rule names it (InvalidConfig)."""
    names.check_free_account(name)
    buspolicy.refuse_overrides(names.account_name(name))


def lookup(accounts: AccountsAPI, agent: Agent) -> Account | None:
    """AGENT's user: agent-NAME, or its not yet renamed NAME (same UID)."""
    account = accounts.user(names.account_name(agent.name))
    if account is not None:
        return account
    old = accounts.user(agent.name)
    return old if old is not None and old.uid == agent.uid else None


def _pending(accounts: AccountsAPI, agent: Agent) -> tuple[bool, bool]:
    """(user, group) of AGENT still under the bare name."""
    if not isinstance(accounts, Renaming):
        return False, False
    old = accounts.user(agent.name)
    return (
        old is not None and old.uid == agent.uid,
        accounts.group_gid(agent.name) == agent.gid,
    )


def needs_rename(accounts: AccountsAPI, agent: Agent) -> bool:
    return any(_pending(accounts, agent))


async def rename(reg: Registry, agent: Agent) -> str | None:
    """Rename AGENT's user, then its group, to agent-NAME; audited. None if
    there was nothing to rename. The unit must not be running (Busy if it is)."""
    accounts = reg.accounts
    user_left, group_left = _pending(accounts, agent)
    if not (user_left or group_left):
        return None
    assert isinstance(accounts, Renaming)
    new = names.account_name(agent.name)
    if len(new) > names.ACCOUNT_MAX_LEN:
        raise SystemError_(
            f"account {agent.name} cannot become {new}: longer than "
            f"{names.ACCOUNT_MAX_LEN} characters, which useradd and usermod refuse"
        )
    if user_left:
        if accounts.user(new) is not None:
            raise SystemError_(f"cannot rename user {agent.name}: a user {new} exists")
        await accounts.rename_user(agent.name, new)
    if group_left:
        if accounts.group_gid(new) is not None:
            raise SystemError_(f"cannot rename group {agent.name}: a group {new} exists")
        await accounts.rename_group(agent.name, new)
    # dbus-daemon resolved user names to UIDs when it loaded its policy: a rule
    # for the old name would follow the renamed user until it reloads.
    await buspolicy.reload_bus()
    what = f"renamed account {agent.name} to {new}" + ("" if user_left else " (its group)")
    reg.audit.append(
        "agent.repair",
        actor_uid=AGENTD.uid,
        agent=agent.name,
        agent_uid=agent.uid,
        result="repaired",
        reason=what,
        account_from=agent.name,
        account=new,
    )
    return what


async def rename_all(reg: Registry) -> list[str]:
    """At agentd's start: rename every agent's old account whose unit is stopped;
    the others are renamed by before_start. Never raises (failures audited)."""
    done: list[str] = []
    for agent in reg.agents(LIVE):
        if not needs_rename(reg.accounts, agent):
            continue
        state = (await reg.units.status(agent.unit)).active_state
        try:
            if state not in STOPPED:
                raise _Deferred(
                    f"account {agent.name} not renamed to {names.account_name(agent.name)} "
                    f"while {agent.unit} is {state}: renamed before its next start"
                )
            what = await rename(reg, agent)
        except (AgentdError, OSError, _Deferred) as e:
            what = f"could not rename the account of {agent.name}: {e}"[:1000]
            deferred = isinstance(e, _Deferred)
            reg.audit.append(
                "agent.repair",
                actor_uid=AGENTD.uid,
                agent=agent.name,
                agent_uid=agent.uid,
                result="deferred" if deferred else "failed",
                reason=str(e)[:1000] if deferred else what,
            )
        if what:
            done.append(what)
    return done


class _Deferred(Exception):
    """The unit runs: usermod would refuse."""


async def before_start(reg: Registry, agent: Agent) -> None:
    """Before AGENT's unit starts: finish its rename if its unit is stopped, and
    refuse (InvalidConfig) if a bus policy user= rule names its account or UID."""
    if needs_rename(reg.accounts, agent):
        state = (await reg.units.status(agent.unit)).active_state
        if state in STOPPED:
            await rename(reg, agent)
    buspolicy.refuse_overrides(names.account_name(agent.name), agent.uid)


async def delete(accounts: AccountsAPI, agent: Agent) -> None:
    """Delete AGENT's user and group, under either name; never a same-named
    account of another UID (agentd did not make it)."""
    new = names.account_name(agent.name)
    account = accounts.user(new)
    if account is None or account.uid == agent.uid:
        await accounts.delete(new)
    user_left, group_left = _pending(accounts, agent)
    if user_left:
        await accounts.delete(agent.name)  # user NAME and group NAME
    elif group_left and isinstance(accounts, Renaming):
        await accounts.delete_group(agent.name)  # never a user NAME of another UID


def is_agents(account: str, live: set[str]) -> bool:
    """Is ACCOUNT (in the agent UID range and group) that of one of the LIVE
    agent names: agent-NAME, or a NAME not yet renamed."""
    return account in live or names.agent_of_account(account) in live

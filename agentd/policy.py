"""Who may do what: the one place that decides "may CALLER do ACTION on RESOURCE".

Every D-Bus method declares an action (agentd.api.access.rule) and every action
has one Rule in RULES; an action without a rule is refused, so a method nobody
thought about is closed, not open (deny by default). The engine asks the same
Policy again with the resource in hand (the agent, task or project), so a rule
holds whichever way the engine is reached.

Three sources decide, all from the caller's UID, which the bus reports and no
caller can forge (each agent *is* a UID, so no tokens are needed):

- agentd's own rules: an agent speaks only for itself (the Runtime
  interface, its own Agent object); a person manages what it owns;
- root and members of the admin group (agentd.toml ``admin_group``) are
  administrators, as they always were;
- polkit, as systemd, firewalld and udisks use it: a person who is neither
  may still be made an administrator *for one action* by the polkit action
  the rule names (org.agentos.agentd1.*), so an admin can grant it with a
  rules file in /etc/polkit-1/rules.d. polkit is asked asynchronously by the
  bus layer (agentd.api.access) before the call reaches the engine; what it
  says travels with the Caller (``admin_for``).

Every denial is one audit row (result "denied", with the reason) before the
PermissionDenied is raised, within a per-UID budget (agentd.limits): past it a
refusal is answered LimitExceeded and only counted, with one summary row per
uid per interval, so a flood of refused calls cannot fill the disk.

Creating (agents, projects, tasks) is also rate-limited per UID, and creating
agents is for people only: a member of ``creator_group``, or, when none is
set, a UID of at least login.defs' UID_MIN with a login shell; never nobody or
a DynamicUser service (which any local service could otherwise become an agent
owner as). Administrators are not limited by either. Both are decided by the
bus layer's screen (what the caller *is*), before the engine runs.
"""

from __future__ import annotations

import asyncio
import enum
import grp
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from .errors import AgentdError, LimitExceeded, PermissionDenied
from .limits import (
    SUMMARY_SECONDS,
    CallerLimits,
    Logins,
    Rates,
    SystemLogins,
    creator_refusal,
)
from .rules import RULES, Rule, Scope


@dataclass(frozen=True)
class Caller:
    """A caller as the bus reported it. ``admin_for`` lists the polkit actions
    polkit granted for this call (filled in by the bus layer)."""

    uid: int
    gids: frozenset[int] = field(default_factory=frozenset)
    pid: int = 0
    bus_name: str = ""
    admin_for: frozenset[str] = field(default_factory=frozenset)
    name: str = ""  # an agent's name, when the engine acts for a known agent


AGENTD = Caller(uid=0)  # agentd itself, for repairs and scheduling it does on its own


class Role(enum.Enum):
    ADMIN = "admin"
    USER = "user"
    AGENT = "agent"


@dataclass(frozen=True)
class Resource:
    """What an action is about, as far as deciding and auditing need it."""

    kind: str  # agent | task | project
    name: str  # for messages: an agent's name, a task id, a project name
    owner_uid: int
    agent: str | None = None  # the agent the resource is or belongs to
    agent_uid: int | None = None
    task_id: int | None = None


class AuditSink(Protocol):
    def append(
        self,
        action: str,
        *,
        actor_uid: int,
        agent: str | None = None,
        agent_uid: int | None = None,
        result: str = "ok",
        task_id: int | None = None,
        agent_id: int | None = None,
        **detail: object,
    ) -> object: ...


def _account_uid(name: str) -> int | None:
    """The UID of system account NAME (a rule's ``account``), None if it has none."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


class Policy:
    def __init__(
        self,
        admin_group: str,
        is_agent_uid: Callable[[int], bool],
        audit: AuditSink,
        *,
        limits: CallerLimits | None = None,
        logins: Logins | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admin_group = admin_group
        self.is_agent_uid = is_agent_uid
        self.audit = audit
        self.limits = limits or CallerLimits()
        self.logins: Logins = logins or SystemLogins()
        self.rates = Rates(self.limits, clock)
        self._summary: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None

    def admin_gid(self) -> int | None:
        try:
            return grp.getgrnam(self.admin_group).gr_gid
        except KeyError:
            return None

    def role(self, caller: Caller, action: str | None = None) -> Role:
        """ADMIN, USER or AGENT; polkit's grant counts for the action it was asked for."""
        if caller.uid == 0:
            return Role.ADMIN
        if self.is_agent_uid(caller.uid):  # before groups: an agent is never an admin
            return Role.AGENT
        # The connection's groups are those its process started with: a member
        # removed from the admin group since keeps them until it exits, so the
        # group database must say so too (revocation takes effect at once).
        gid = self.admin_gid()
        if gid is not None and gid in caller.gids and self.logins.member(caller.uid, gid):
            return Role.ADMIN
        rule = RULES.get(action or "")
        if rule is not None and rule.polkit is not None and rule.polkit in caller.admin_for:
            return Role.ADMIN
        if rule is not None and rule.account and caller.uid == _account_uid(rule.account):
            return Role.ADMIN
        return Role.USER

    def needs_polkit(self, caller: Caller, action: str) -> str | None:
        """The polkit action worth asking about for this call, if any: only for a
        person whom agentd's own rules do not already make an administrator."""
        rule = RULES.get(action)
        if rule is None or rule.polkit is None:
            return None
        if self.role(caller, action if rule.account else None) is not Role.USER:
            return None
        return rule.polkit

    def screen(self, caller: Caller, action: str) -> None:
        """The bus layer's check, before the engine runs: refuse what the caller's
        identity alone rules out (an agent calling for people, a person calling
        as an agent, an action without a rule). Whose a resource is, and whether
        the caller is an administrator, the engine asks with the resource in hand,
        so that the denial's audit row names what was asked for."""
        rule = RULES.get(action)
        if rule is None or rule.scope is not Scope.ADMIN:
            role = self.check(caller, action)
            if rule is not None and rule.creates and role is Role.USER:
                self._admit_creation(caller, action, rule)

    def _admit_creation(self, caller: Caller, action: str, rule: Rule) -> None:
        """A person's creation: refuse one who may not own agents (rule.creator),
        or who creates faster than creates_per_second (LimitExceeded)."""
        if rule.creator:
            self.check_creator(caller, action)
        if not self.rates.take("create", caller.uid):
            wait = self.rates.wait("create", caller.uid)
            self.refuse(
                caller,
                action,
                LimitExceeded(
                    f"uid {caller.uid} creates faster than {self.limits.creates_per_second}/s "
                    f"(creates_per_second); try again in {wait:.1f} s"
                ),
            )

    def check_creator(self, caller: Caller, action: str) -> None:
        """Refuse (audited) a person who may not own agents: outside creator_group,
        or, with none set, not a person with a login (agentd.limits). Also asked
        when agentd makes an agent for a person (a goal's sub-agents)."""
        if self.role(caller, action) is not Role.USER:
            return
        group = self.limits.creator_group
        gid = self._gid(group) if group else None
        reason = creator_refusal(caller.uid, caller.gids, gid, self.logins)
        if reason:
            self._deny(caller, action, None, f"{reason}: may not create agents")

    @staticmethod
    def _gid(group: str) -> int:
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            return -1  # a configured group that does not exist admits nobody

    def check(self, caller: Caller, action: str, resource: Resource | None = None) -> Role:
        """CALLER's role if it may do ACTION (on RESOURCE, when given); else audit
        the denial and raise PermissionDenied. Without a resource, only what the
        caller is decides (the bus layer's check before the engine loads anything)."""
        rule = RULES.get(action)
        if rule is None:
            self._deny(caller, action, resource, f"no rule allows {action}")
        assert rule is not None
        role = self.role(caller, action)
        reason = self._refusal(caller, role, action, rule, resource)
        if reason:
            if rule.scope is Scope.SELF and role is Role.AGENT:
                # the actor is an agent speaking for itself: the row is about it
                resource = Resource(
                    "agent",
                    caller.name,
                    0,
                    agent=caller.name or None,
                    agent_uid=caller.uid,
                    task_id=resource.task_id if resource else None,
                )
            self._deny(caller, action, resource, reason)
        return role

    def _refusal(
        self, caller: Caller, role: Role, action: str, rule: Rule, resource: Resource | None
    ) -> str:
        """Why CALLER may not, or "" if it may."""
        scope = rule.scope
        if scope is Scope.ANYONE:
            return ""
        if scope is Scope.SELF:
            if role is not Role.AGENT:
                return f"uid {caller.uid} is not an agent"
            if resource is not None and resource.agent_uid != caller.uid:
                return f"{resource.kind} {resource.name} is not claimed by " + (
                    caller.name or f"uid {caller.uid}"
                )
            return ""
        if role is Role.AGENT:
            if scope is Scope.VIEWER and (resource is None or resource.agent_uid == caller.uid):
                return ""
            return rule.agents
        if scope is Scope.ADMIN:
            return "" if role is Role.ADMIN else f"only administrators may {rule.what or 'do this'}"
        if resource is None or role is Role.ADMIN or scope is Scope.PERSON:
            return ""
        if resource.owner_uid == caller.uid:
            return ""
        return (
            f"{resource.kind} {resource.name} belongs to another user"
            if resource.kind != "agent"
            else f"uid {caller.uid} may not {action.split('.')[-1]} this agent"
        )

    def _deny(
        self, caller: Caller, action: str, resource: Resource | None, reason: str
    ) -> NoReturn:
        detail: dict[str, Any] = (
            {"project": resource.name} if resource and resource.kind == "project" else {}
        )
        self.refuse(
            caller,
            action,
            PermissionDenied(reason),
            result="denied",
            agent=resource.agent if resource else None,
            agent_uid=resource.agent_uid if resource else None,
            task_id=resource.task_id if resource else None,
            **detail,
        )

    # -- refusals, within each caller's budget ------------------------------------------
    def refuse(
        self,
        caller: Caller,
        action: str,
        error: AgentdError,
        *,
        result: str = "refused",
        agent: str | None = None,
        agent_uid: int | None = None,
        task_id: int | None = None,
        agent_id: int | None = None,
        **detail: object,
    ) -> NoReturn:
        """Audit CALLER's refusal of ACTION and raise ERROR; past the caller's budget
        (denied_calls_per_second), count it instead and raise LimitExceeded.
        A denial's row has its reason; another refusal's also the error's name."""
        if not self.rates.take("denied", caller.uid):
            self._suppress(caller)
        if result != "denied":
            detail["error"] = error.name
        self.audit.append(
            action,
            actor_uid=caller.uid,
            result=result,
            agent=agent,
            agent_uid=agent_uid,
            task_id=task_id,
            agent_id=agent_id,
            reason=str(error),
            **detail,
        )
        raise error

    def throttle(self, caller: Caller) -> None:
        """The bus layer's first question about a known caller: LimitExceeded (counted,
        not audited) while its refusal budget is spent; so a flood of refused calls
        costs neither a polkit round trip nor a database write."""
        if self.rates.due():
            self.flush_suppressed()
        if self.rates.spent("denied", caller.uid):
            self._suppress(caller)

    def _suppress(self, caller: Caller) -> NoReturn:
        self.rates.suppress(caller.uid)
        self._schedule_summary()
        wait = self.rates.wait("denied", caller.uid)
        raise LimitExceeded(
            f"uid {caller.uid} was refused more than {self.limits.denied_calls_per_second} "
            f"calls/s (denied_calls_per_second); try again in {wait:.1f} s"
        )

    def _schedule_summary(self) -> None:
        """Write the summary rows SUMMARY_SECONDS after the first suppressed refusal,
        even if the flood has stopped by then (on agentd's event loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test): throttle() writes them when due
        if self._summary is not None and self._summary[0] is loop:
            return
        delay = max(0.0, SUMMARY_SECONDS - (self.rates.clock() - self.rates.since))
        self._summary = (loop, loop.call_later(delay, self._on_summary))

    def _on_summary(self) -> None:
        self._summary = None
        self.flush_suppressed()

    def flush_suppressed(self) -> None:
        """One audit row per uid whose refusals were counted, not written."""
        counts, seconds = self.rates.drain()
        for uid, n in sorted(counts.items()):
            self.audit.append(
                "audit.suppressed",
                actor_uid=uid,
                result="denied",
                count=n,
                seconds=round(seconds, 1),
                reason=f"{n} refused calls of uid {uid} in {seconds:.0f} s not written one "
                "by one (denied_calls_per_second)",
            )

    # -- row filters: what a PERSON- or ANYONE-scoped listing shows ----------------
    def sees(
        self, caller: Caller, action: str, owner_uid: int, agent_uid: int | None = None
    ) -> bool:
        """Whether a row owned by OWNER_UID (about AGENT_UID) shows in CALLER's list."""
        role = self.role(caller, action)
        if role is Role.ADMIN:
            return True
        if role is Role.AGENT:
            return agent_uid is not None and agent_uid == caller.uid
        return owner_uid == caller.uid

    def sees_entry(self, caller: Caller, actor_uid: int, agent: Resource | None) -> bool:
        """Whether an audit row shows to CALLER: administrators see all of it; a
        person sees what it did and what was done to AGENT, the row's agent (by
        its id, live or removed: agentd.eventlog), if that agent is the caller's."""
        if self.role(caller, "audit.list") is Role.ADMIN:
            return True
        return actor_uid == caller.uid or (agent is not None and agent.owner_uid == caller.uid)

    def may_manage(self, caller: Caller, owner_uid: int, action: str = "agent.start") -> bool:
        """Whether CALLER manages what OWNER_UID owns (no audit: for routing choices)."""
        role = self.role(caller, action)
        return role is Role.ADMIN or (role is Role.USER and owner_uid == caller.uid)

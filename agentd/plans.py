"""Quota plans: agentd.toml's named plans (agentd.plandefs), assigned by an
administrator to users and Unix groups, and what each owner's plan is.

An owner's plan is, first found: the plan assigned to the user; the plan
assigned to one of the user's Unix groups (the group database's, primary and
supplementary, so a change of membership counts at once; when several of its
groups have plans, the one written *last* in agentd.toml wins: write plans
from the smallest to the largest, as the shipped examples are, and a member
of a bigger plan's group gets the bigger plan); ``default_plan``; none. An
assignment naming a plan no longer in agentd.toml is ignored (and shown as
such), as if it were not there.

What a plan decides (for its owner's agents together):

- tokens per period: the owner's token quota (agentd.quotas), after an
  administrator's ``agentctl quota set`` for that owner and before
  owner_token_quota;
- max_agents and max_memory: max_agents_per_owner and owner_memory_max for
  that owner (agentd.registry, agentd.ceilings);
- templates: which templates the owner's new agents may use; another is
  refused (PermissionDenied, audited) before anything is made.

Administrators are exempt from max_agents, max_memory and templates, as they
are from max_agents_per_owner and the ceilings; their token quota is metered
like anyone's.

Invariant: an owner's plan is decided afresh on every question (each create,
each model request, each usage listing) from the store and agentd.toml, with
nothing cached; so an assignment takes effect at the next request, and each
one is a single transaction with its audit row (``plan.assign``).
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .audit import AuditLog
from .config import Config
from .errors import AgentdError, InvalidArgument, PermissionDenied
from .plandefs import Plan
from .policy import Caller, Policy, Resource, Role
from .store import Store

KINDS = ("user", "group")


@dataclass(frozen=True)
class Effective:
    """An owner's plan and why it is theirs."""

    plan: Plan
    source: str  # user | group | default
    group: str = ""  # the group it came from (source group)

    def as_dict(self) -> dict[str, Any]:
        return {**self.plan.as_dict(), "source": self.source, "group": self.group}


def unix_groups(uid: int) -> frozenset[int]:
    """UID's groups in the group database, primary and supplementary."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    return frozenset(os.getgrouplist(user.pw_name, user.pw_gid))


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def resolve(kind: str, subject: str) -> int:
    """A user or group, by name or number, as its UID or GID."""
    if kind not in KINDS:
        raise InvalidArgument(f"kind must be 'user' or 'group', not {kind!r}")
    if subject.isdigit():
        return int(subject)
    try:
        if kind == "user":
            return pwd.getpwnam(subject).pw_uid
        return grp.getgrnam(subject).gr_gid
    except KeyError:
        raise InvalidArgument(f"no {kind} named {subject!r}") from None


class Plans:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        audit: AuditLog,
        policy: Policy,
        groups_of: Callable[[int], frozenset[int]] = unix_groups,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.audit = audit
        self.policy = policy
        self.groups_of = groups_of

    # -- what an owner's plan is ------------------------------------------------
    def find(self, name: str) -> Plan | None:
        return next((p for p in self.cfg.plans if p.name == name), None)

    def _rank(self, name: str) -> int:
        """NAME's place in agentd.toml (-1: not there)."""
        return next((i for i, p in enumerate(self.cfg.plans) if p.name == name), -1)

    def effective(self, uid: int) -> Effective | None:
        """UID's plan: its own, its groups' (the last in agentd.toml), the default."""
        if not self.cfg.plans:
            return None
        rows = self.store.query("SELECT kind, subject, plan FROM plan_assignments")
        mine = [r for r in rows if r["kind"] == "user" and r["subject"] == str(uid)]
        if mine and (plan := self.find(mine[0]["plan"])) is not None:
            return Effective(plan, "user")
        groups = [r for r in rows if r["kind"] == "group" and self.find(r["plan"])]
        if groups:
            gids = self.groups_of(uid)
            ours = [r for r in groups if int(r["subject"]) in gids]
            if ours:
                best = max(ours, key=lambda r: (self._rank(r["plan"]), -int(r["subject"])))
                plan = self.find(best["plan"])
                assert plan is not None
                return Effective(plan, "group", group_name(int(best["subject"])))
        default = self.find(self.cfg.default_plan)
        return Effective(default, "default") if default is not None else None

    def limits(self, uid: int) -> tuple[Config, str]:
        """agentd.toml as UID's agents are bounded by it (its plan's max_agents and
        max_memory as max_agents_per_owner and owner_memory_max), and a note for
        messages naming the plan ("" without one)."""
        found = self.effective(uid)
        if found is None:
            return self.cfg, ""
        bound = dataclasses.replace(
            self.cfg,
            max_agents_per_owner=found.plan.max_agents,
            owner_memory_max=found.plan.max_memory,
        )
        return bound, f", of plan {found.plan.name!r}"

    def check_template(self, caller: Caller, role: Role, agent: str, template: str) -> None:
        """Refuse (audited, PermissionDenied) a person's new agent of a template its
        plan does not allow; administrators are exempt."""
        if role is not Role.USER:
            return
        found = self.effective(caller.uid)
        if found is None or found.plan.allows(template):
            return
        self.policy.refuse(
            caller,
            "agent.create",
            PermissionDenied(
                f"template {template!r} is not in plan {found.plan.name!r} of uid "
                f"{caller.uid} (it allows: {', '.join(found.plan.templates)})"
            ),
            result="denied",
            agent=agent[:64],
            template=template[:64],
            plan=found.plan.name,
        )

    # -- administration ------------------------------------------------------------
    def assign(self, caller: Caller, kind: str, subject: str, plan: str) -> None:
        """Give the user or group SUBJECT PLAN ("": take its plan away); audited,
        refusals too. It counts from the next request on."""
        self.policy.check(caller, "plan.assign")
        try:
            number = resolve(kind, subject)
            if plan and self.find(plan) is None:
                known = ", ".join(p.name for p in self.cfg.plans) or "none"
                raise InvalidArgument(f"no plan named {plan!r} in agentd.toml (plans: {known})")
        except AgentdError as e:
            self.policy.refuse(caller, "plan.assign", e, kind=kind, subject=subject, plan=plan)
        key = (kind, str(number))
        with self.store.transaction():
            before = self.store.scalar(
                "SELECT plan FROM plan_assignments WHERE kind = ? AND subject = ?", key
            )
            if plan:
                self.store.execute(
                    "INSERT INTO plan_assignments (kind, subject, plan, set_by, set_at) "
                    "VALUES (?,?,?,?,?) ON CONFLICT (kind, subject) DO UPDATE SET "
                    "plan = excluded.plan, set_by = excluded.set_by, set_at = excluded.set_at",
                    (*key, plan, caller.uid, time.time()),
                )
            else:
                self.store.execute(
                    "DELETE FROM plan_assignments WHERE kind = ? AND subject = ?", key
                )
            self.audit.append(
                "plan.assign",
                actor_uid=caller.uid,
                kind=kind,
                subject=self._name(kind, number),
                id=number,
                plan=plan,
                previous=before or "",
            )

    # -- reports -------------------------------------------------------------------
    @staticmethod
    def _name(kind: str, number: int) -> str:
        return user_name(number) if kind == "user" else group_name(number)

    def assignments(self, plan: str | None = None) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT kind, subject, plan, set_by, set_at FROM plan_assignments "
            "ORDER BY kind DESC, plan, CAST(subject AS INTEGER)"
        )
        return [
            {
                "kind": r["kind"],
                "id": int(r["subject"]),
                "name": self._name(r["kind"], int(r["subject"])),
                "plan": r["plan"],
                "known": self.find(r["plan"]) is not None,
                "set_by": r["set_by"],
                "set_at": r["set_at"],
            }
            for r in rows
            if plan is None or r["plan"] == plan
        ]

    def listing(self, caller: Caller) -> dict[str, Any]:
        """Every plan; the caller's own; and, for an administrator, every assignment
        (a person's or group's plan is an administrator's business)."""
        role = self.policy.check(caller, "plan.list")
        mine = self.effective(caller.uid)
        return {
            "plans": [p.as_dict() for p in self.cfg.plans],
            "default_plan": self.cfg.default_plan,
            "yours": mine.as_dict() if mine else None,
            "assignments": self.assignments() if role is Role.ADMIN else None,
        }

    def show(self, caller: Caller, plan: str, user: str) -> dict[str, Any]:
        """Plan PLAN (with its assignments, for an administrator), or the plan of
        USER (the caller's own, or anyone's for an administrator), or, both
        empty, the caller's plan."""
        if plan:
            role = self.policy.check(caller, "plan.show")
            found = self.find(plan)
            if found is None:
                raise InvalidArgument(f"no plan named {plan!r} in agentd.toml")
            out = found.as_dict()
            out["assignments"] = self.assignments(plan) if role is Role.ADMIN else None
            out["default"] = plan == self.cfg.default_plan
            return out
        uid = resolve("user", user) if user else caller.uid
        self.policy.check(caller, "plan.show", Resource("plan", f"of {user_name(uid)}", uid))
        mine = self.effective(uid)
        return {"uid": uid, "user": user_name(uid), "plan": mine.as_dict() if mine else None}

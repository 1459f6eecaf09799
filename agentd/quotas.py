"""Token metering: every model request's tokens, and quotas over them.

Each request an agent makes (a chat through its owner, or its runtime thinking
about a task) is one row in the usage table: prompt and completion tokens, per
agent and per owner. A quota is a number of tokens per period (daily, weekly,
monthly, in UTC calendar terms), for an agent or for an owner (all their
agents together). An agent's quota is, first found: an admin's
`agentctl quota set`, its template's token_budget, the configured default;
an owner's is an admin's setting or the configured default. 0 is unlimited.

A request is refused before it reaches the model when a quota it counts
against is used up (QuotaExceeded, saying when it resets); a request that is
admitted is charged its actual tokens when it ends, so a quota can be
overshot by at most one request's tokens, never by a second request.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .agent import Agent
from .audit import AuditLog
from .config import QUOTA_PERIODS, Config
from .errors import AgentdError, InvalidArgument, NoSuchAgent, QuotaExceeded
from .events import AgentRemoved
from .policy import Caller, Policy, Resource, Role
from .registry import Registry
from .store import SqlValue, Store
from .templates import Catalog

MAX_TOKENS = 10**15


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """Start and end (Unix time) of the UTC calendar period holding NOW."""
    t = datetime.fromtimestamp(now, UTC)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start, end = day, day + timedelta(days=1)
    elif period == "weekly":  # ISO weeks: Monday 00:00 UTC
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "monthly":
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + timedelta(days=days)
    else:
        raise InvalidArgument(f"period must be one of {', '.join(QUOTA_PERIODS)}")
    return start.timestamp(), end.timestamp()


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Quota:
    kind: str  # agent | owner
    subject: str  # agent name, or owner UID in decimal
    limit: int  # tokens per period; 0: unlimited
    period: str
    source: str  # admin | template | config
    used: int
    resets_at: float  # end of the current period

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.used >= self.limit

    def as_row(self) -> tuple[str, str, int, int, str, float, str]:
        return (
            self.kind,
            self.subject,
            self.limit,
            self.used,
            self.period,
            self.resets_at,
            self.source,
        )


class Meter:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        audit: AuditLog,
        registry: Registry,
        policy: Policy | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.audit = audit
        self.registry = registry
        self.policy = policy or registry.policy
        self.catalog = catalog or registry.catalog

    # -- quotas ------------------------------------------------------------
    def _admin_row(self, kind: str, subject: str) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT * FROM quotas WHERE kind = ? AND subject = ?", (kind, subject)
        )
        return rows[0] if rows else None

    def forget(self, event: AgentRemoved) -> None:
        """A removed agent's own quota goes with it (its usage rows stay, as
        history; a later agent of that name starts afresh)."""
        with self.store.transaction():
            self.store.execute(
                "DELETE FROM quotas WHERE kind = 'agent' AND subject = ?", (event.agent.name,)
            )

    def _used(self, column: str, value: SqlValue, since: float) -> int:
        return int(
            self.store.scalar(
                f"SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage "
                f"WHERE {column} = ? AND ts >= ?",
                (value, since),
            )
        )

    def _quota(
        self,
        kind: str,
        subject: str,
        limit: int,
        period: str,
        source: str,
        now: float,
        born: float = 0.0,
    ) -> Quota:
        row = self._admin_row(kind, subject)
        if row is not None and row["tokens"] is not None:
            limit, period, source = row["tokens"], row["period"], "admin"
        start, end = period_bounds(period, now)
        since = max(start, born, row["reset_at"] if row else 0.0)
        value: SqlValue = subject if kind == "agent" else int(subject)
        column = "agent" if kind == "agent" else "owner_uid"
        return Quota(kind, subject, limit, period, source, self._used(column, value, since), end)

    def agent_quota(self, agent: Agent, now: float | None = None) -> Quota:
        now = time.time() if now is None else now
        limit, period, source = (self.cfg.agent_token_quota, self.cfg.token_quota_period, "config")
        try:
            template = self.catalog.template(agent.template)
            if template.token_budget > 0:
                limit, period, source = template.token_budget, template.token_period, "template"
        except AgentdError:  # a template removed since: the default applies
            pass
        # usage counts from the agent's creation: an earlier agent of the same
        # name is another agent
        return self._quota("agent", agent.name, limit, period, source, now, agent.created_at)

    def owner_quota(self, owner_uid: int, now: float | None = None) -> Quota:
        now = time.time() if now is None else now
        return self._quota(
            "owner",
            str(owner_uid),
            self.cfg.owner_token_quota,
            self.cfg.token_quota_period,
            "config",
            now,
        )

    def check(self, agent: Agent, actor_uid: int) -> None:
        """Refuse (audited) if the agent's or its owner's quota is used up."""
        for q in (self.agent_quota(agent), self.owner_quota(agent.owner_uid)):
            if q.exhausted:
                who = f"agent {agent.name}" if q.kind == "agent" else f"owner uid {agent.owner_uid}"
                message = (
                    f"{who} has used {q.used} of its {q.limit} {q.period} tokens; "
                    f"the quota resets at {when(q.resets_at)}"
                )
                self.audit.append(
                    "model.refused",
                    actor_uid=actor_uid,
                    agent=agent.name,
                    agent_uid=agent.uid,
                    result="denied",
                    reason=message,
                    quota=q.kind,
                    resets_at=q.resets_at,
                )
                raise QuotaExceeded(message, q.resets_at)

    def record(
        self,
        agent: Agent,
        kind: str,
        prompt_tokens: int,
        completion_tokens: int,
        status: str,
        duration_s: float,
        task_id: int | None = None,
    ) -> None:
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO usage (ts, agent, agent_uid, owner_uid, kind, task_id, "
                "prompt_tokens, completion_tokens, status, duration_s) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    time.time(),
                    agent.name,
                    agent.uid,
                    agent.owner_uid,
                    kind,
                    task_id,
                    prompt_tokens,
                    completion_tokens,
                    status,
                    duration_s,
                ),
            )

    # -- administration ----------------------------------------------------
    def _subject(self, caller: Caller, kind: str, subject: str, action: str) -> str:
        self.policy.check(
            caller,
            action,
            Resource("quota", subject, -1, agent=subject if kind == "agent" else None),
        )
        if kind == "agent":
            if self.registry.find(subject) is None:
                raise NoSuchAgent(f"no agent named {subject!r}")
            return subject
        if kind == "owner":
            return str(_owner_uid(subject))
        raise InvalidArgument(f"quota kind must be 'agent' or 'owner', not {kind!r}")

    def set(self, caller: Caller, kind: str, subject: str, tokens: int, period: str) -> None:
        subject = self._subject(caller, kind, subject, "quota.set")
        if not 0 <= tokens <= MAX_TOKENS:
            raise InvalidArgument(f"tokens must be 0..{MAX_TOKENS} (0: unlimited)")
        period_bounds(period, time.time())  # validates the period
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO quotas (kind, subject, tokens, period, set_by, set_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (kind, subject) DO UPDATE SET "
                "tokens = excluded.tokens, period = excluded.period, "
                "set_by = excluded.set_by, set_at = excluded.set_at",
                (kind, subject, tokens, period, caller.uid, time.time()),
            )
            self.audit.append(
                "quota.set",
                actor_uid=caller.uid,
                agent=subject if kind == "agent" else None,
                kind=kind,
                subject=subject,
                tokens=tokens,
                period=period,
            )

    def reset(self, caller: Caller, kind: str, subject: str) -> None:
        """Start the current period's count afresh (the limit stays)."""
        subject = self._subject(caller, kind, subject, "quota.reset")
        now = time.time()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO quotas (kind, subject, reset_at, set_by, set_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (kind, subject) DO UPDATE SET "
                "reset_at = excluded.reset_at, set_by = excluded.set_by, "
                "set_at = excluded.set_at",
                (kind, subject, now, caller.uid, now),
            )
            self.audit.append(
                "quota.reset",
                actor_uid=caller.uid,
                agent=subject if kind == "agent" else None,
                kind=kind,
                subject=subject,
            )

    # -- reports -----------------------------------------------------------
    def quotas(self, caller: Caller) -> list[Quota]:
        """The quotas of every agent the caller may see, then of their owners."""
        agents = self.registry.visible(caller, "quota.list")
        out = [self.agent_quota(a) for a in agents]
        owners = sorted(
            {a.owner_uid for a in agents} | ({caller.uid} if caller.uid != 0 else set())
        )
        return out + [self.owner_quota(uid) for uid in owners]

    def usage_by_day(self, caller: Caller, days: int) -> list[tuple[str, str, int, int, int, int]]:
        """(day, agent, owner uid, requests, prompt, completion) for the caller's agents
        (all agents for an admin), over the last DAYS days, newest first."""
        if not 1 <= days <= 3660:
            raise InvalidArgument("days must be 1..3660")
        since = period_bounds("daily", time.time())[0] - (days - 1) * 86400
        rows = self.store.query(
            "SELECT strftime('%Y-%m-%d', ts, 'unixepoch') AS day, agent, owner_uid, "
            "COUNT(*) AS n, SUM(prompt_tokens) AS p, SUM(completion_tokens) AS c "
            "FROM usage WHERE ts >= ? GROUP BY day, agent, owner_uid "
            "ORDER BY day DESC, agent",
            (since,),
        )
        admin = self.policy.role(caller, "usage.list") is Role.ADMIN
        return [
            (r["day"], r["agent"], r["owner_uid"], r["n"], r["p"], r["c"])
            for r in rows
            if admin or r["owner_uid"] == caller.uid
        ]


def _owner_uid(subject: str) -> int:
    """An owner as a UID or a user name."""
    import pwd

    if subject.isdigit():
        return int(subject)
    try:
        return pwd.getpwnam(subject).pw_uid
    except KeyError:
        raise InvalidArgument(f"no user named {subject!r}") from None

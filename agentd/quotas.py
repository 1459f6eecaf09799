"""Token metering: every model request's tokens, and quotas over them.

Each request an agent makes (a chat through its owner, or its runtime thinking
about a task) is one row in the usage table: prompt and completion tokens, per
agent and per owner. A quota is a number of tokens per period (daily, weekly,
monthly, in UTC calendar terms), for an agent or for an owner (all their
agents together). An agent's quota is, first found: an admin's
`agentctl quota set`, its template's token_budget, the configured default;
an owner's is an admin's setting, its quota plan's tokens (agentd.plans, decided
afresh on each request), or the configured default. 0 is unlimited.

Invariant: used + held <= limit, for every quota, at every moment (unless an
admin lowers the limit). A request is admitted only if the tokens it may cost
(a prompt estimate that is an upper bound for ordinary tokenizers, plus its
max_tokens) fit next to what was used and what the requests in progress hold
(:meth:`Meter.admit`). Checking and holding are one synchronous step on the
event loop, so concurrent requests see each other's holds: N requests against
room for one admit one. The hold is corrected to the real prompt when the
service reports it (a request whose real prompt no longer fits is stopped
there, charged its prompt), and released when the request settles, in the
same step that charges what it computed: done, failed, cancelled by its
caller or timed out alike.

An agent's usage and admin quota belong to its name *and owner*: an owner who
removes an agent and creates another of the same name finds its usage and
quota as they were (removal does not reset a quota); another owner's agent of
that name starts afresh.
"""

from __future__ import annotations

import calendar
import itertools
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from .agent import Agent
from .audit import AuditLog
from .config import QUOTA_PERIODS, Config
from .errors import AgentdError, InvalidArgument, NoSuchAgent, QuotaExceeded
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
    source: str  # admin | template | plan | config
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


@dataclass
class _Hold:
    """What one request in progress holds, in the meter's table."""

    agent: str
    owner_uid: int
    tokens: int


class Reservation:
    """Tokens held for one admitted request until it settles.

    The meter's table holds only a _Hold, not this object: if the request
    never ran (its stream was dropped unstarted), the hold goes with it."""

    def __init__(
        self, meter: Meter, agent: Agent, actor_uid: int, prompt: int, max_tokens: int
    ) -> None:
        self.meter = meter
        self.agent = agent
        self.actor_uid = actor_uid
        self.max_tokens = max_tokens
        self.hold = _Hold(agent.name, agent.owner_uid, prompt + max_tokens)
        key = next(meter._keys)
        meter._holds[key] = self.hold
        self._release = weakref.finalize(self, meter._holds.pop, key, None)

    def correct(self, prompt_tokens: int) -> None:
        """The real prompt is known: hold it plus max_tokens instead of the
        estimate; QuotaExceeded (audited) if that no longer fits."""
        tokens = prompt_tokens + self.max_tokens
        if tokens > self.hold.tokens:
            self.meter.check(self.agent, self.actor_uid, tokens, ignore=self.hold)
        self.hold.tokens = tokens

    def settle(
        self,
        kind: str,
        prompt_tokens: int,
        completion_tokens: int,
        status: str,
        duration_s: float,
        task_id: int | None = None,
        first_token_s: float | None = None,
    ) -> None:
        """Charge what was computed (nothing: no row) and let go of the hold,
        in one step: no admission sees the tokens both held and used."""
        try:
            if prompt_tokens or completion_tokens or status == "ok":
                self.meter.record(
                    self.agent,
                    kind,
                    prompt_tokens,
                    completion_tokens,
                    status,
                    duration_s,
                    task_id,
                    first_token_s,
                )
        finally:
            self._release()


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
        # the requests in progress, in memory: a restart ends them all
        self._holds: dict[int, _Hold] = {}
        self._keys = itertools.count(1)

    # -- quotas ------------------------------------------------------------
    def _admin_row(self, kind: str, subject: str, owner_uid: int) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT * FROM quotas WHERE kind = ? AND subject = ? AND owner_uid = ?",
            (kind, subject, owner_uid),
        )
        return rows[0] if rows else None

    def _used(self, since: float, owner_uid: int, agent: str | None = None) -> int:
        """Tokens used since SINCE by the owner's agents, or by its agent AGENT
        (a name: every agent of that name the owner had counts)."""
        where = "owner_uid = ? AND ts >= ?"
        params: tuple[SqlValue, ...] = (owner_uid, since)
        if agent is not None:
            where, params = "agent = ? AND " + where, (agent, *params)
        return int(
            self.store.scalar(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage "
                f"WHERE {where}",
                params,
            )
        )

    def _quota(
        self,
        kind: str,
        subject: str,
        owner_uid: int,
        default: tuple[int, str, str],
        now: float,
    ) -> Quota:
        limit, period, source = default
        row = self._admin_row(kind, subject, owner_uid)
        if row is not None and row["tokens"] is not None:
            limit, period, source = row["tokens"], row["period"], "admin"
        start, end = period_bounds(period, now)
        since = max(start, row["reset_at"] if row else 0.0)
        used = self._used(since, owner_uid, subject if kind == "agent" else None)
        return Quota(kind, subject, limit, period, source, used, end)

    def agent_quota(self, agent: Agent, now: float | None = None) -> Quota:
        now = time.time() if now is None else now
        default = (self.cfg.agent_token_quota, self.cfg.token_quota_period, "config")
        try:
            template = self.catalog.template(agent.template)
            if template.token_budget > 0:
                default = (template.token_budget, template.token_period, "template")
        except AgentdError:  # a template removed since: the default applies
            pass
        return self._quota("agent", agent.name, agent.owner_uid, default, now)

    def owner_quota(self, owner_uid: int, now: float | None = None) -> Quota:
        now = time.time() if now is None else now
        default = (self.cfg.owner_token_quota, self.cfg.token_quota_period, "config")
        plan = self.registry.plans.effective(owner_uid)
        if plan is not None:
            default = (plan.plan.tokens, plan.plan.period, "plan")
        return self._quota("owner", str(owner_uid), owner_uid, default, now)

    def held(self, agent: Agent, ignore: _Hold | None = None) -> tuple[int, int]:
        """Tokens held by requests in progress: (this agent's, its owner's)."""
        mine = owners = 0
        for h in self._holds.values():
            if h is ignore or h.owner_uid != agent.owner_uid:
                continue
            owners += h.tokens
            if h.agent == agent.name:
                mine += h.tokens
        return mine, owners

    def check(
        self, agent: Agent, actor_uid: int, tokens: int = 1, ignore: _Hold | None = None
    ) -> None:
        """Refuse (audited) unless TOKENS more fit in the agent's and its owner's
        quotas next to their usage and the holds of the requests in progress."""
        held = self.held(agent, ignore)
        quotas = (self.agent_quota(agent), self.owner_quota(agent.owner_uid))
        for q, h in zip(quotas, held, strict=True):
            if q.limit > 0 and q.used + h + tokens > q.limit:
                self._refuse(agent, actor_uid, q, h, tokens)

    def admit(
        self, agent: Agent, actor_uid: int, prompt_estimate: int, max_tokens: int
    ) -> Reservation:
        """Check and hold in one step (no await: concurrent requests see the hold)."""
        self.check(agent, actor_uid, prompt_estimate + max_tokens)
        return Reservation(self, agent, actor_uid, prompt_estimate, max_tokens)

    def _refuse(self, agent: Agent, actor_uid: int, q: Quota, held: int, tokens: int) -> NoReturn:
        who = f"agent {agent.name}" if q.kind == "agent" else f"owner uid {agent.owner_uid}"
        message = f"{who} has used {q.used} of its {q.limit} {q.period} tokens"
        if held:
            message += f", requests in progress hold {held} more"
        if tokens > 1:
            message += f", and this request may need up to {tokens} (prompt and max_tokens)"
        message += f"; the quota resets at {when(q.resets_at)}"
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
        first_token_s: float | None = None,
    ) -> None:
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO usage (ts, agent, agent_uid, owner_uid, kind, task_id, "
                "prompt_tokens, completion_tokens, status, duration_s, first_token_s) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
                    first_token_s,
                ),
            )

    def check_owner(self, owner_uid: int, actor_uid: int, tokens: int) -> None:
        """Refuse (audited) unless TOKENS more fit in OWNER_UID's quota: work done
        for an owner, not for one of its agents (embedding its knowledge base)."""
        q = self.owner_quota(owner_uid)
        held = sum(h.tokens for h in self._holds.values() if h.owner_uid == owner_uid)
        if q.limit > 0 and q.used + held + tokens > q.limit:
            message = (
                f"owner uid {owner_uid} has used {q.used} of its {q.limit} {q.period} tokens"
                f"; the quota resets at {when(q.resets_at)}"
            )
            self.audit.append(
                "model.refused", actor_uid=actor_uid, result="denied", reason=message, quota="owner"
            )
            raise QuotaExceeded(message, q.resets_at)

    def record_owner(self, owner_uid: int, kind: str, tokens: int, duration_s: float) -> None:
        """Charge OWNER_UID's quota TOKENS for work of no agent (agent '', uid -1)."""
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO usage (ts, agent, agent_uid, owner_uid, kind, task_id, "
                "prompt_tokens, completion_tokens, status, duration_s) "
                "VALUES (?,'',-1,?,?,NULL,?,0,'ok',?)",
                (time.time(), owner_uid, kind, tokens, duration_s),
            )

    # -- administration ----------------------------------------------------
    def _subject(self, caller: Caller, kind: str, subject: str, action: str) -> tuple[str, int]:
        """(subject, owner UID): an agent's quota row is its owner's, for that name."""
        self.policy.check(
            caller,
            action,
            Resource("quota", subject, -1, agent=subject if kind == "agent" else None),
        )
        if kind == "agent":
            agent = self.registry.find(subject)
            if agent is None:
                raise NoSuchAgent(f"no agent named {subject!r}")
            return subject, agent.owner_uid
        if kind == "owner":
            uid = _owner_uid(subject)
            return str(uid), uid
        raise InvalidArgument(f"quota kind must be 'agent' or 'owner', not {kind!r}")

    def set(self, caller: Caller, kind: str, subject: str, tokens: int, period: str) -> None:
        subject, owner_uid = self._subject(caller, kind, subject, "quota.set")
        if not 0 <= tokens <= MAX_TOKENS:
            raise InvalidArgument(f"tokens must be 0..{MAX_TOKENS} (0: unlimited)")
        period_bounds(period, time.time())  # validates the period
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO quotas (kind, subject, owner_uid, tokens, period, set_by, set_at) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (kind, subject, owner_uid) DO UPDATE SET "
                "tokens = excluded.tokens, period = excluded.period, "
                "set_by = excluded.set_by, set_at = excluded.set_at",
                (kind, subject, owner_uid, tokens, period, caller.uid, time.time()),
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
        subject, owner_uid = self._subject(caller, kind, subject, "quota.reset")
        now = time.time()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO quotas (kind, subject, owner_uid, reset_at, set_by, set_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (kind, subject, owner_uid) DO UPDATE SET "
                "reset_at = excluded.reset_at, set_by = excluded.set_by, "
                "set_at = excluded.set_at",
                (kind, subject, owner_uid, now, caller.uid, now),
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

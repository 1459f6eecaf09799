"""The audit trail as callers read it: the rows each may see, by event type.

The audit log (agentd.audit) is one hash-chained sequence for everybody; here
it is read for one caller: agentd.policy decides which rows show, and shell
patterns on the action (``task.*``) are applied here, in agentd, so a client
following only task events does not fetch every other row to drop it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from .agent import resource
from .audit import AuditLog, Entry, Verdict
from .errors import InvalidArgument
from .policy import Caller, Policy, Resource
from .registry import Registry

MAX_LIMIT = 10000
MAX_PATTERNS = 64


class EventLog:
    def __init__(self, audit: AuditLog, registry: Registry, policy: Policy) -> None:
        self.audit = audit
        self.registry = registry
        self.policy = policy

    def entries(
        self, caller: Caller, after_seq: int, limit: int, types: Sequence[str] = ()
    ) -> list[Entry]:
        """Up to LIMIT rows after AFTER_SEQ that CALLER may see and whose action
        matches one of TYPES (all, if empty)."""
        self.policy.check(caller, "audit.list")
        if len(types) > MAX_PATTERNS or not all(isinstance(t, str) and t for t in types):
            raise InvalidArgument(f"types must be at most {MAX_PATTERNS} non-empty patterns")
        limit = max(1, min(int(limit or 1000), MAX_LIMIT))
        rows: list[Entry] = []
        while len(rows) < limit:
            batch = self.audit.entries(after=after_seq, limit=limit)
            if not batch:
                break
            after_seq = batch[-1].seq
            rows += [e for e in batch if self._matches(e, types) and self._visible(caller, e)]
        return rows[:limit]

    @staticmethod
    def _matches(entry: Entry, types: Sequence[str]) -> bool:
        return not types or any(fnmatch.fnmatchcase(entry.action, t) for t in types)

    def _visible(self, caller: Caller, entry: Entry) -> bool:
        agent = self.registry.find(entry.agent) if entry.agent else None
        subject: Resource | None = None
        if agent is not None and agent.uid == entry.agent_uid:
            subject = resource(agent)
        return self.policy.sees_entry(caller, entry.actor_uid, subject)

    def verify(self, caller: Caller) -> Verdict:
        self.policy.check(caller, "audit.verify")
        return self.audit.verify()

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
        subjects: dict[int, Resource | None] = {}  # one look-up per agent per call
        while len(rows) < limit:
            batch = self.audit.entries(after=after_seq, limit=limit)
            if not batch:
                break
            after_seq = batch[-1].seq
            rows += [
                e for e in batch if self._matches(e, types) and self._visible(caller, e, subjects)
            ]
        return rows[:limit]

    @staticmethod
    def _matches(entry: Entry, types: Sequence[str]) -> bool:
        return not types or any(fnmatch.fnmatchcase(entry.action, t) for t in types)

    def _visible(self, caller: Caller, entry: Entry, subjects: dict[int, Resource | None]) -> bool:
        if entry.agent_id is None:  # a row from before ids: resolved by its time
            return self.policy.sees_entry(caller, entry.actor_uid, self._subject(entry))
        if entry.agent_id not in subjects:
            subjects[entry.agent_id] = self._subject(entry)
        return self.policy.sees_entry(caller, entry.actor_uid, subjects[entry.agent_id])

    def _subject(self, entry: Entry) -> Resource | None:
        """The agent a row is about, by its id (never reused: a new agent of the
        same name and UID does not see the old one's rows). Rows written before
        agents had ids name the newest agent of their name and UID created by
        the row's time: the one that existed then."""
        if entry.agent_id is not None:
            agent = self.registry.by_id(entry.agent_id, live=False)
        elif entry.agent is not None and entry.agent_uid is not None:
            agent = self.registry.as_of(entry.agent, entry.agent_uid, entry.ts)
        else:
            agent = None
        return resource(agent) if agent is not None else None

    def verify(self, caller: Caller) -> Verdict:
        self.policy.check(caller, "audit.verify")
        return self.audit.verify()

"""Messages between agents, and between a person and its agents.

Invariants, and why:
- Who may write to whom is decided here, from what agentd knows, never from
  the message: an agent writes to an agent of its own owner or of a team it
  is in, or to its owner ("@owner"); a person writes to an agent it manages
  (policy message.send). Anything else is PermissionDenied, audited.
- Durable before it is acknowledged to the sender: the row is committed in
  SQLite, then the recipient's long poll is woken (after commit: a crash
  never shows a message that is not stored).
- Ordered: ids grow, and a recipient receives its messages in id order, so
  every sender-receiver pair is ordered too.
- At least once: Receive hands out the oldest unacknowledged messages and
  marks them delivered; one not acknowledged within VISIBILITY_S, or whose
  runtime restarted (Register), is handed out again. Ack is idempotent.
- Bounded: subject and body sizes, a sender's rate (agentd.toml
  messages_per_second, messages_burst: agentd.limits), and at most
  INBOX_MAX unacknowledged messages per agent; acknowledged ones are deleted
  after KEEP_S. Past a bound: LimitExceeded (or InvalidArgument), audited.
- Audit rows carry metadata (ids, sender, recipient, sizes), never the
  subject or body, which only the sender, the recipient and their owners
  read (ListMessages checks the agent's ownership).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .agent import Agent, resource
from .audit import AuditLog
from .errors import AgentdError, InvalidArgument, LimitExceeded, NoSuchAgent, PermissionDenied
from .events import Events, MessageSent
from .policy import Caller, Policy
from .registry import Registry
from .store import Store

SUBJECT_CHARS = 200
BODY_CHARS = 64 * 1024
INBOX_MAX = 1000  # unacknowledged messages one agent may have waiting
VISIBILITY_S = 60.0  # a delivered, unacknowledged message is handed out again after this
MAX_RECEIVE = 100  # messages one Receive returns
MAX_LIST = 500  # messages one ListMessages returns
MAX_WAIT_MS = 60_000  # the longest long poll
KEEP_S = 30 * 86400  # acknowledged messages are deleted this long after
OWNER = "@owner"  # Send's recipient meaning the agent's owner
UNREAD_IN_PROMPT = 10  # unread messages shown in a task's first prompt


@dataclass(frozen=True)
class Message:
    id: int
    sender_uid: int
    sender_agent_id: int | None
    recipient_uid: int
    recipient_agent_id: int | None
    subject: str
    body: str
    sent_at: float
    delivered_at: float | None
    deliveries: int
    acked_at: float | None


_SELECT = (
    "SELECT m.*, s.name AS sender, r.name AS recipient FROM messages m "
    "LEFT JOIN agents s ON s.id = m.sender_agent_id "
    "LEFT JOIN agents r ON r.id = m.recipient_agent_id "
)


def view(row: dict[str, Any]) -> dict[str, Any]:
    """A message as callers get it (JSON)."""
    return {
        "id": row["id"],
        "from": row["sender"] or f"uid {row['sender_uid']}",
        "from_kind": "agent" if row["sender_agent_id"] is not None else "person",
        "from_uid": row["sender_uid"],
        "to": row["recipient"] or f"uid {row['recipient_uid']}",
        "to_kind": "agent" if row["recipient_agent_id"] is not None else "person",
        "subject": row["subject"],
        "body": row["body"],
        "sent_at": row["sent_at"],
        "deliveries": row["deliveries"],
        "acked_at": row["acked_at"],
    }


class Mailbox:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        audit: AuditLog,
        events: Events,
        share_team: Any = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.audit = audit
        self.events = events
        self.policy: Policy = registry.policy
        # agentd.teams.Teams.share(a, b): whether agents A and B are in one team
        self.share_team = share_team or (lambda _a, _b: False)
        # agent id -> one event per long poll, set when a message to or from it is sent
        self._wake: dict[int, set[asyncio.Event]] = {}
        events.subscribe(MessageSent, self._on_sent)

    # -- sending ---------------------------------------------------------------------------
    def send_from_agent(self, agent: Agent, to: str, subject: str, body: str) -> int:
        """AGENT writes to agent TO (its owner's or a teammate) or to its owner."""
        caller = Caller(agent.uid, name=agent.name)
        if to == OWNER:
            return self._send(caller, agent, None, agent.owner_uid, subject, body)
        target = self.registry.find(to) if isinstance(to, str) else None
        if target is None or target.state != "present":
            self._refuse(caller, NoSuchAgent(f"no agent named {str(to)[:64]!r}"), agent)
        if target.id == agent.id:
            self._refuse(caller, InvalidArgument("an agent does not write to itself"), agent)
        if target.owner_uid != agent.owner_uid and not self.share_team(agent.id, target.id):
            self.policy.refuse(
                caller,
                "runtime.send",
                PermissionDenied(
                    f"agent {agent.name!r} may not write to {target.name!r}: another owner's "
                    "agent in no team with it"
                ),
                result="denied",
                agent=agent.name,
                agent_uid=agent.uid,
                to=target.name,
            )
        return self._send(caller, agent, target, target.owner_uid, subject, body)

    def send_from_person(self, caller: Caller, to: str, subject: str, body: str) -> int:
        """A person writes to an agent it manages."""
        target = self.registry.find(to) if isinstance(to, str) else None
        if target is None or target.state != "present":
            raise NoSuchAgent(f"no agent named {str(to)[:64]!r}")
        self.policy.check(caller, "message.send", resource(target))
        return self._send(caller, None, target, target.uid, subject, body)

    def _send(
        self,
        caller: Caller,
        sender: Agent | None,
        target: Agent | None,
        recipient_uid: int,
        subject: str,
        body: str,
    ) -> int:
        action = "runtime.send" if sender is not None else "message.send"
        try:
            _check(subject, body)
            if not self.policy.rates.take("message", caller.uid):
                wait = self.policy.rates.wait("message", caller.uid)
                raise LimitExceeded(
                    f"uid {caller.uid} sends faster than "
                    f"{self.policy.limits.messages_per_second} messages/s "
                    f"(messages_per_second); try again in {wait:.1f} s"
                )
            if target is not None and self._waiting(target.id) >= INBOX_MAX:
                raise LimitExceeded(
                    f"agent {target.name!r} has {INBOX_MAX} unread messages: its inbox is full"
                )
        except AgentdError as e:
            self._refuse(caller, e, sender, target, action)
        now = time.time()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO messages (sender_uid, sender_agent_id, recipient_uid, "
                "recipient_agent_id, subject, body, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    caller.uid,
                    sender.id if sender else None,
                    recipient_uid,
                    target.id if target else None,
                    subject,
                    body,
                    now,
                ),
            )
            mid = int(self.store.scalar("SELECT last_insert_rowid()"))
            self.audit.append(
                "message.sent",
                actor_uid=caller.uid,
                agent=sender.name if sender else (target.name if target else None),
                agent_uid=sender.uid if sender else (target.uid if target else None),
                message=mid,
                to=target.name if target else f"uid {recipient_uid}",
                subject_chars=len(subject),
                body_chars=len(body),
            )
            self.events.publish(MessageSent(self._get(mid)))
        return mid

    def _refuse(
        self,
        caller: Caller,
        error: AgentdError,
        sender: Agent | None,
        target: Agent | None = None,
        action: str = "runtime.send",
    ) -> NoReturn:
        self.policy.refuse(
            caller,
            action,
            error,
            agent=sender.name if sender else None,
            agent_uid=sender.uid if sender else None,
            to=target.name if target else "",
        )

    def _get(self, mid: int) -> Message:
        row = self.store.query("SELECT * FROM messages WHERE id=?", (mid,))[0]
        return Message(**row)

    def _waiting(self, agent_id: int) -> int:
        return int(
            self.store.scalar(
                "SELECT count(*) FROM messages INDEXED BY messages_inbox "
                "WHERE recipient_agent_id=? AND acked_at IS NULL",
                (agent_id,),
            )
        )

    # -- receiving (an agent) --------------------------------------------------------------
    async def receive(self, agent: Agent, most: int, timeout: float) -> list[dict[str, Any]]:
        """Up to MOST of AGENT's due messages, oldest first, marked delivered;
        waits up to TIMEOUT seconds for one if there is none."""
        most = max(1, min(int(most) or MAX_RECEIVE, MAX_RECEIVE))
        # a delivered message comes due again within VISIBILITY_S: look at least that often
        return await self._poll(agent.id, lambda: self._take(agent, most), timeout, VISIBILITY_S)

    async def _poll(
        self, agent_id: int, look: Callable[[], list[dict[str, Any]]], timeout: float, every: float
    ) -> list[dict[str, Any]]:
        """LOOK's answer once it has one, or [] after TIMEOUT seconds: woken by
        each message to or from AGENT_ID (its own event, set before it looks,
        so a message sent while it looks is not missed)."""
        deadline = time.monotonic() + timeout
        wake = asyncio.Event()
        waiters = self._wake.setdefault(agent_id, set())
        waiters.add(wake)
        try:
            while True:
                wake.clear()
                got = look()
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(left, every))
        finally:
            waiters.discard(wake)
            if not waiters:
                self._wake.pop(agent_id, None)

    def _take(self, agent: Agent, most: int) -> list[dict[str, Any]]:
        now = time.time()
        with self.store.transaction():
            rows = self.store.query(
                _SELECT + "WHERE m.recipient_agent_id=? AND m.acked_at IS NULL "
                "AND (m.delivered_at IS NULL OR m.delivered_at <= ?) ORDER BY m.id LIMIT ?",
                (agent.id, now - VISIBILITY_S, most),
            )
            if rows:
                self.store.execute(
                    "UPDATE messages SET delivered_at=?, deliveries=deliveries+1 "
                    "WHERE id IN (SELECT value FROM json_each(?))",
                    (now, _ids([r["id"] for r in rows])),
                )
        return [view({**r, "deliveries": r["deliveries"] + 1}) for r in rows]

    def ack(self, agent: Agent, ids: Sequence[int]) -> int:
        """Acknowledge AGENT's messages IDS (again: nothing); how many were new."""
        if len(ids) > MAX_RECEIVE:
            raise InvalidArgument(f"acknowledge at most {MAX_RECEIVE} messages at once")
        with self.store.transaction():
            mine = self.store.query(
                "SELECT id, acked_at FROM messages WHERE recipient_agent_id=? "
                "AND id IN (SELECT value FROM json_each(?))",
                (agent.id, _ids(ids)),
            )
            if len(mine) != len(set(ids)):
                raise InvalidArgument("some of these messages are not addressed to this agent")
            fresh = [r["id"] for r in mine if r["acked_at"] is None]
            self.store.execute(
                "UPDATE messages SET acked_at=? WHERE id IN (SELECT value FROM json_each(?))",
                (time.time(), _ids(fresh)),
            )
        return len(fresh)

    def release(self, agent: Agent) -> None:
        """A fresh runtime: what its predecessor received but did not
        acknowledge is due again at once."""
        self.store.execute(
            "UPDATE messages SET delivered_at=NULL WHERE recipient_agent_id=? "
            "AND acked_at IS NULL AND delivered_at IS NOT NULL",
            (agent.id,),
        )

    def unread(self, agent: Agent, most: int = UNREAD_IN_PROMPT) -> list[dict[str, Any]]:
        """AGENT's oldest unacknowledged messages, for its next task's prompt
        (not marked delivered: the loop acknowledges what it showed)."""
        rows = self.store.query(
            _SELECT + "WHERE m.recipient_agent_id=? AND m.acked_at IS NULL ORDER BY m.id LIMIT ?",
            (agent.id, most),
        )
        return [view(r) for r in rows]

    # -- reading (a person) ----------------------------------------------------------------
    def listing(self, caller: Caller, name: str, after: int, most: int) -> list[dict[str, Any]]:
        """Messages to and from agent NAME (one CALLER manages) after id AFTER."""
        agent = self._managed(caller, name)
        return self._conversation(agent, after, most)

    async def follow(
        self, caller: Caller, name: str, after: int, most: int, timeout: float
    ) -> list[dict[str, Any]]:
        """listing(), waiting up to TIMEOUT seconds for a message if there is none."""
        agent = self._managed(caller, name)
        return await self._poll(
            agent.id, lambda: self._conversation(agent, after, most), timeout, timeout
        )

    def _managed(self, caller: Caller, name: str) -> Agent:
        agent = self.registry.find(name) if isinstance(name, str) else None
        if agent is None:
            raise NoSuchAgent(f"no agent named {str(name)[:64]!r}")
        self.policy.check(caller, "message.list", resource(agent))
        return agent

    def _conversation(self, agent: Agent, after: int, most: int) -> list[dict[str, Any]]:
        most = max(1, min(int(most) or MAX_LIST, MAX_LIST))
        rows = self.store.query(
            "SELECT * FROM (" + _SELECT + "WHERE m.recipient_agent_id=? AND m.id>? "
            "UNION " + _SELECT + "WHERE m.sender_agent_id=? AND m.id>?) ORDER BY id LIMIT ?",
            (agent.id, after, agent.id, after, most),
        )
        return [view(r) for r in rows]

    # -- upkeep ----------------------------------------------------------------------------
    def _on_sent(self, event: MessageSent) -> None:
        m = event.message
        for agent_id in (m.recipient_agent_id, m.sender_agent_id):
            for wake in self._wake.get(agent_id, ()):
                wake.set()

    def prune(self, now: float | None = None) -> int:
        """Delete messages acknowledged more than KEEP_S ago; how many."""
        cutoff = (now or time.time()) - KEEP_S
        n = int(
            self.store.scalar(
                "SELECT count(*) FROM messages WHERE acked_at IS NOT NULL AND acked_at < ?",
                (cutoff,),
            )
        )
        if n:
            self.store.execute(
                "DELETE FROM messages WHERE acked_at IS NOT NULL AND acked_at < ?", (cutoff,)
            )
        return n


def _check(subject: object, body: object) -> None:
    if not isinstance(subject, str) or len(subject) > SUBJECT_CHARS:
        raise InvalidArgument(f"subject: a string of at most {SUBJECT_CHARS} characters")
    if not isinstance(body, str) or not body.strip() or len(body) > BODY_CHARS:
        raise InvalidArgument(f"body: a string of 1 to {BODY_CHARS} characters, not all blank")


def _ids(ids: Sequence[int]) -> str:
    return json.dumps([int(i) for i in ids])

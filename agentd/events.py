"""Domain events: typed facts about agents, units, jobs, tasks and the audit log,
announced only once they are durable.

One mechanism for everything that reacts to a change: the D-Bus signals, the
scheduler, long-poll waiters (and later `top` and notifications) subscribe by
event type. ``publish`` inside a store transaction holds the event until the
transaction commits and drops it if it rolls back, so no subscriber ever sees
a change that a crash could still undo, and a signal never runs ahead of the
row a client would read back. Subscribers run on the event-loop thread in
subscription order; one that fails is logged and the others still run: a
listener's bug must not fail the change that was already committed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

log = logging.getLogger("agentd")


class Event:
    """Base of every domain event."""


@dataclass(frozen=True)
class AgentCreated(Event):
    agent: Any  # agentd.registry.Agent


@dataclass(frozen=True)
class AgentRemoved(Event):
    agent: Any


@dataclass(frozen=True)
class AgentChanged(Event):
    """Online state, last-seen or the outcome of a job changed."""

    agent: Any


@dataclass(frozen=True)
class UnitStateChanged(Event):
    """systemd reported a new ActiveState for agent-NAME.service."""

    name: str
    active_state: str


@dataclass(frozen=True)
class JobFinished(Event):
    """A start or stop agentd queued ended; result as systemd's JobRemoved."""

    agent: Any
    job: str
    operation: str  # start | stop
    result: str


@dataclass(frozen=True)
class TaskChanged(Event):
    task: Any  # agentd.tasks.model.Task
    event: str  # task.created, task.claimed, ...


@dataclass(frozen=True)
class GoalChanged(Event):
    goal: Any  # agentd.goals.model.Goal, as committed
    event: str  # goal.created, goal.planning, goal.running, ... goal.completed


@dataclass(frozen=True)
class TeamChanged(Event):
    team: str  # its name
    event: str  # created, members, removed


@dataclass(frozen=True)
class MessageSent(Event):
    message: Any  # agentd.messages.Message, as committed


@dataclass(frozen=True)
class AuditAppended(Event):
    entry: Any  # agentd.audit.Entry


E = TypeVar("E", bound=Event)


class Transactional(Protocol):
    def in_transaction(self) -> bool: ...
    def after_commit(self, hook: Callable[[], None]) -> None: ...


class Events:
    def __init__(self, store: Transactional | None = None) -> None:
        self.store = store
        self._subscribers: dict[type[Event], list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        self._subscribers[kind].append(handler)

    def unsubscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        if handler in self._subscribers[kind]:
            self._subscribers[kind].remove(handler)

    def publish(self, event: Event) -> None:
        """Deliver EVENT now, or at commit if a transaction is open."""
        if self.store is not None and self.store.in_transaction():
            self.store.after_commit(lambda: self._deliver(event))
        else:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        for handler in list(self._subscribers[type(event)]):
            try:
                handler(event)
            except Exception:
                log.exception("%s subscriber %r failed", type(event).__name__, handler)

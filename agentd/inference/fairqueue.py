"""The engine's admission queue: bounded, shared fairly by owners, then by
each owner's agents.

agentd runs every agent as a Unix user of some owner, and one owner may have
many agents. Fairness by agent alone let one owner take the shared model
with many agents: four agents at 16 requests each filled ``max_queue=64``,
and each of its agents got a turn in each admission round. So:

Invariants:

- Admission is round-robin across owners first, then across that owner's
  agents: an owner with four agents and an owner with one get one admission
  each per round, and an owner's agents take turns within its share.
- The queue holds at most ``max_queue`` requests; one owner at most
  ``per_owner`` of them, one agent at most ``per_agent`` (all agents of an
  owner together within the owner's). Beyond, :class:`Overloaded` says
  which of the three is full.
- ``per_owner`` is a fixed share, not the queue divided by the owners
  present at the time: a share that shrank as owners came could not take
  back what an earlier owner already holds, so the first owner could still
  fill the queue and shut the next ones out. With a fixed share an owner
  meets a full queue only when ``max_queue // per_owner`` other owners
  (4 by default) each hold theirs, however many agents each has. An owner
  alone keeps every sequence busy (free ones take requests beyond the
  shares); only its requests that would wait behind its own are refused.
- A request without an owner (an older client) is its own owner: the agent
  key stands for the owner (a separate namespace, so it never shares an
  owner's bucket).

Not thread-safe: the engine holds its lock around every call.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass

from agentd.inference.errors import Overloaded
from agentd.inference.stream import Request

OwnerKey = tuple[str, str]  # ("owner", owner) or ("agent", agent) for a request without one


def owner_key(req: Request) -> OwnerKey:
    return ("owner", req.owner) if req.owner is not None else ("agent", req.agent)


@dataclass(frozen=True)
class Limits:
    total: int
    per_owner: int
    per_agent: int


class FairQueue:
    """Requests waiting for a sequence, per owner, per agent."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._owners: collections.OrderedDict[
            OwnerKey, collections.OrderedDict[str, collections.deque[Request]]
        ] = collections.OrderedDict()
        self._per_owner: dict[OwnerKey, int] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[Request]:
        for agents in self._owners.values():
            for q in agents.values():
                yield from q

    def owner_queued(self, key: OwnerKey) -> int:
        return self._per_owner.get(key, 0)

    def push(self, req: Request, free: int = 0) -> None:
        """Queue REQ at the back of its agent's queue, or Overloaded; FREE:
        sequences free now (requests up to that many do not wait)."""
        key = owner_key(req)
        agents = self._owners.get(key)
        q = agents.get(req.agent) if agents is not None else None
        held = self._per_owner.get(key, 0)
        if self._n >= free:
            self._check(q, held)
        if agents is None:
            agents = self._owners[key] = collections.OrderedDict()
        if q is None:
            q = agents[req.agent] = collections.deque()
        q.append(req)
        self._per_owner[key] = held + 1
        self._n += 1

    def _check(self, q: collections.deque[Request] | None, held: int) -> None:
        """Room for one more waiting request of this agent (its queue Q) and
        owner (HELD waiting)? Overloaded names the share that is full."""
        lim = self.limits
        if q is not None and len(q) >= lim.per_agent:
            raise Overloaded(len(q), lim.per_agent, scope="agent", total=lim.total)
        if held >= lim.per_owner:
            raise Overloaded(held, lim.per_owner, scope="owner", total=lim.total)
        if self._n >= lim.total:
            raise Overloaded(self._n, lim.total)

    def pop(self) -> Request:
        """The next request: the head of the first owner's first agent; that
        agent goes to the back of its owner's turn, that owner to the back
        of the owners'. IndexError when empty."""
        if not self._owners:
            raise IndexError("pop from an empty queue")
        key, agents = next(iter(self._owners.items()))
        agent, q = next(iter(agents.items()))
        req = q.popleft()
        if q:
            agents.move_to_end(agent)
        else:
            del agents[agent]
        if agents:
            self._owners.move_to_end(key)
        else:
            del self._owners[key]
        self._taken(key)
        return req

    def remove(self, req: Request) -> bool:
        """Take a queued REQ out (cancelled); False if it is not queued."""
        key = owner_key(req)
        agents = self._owners.get(key)
        q = agents.get(req.agent) if agents is not None else None
        if agents is None or q is None or req not in q:
            return False
        q.remove(req)
        if not q:
            del agents[req.agent]
            if not agents:
                del self._owners[key]
        self._taken(key)
        return True

    def _taken(self, key: OwnerKey) -> None:
        self._n -= 1
        left = self._per_owner[key] - 1
        if left:
            self._per_owner[key] = left
        else:
            del self._per_owner[key]

    def clear(self) -> list[Request]:
        """Empty the queue; what it held, in no particular order."""
        out = list(self)
        self._owners.clear()
        self._per_owner.clear()
        self._n = 0
        return out

"""Chat sessions in agentd's store (tables of store migration 11, agentd.sessionschema).

An exchange is stored whole or not at all: the user's turn and the answer in
one transaction, when the answer is done. A session row comes into being
with its first exchange, so a first message that fails leaves nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import NoSuchSession
from ..store import Store
from .fit import DEFAULT_TOKENS_PER_CHAR, Turn, title


@dataclass(frozen=True)
class Session:
    id: int
    agent_id: int
    owner_uid: int
    caller_uid: int
    title: str
    summary: str
    folded: int  # turns folded into the summary (the oldest)
    facts: int  # facts written to the agent's memory
    turns: int
    tokens_per_char: float
    created_at: float
    updated_at: float

    def as_dict(self, agent: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent": agent,
            "owner_uid": self.owner_uid,
            "caller_uid": self.caller_uid,
            "title": self.title,
            "turns": self.turns,
            "folded": self.folded,
            "facts": self.facts,
            "created": self.created_at,
            "updated": self.updated_at,
        }


class SessionStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, session_id: int) -> Session:
        rows = self.store.query("SELECT * FROM chat_sessions WHERE id=?", (session_id,))
        if not rows:
            raise NoSuchSession(f"no session {session_id}")
        return Session(**rows[0])

    def of_agents(self, agent_ids: list[int]) -> list[Session]:
        """The sessions of AGENT_IDS, the most recently used first."""
        if not agent_ids:
            return []
        marks = ",".join("?" * len(agent_ids))
        rows = self.store.query(
            f"SELECT * FROM chat_sessions WHERE agent_id IN ({marks}) "
            "ORDER BY updated_at DESC, id DESC",
            tuple(agent_ids),
        )
        return [Session(**r) for r in rows]

    def count(self, agent_id: int) -> int:
        return int(
            self.store.scalar("SELECT count(*) FROM chat_sessions WHERE agent_id=?", (agent_id,))
        )

    def turns(self, session_id: int, first: int = 0) -> list[Turn]:
        """The turns from the FIRST-th (0: all), in order."""
        rows = self.store.query(
            "SELECT seq, role, content FROM chat_turns WHERE session_id=? AND seq>=? ORDER BY seq",
            (session_id, first),
        )
        return [Turn(r["seq"], r["role"], r["content"]) for r in rows]

    def add_exchange(
        self,
        session: Session | None,
        agent_id: int,
        owner_uid: int,
        caller_uid: int,
        exchange: tuple[str, str, int],
        tokens_per_char: float,
    ) -> int:
        """Store a question and its answer (EXCHANGE: question, answer, the
        answer's tokens), in SESSION or a new one; the session's id."""
        question, answer, answer_tokens = exchange
        now = time.time()
        with self.store.transaction():
            if session is None:
                self.store.execute(
                    "INSERT INTO chat_sessions (agent_id, owner_uid, caller_uid, title, "
                    "tokens_per_char, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (agent_id, owner_uid, caller_uid, title(question), tokens_per_char, now, now),
                )
                sid, seq = int(self.store.scalar("SELECT last_insert_rowid()")), 0
            else:
                sid, seq = session.id, session.turns
            for row in (
                (sid, seq, "user", question, 0, now),
                (sid, seq + 1, "assistant", answer, answer_tokens, now),
            ):
                self.store.execute(
                    "INSERT INTO chat_turns (session_id, seq, role, content, tokens, created_at) "
                    "VALUES (?,?,?,?,?,?)",
                    row,
                )
            self.store.execute(
                "UPDATE chat_sessions SET turns=?, tokens_per_char=?, updated_at=? WHERE id=?",
                (seq + 2, tokens_per_char, now, sid),
            )
        return sid

    def fold(self, session_id: int, folded: int, summary: str, facts: int) -> None:
        with self.store.transaction():
            self.store.execute(
                "UPDATE chat_sessions SET folded=?, summary=?, facts=facts+? WHERE id=?",
                (folded, summary, facts, session_id),
            )

    def calibrate(self, session_id: int, tokens_per_char: float) -> None:
        with self.store.transaction():
            self.store.execute(
                "UPDATE chat_sessions SET tokens_per_char=? WHERE id=?",
                (tokens_per_char, session_id),
            )

    def remove(self, session_id: int) -> None:
        with self.store.transaction():
            self.store.execute("DELETE FROM chat_sessions WHERE id=?", (session_id,))

    def remove_of_agent(self, agent_id: int) -> int:
        with self.store.transaction():
            n = self.count(agent_id)
            self.store.execute("DELETE FROM chat_sessions WHERE agent_id=?", (agent_id,))
        return n

    def remove_of_removed_agents(self) -> int:
        """Sessions of agents removed while agentd could not drop them (a crash)."""
        gone = "SELECT id FROM agents WHERE state='removed'"
        with self.store.transaction():
            n = int(
                self.store.scalar(f"SELECT count(*) FROM chat_sessions WHERE agent_id IN ({gone})")
            )
            self.store.execute(f"DELETE FROM chat_sessions WHERE agent_id IN ({gone})")
        return n


__all__ = ["DEFAULT_TOKENS_PER_CHAR", "Session", "SessionStore"]

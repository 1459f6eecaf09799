"""The sessions engine: chat in a session, list, show, remove; authorization
by agentd.policy (model.chat to talk, session.* to manage), removals audited.

A message's stream is agentd.thinking's (quotas held and settled there),
after, when the turns outgrow the context, a folding step: the oldest turns
and the summary so far go to the model under a JSON schema, which answers a
new summary and the lasting facts; the facts go to the agent's memory. A
fold or a fact that could not be stored is reported in the stream (event
"folded"), never dropped silently. One message at a time per session: a
second one is refused with Busy while the first is answered.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..agent import Agent, resource
from ..audit import AuditLog
from ..chat import MAX_CHARS, TOO_LONG
from ..errors import AgentdError, Busy, InvalidArgument, LimitExceeded, NoSuchSession
from ..modelclient import ModelStream
from ..policy import Caller
from ..store import Store
from ..thinking import Options, Thinking
from . import fit
from .store import Session, SessionStore

if TYPE_CHECKING:
    from ..memory.memories import Memories

log = logging.getLogger("agentd")

MAX_SESSIONS = 100  # per agent
MAX_TURNS = 2000  # per session: 1,000 exchanges (its prompt stays fitted; its rows do not)
CONTEXT_TOKENS = 2048  # a sequence's context until the service says (SmolLM2-135M's)
MARGIN_TOKENS = 32
FOLD_TOKENS = 400  # a summary of SUMMARY_CHARS and 5 facts: ~150 + 5 x 50 tokens
MAX_FACTS = 5
FOLD_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "minLength": 1, "maxLength": fit.SUMMARY_CHARS},
        "facts": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "maxItems": MAX_FACTS,
        },
    },
    "required": ["summary", "facts"],
    "additionalProperties": False,
}
FOLD_SYSTEM = (
    "You keep the notes of a long conversation between a user and an assistant. "
    "Rewrite the summary so far to also cover the new part of the conversation, in at "
    f"most {fit.SUMMARY_CHARS // 6} words: what was asked, answered and decided. Then "
    "list the lasting facts worth remembering in later conversations (names, "
    "preferences, decisions, facts about the user's work), one short sentence each; "
    "none if there are none. Answer in JSON: "
    '{"summary": "...", "facts": ["...", ...]}.'
)


class Sessions:
    def __init__(
        self,
        store: Store,
        thinking: Thinking,
        audit: AuditLog,
        memories: Memories | None = None,
    ) -> None:
        self.sessions = SessionStore(store)
        self.thinking = thinking
        self.registry = thinking.registry
        self.policy = thinking.policy
        self.audit = audit
        self.memories = memories
        # a session's stream while it answers (a stream closed before it
        # started runs no finally: its ended frame says it is done)
        self.busy: dict[int, ModelStream] = {}

    # -- managing ------------------------------------------------------------------------
    def _session(self, caller: Caller, session_id: int, action: str) -> tuple[Session, Agent]:
        """The session, if CALLER may do ACTION on its agent (audited if not)."""
        self.policy.check(caller, action)
        session = self.sessions.get(session_id)
        agent = self.registry.by_id(session.agent_id, live=False)
        if agent is None:  # its agent's row is never deleted; defensive
            raise NoSuchSession(f"no session {session_id}")
        self.policy.check(caller, action, resource(agent))
        return session, agent

    def listing(self, caller: Caller, name: str = "") -> list[dict[str, Any]]:
        """CALLER's sessions (an administrator's: everyone's), of agent NAME if given."""
        if name:
            agents = [self.registry.get(caller, name, "session.show")]
        else:
            agents = self.registry.visible(caller, "session.list")
        by_id = {a.id: a for a in agents}
        return [s.as_dict(by_id[s.agent_id].name) for s in self.sessions.of_agents(list(by_id))]

    def show(self, caller: Caller, session_id: int) -> dict[str, Any]:
        session, agent = self._session(caller, session_id, "session.show")
        turns = self.sessions.turns(session.id)
        return {
            **session.as_dict(agent.name),
            "summary": session.summary,
            "messages": [{"seq": t.seq, "role": t.role, "content": t.content} for t in turns],
        }

    def remove(self, caller: Caller, session_id: int) -> None:
        session, agent = self._session(caller, session_id, "session.remove")
        if self._busy(session.id):
            raise Busy(f"session {session.id} is answering a message; try again when it is done")
        self.sessions.remove(session.id)
        self.audit.append(
            "session.removed",
            actor_uid=caller.uid,
            agent=agent.name,
            agent_uid=agent.uid,
            session=session.id,
            turns=session.turns,
        )

    def forget_agent(self, agent: Agent) -> int:
        """A removed agent's sessions go with it."""
        return self.sessions.remove_of_agent(agent.id)

    def reconcile(self) -> int:
        return self.sessions.remove_of_removed_agents()

    # -- talking -------------------------------------------------------------------------
    def chat(
        self, caller: Caller, name: str, session_id: int, message: str, options: Options
    ) -> ModelStream:
        """Check everything that can be checked now (typed errors before any
        stream), then the stream of the answer: the service's events, "folded"
        before them if turns were folded, and "session" in the done event."""
        agent = self.thinking.chat_agent(caller, name)
        if not message.strip() or len(message) > MAX_CHARS:
            raise InvalidArgument(f"the message must be 1..{MAX_CHARS} characters")
        if options.json_schema is not None or not options.persona:
            raise InvalidArgument("a session's answers are its agent's, in words")
        session = None
        if session_id:
            session = self.sessions.get(session_id)
            if session.agent_id != agent.id:
                raise NoSuchSession(f"session {session_id} is not one of {agent.name}'s")
            if self._busy(session.id):
                raise Busy(f"session {session.id} is answering another message")
            if session.turns + 2 > MAX_TURNS:
                raise LimitExceeded(
                    f"session {session.id} has {session.turns} turns, the most one may "
                    "have; start a new one"
                )
        elif self.sessions.count(agent.id) >= MAX_SESSIONS:
            raise LimitExceeded(
                f"{agent.name} has {MAX_SESSIONS} sessions, the most an agent may have; "
                "remove some (agentctl session rm)"
            )
        stream = self._answer(caller, agent, session, message, options)
        if session is not None:
            self.busy[session.id] = stream
        return stream

    def _busy(self, session_id: int) -> bool:
        stream = self.busy.get(session_id)
        return stream is not None and stream.ag_frame is not None

    async def _answer(
        self, caller: Caller, agent: Agent, session: Session | None, message: str, options: Options
    ) -> ModelStream:
        try:
            exchange = Exchange(self, caller, agent, session, message, options)
            async with contextlib.aclosing(exchange.run()) as events:  # closed now, not by GC
                async for event in events:
                    yield event
        finally:
            if session is not None:
                self.busy.pop(session.id, None)

    async def room(self, max_tokens: int) -> int:
        """Tokens a prompt may have: a sequence's context less the answer's."""
        context = await self.thinking.context() or CONTEXT_TOKENS
        return context - max_tokens - MARGIN_TOKENS


class Exchange:
    """One message of a session and its answer (a new session's first)."""

    def __init__(
        self,
        sessions: Sessions,
        caller: Caller,
        agent: Agent,
        session: Session | None,
        message: str,
        options: Options,
    ) -> None:
        self.s = sessions
        self.caller = caller
        self.agent = agent
        self.session = session
        self.message = message
        self.options = replace(options, persona=False)  # the persona is in the prompt
        self.tokens_per_char = session.tokens_per_char if session else fit.DEFAULT_TOKENS_PER_CHAR
        self.summary = session.summary if session else ""
        self.turns = self.s.sessions.turns(session.id, session.folded) if session else []

    async def run(self) -> ModelStream:
        persona = self.s.thinking.persona(self.agent)
        for attempt in range(2):  # once more if the service counted more than estimated
            room = await self.s.room(self.options.max_tokens)
            n = fit.to_fold(
                persona, self.summary, self.turns, self.message, room, self.tokens_per_char
            )
            if n:
                yield await self._fold(n)
            messages = fit.prompt(persona, self.summary, self.turns, self.message)
            try:
                async with contextlib.aclosing(self._stream(messages)) as events:
                    async for event in events:
                        yield event
                return
            except InvalidArgument as e:
                m = TOO_LONG.search(str(e))
                if m is None or attempt:
                    raise
                self.tokens_per_char = fit.calibrated(int(m.group(1)), messages)
                self.s.thinking.context_tokens = int(m.group(3))  # what the service holds
                if self.session is not None:
                    self.s.sessions.calibrate(self.session.id, self.tokens_per_char)

    async def _stream(self, messages: list[dict[str, str]]) -> ModelStream:
        stream = self.s.thinking.generate(
            self.agent, self.caller.uid, "chat", messages, self.options
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                if event.get("event") == "done":
                    tpc = fit.calibrated(int(event.get("prompt_tokens") or 0), messages)
                    exchange = (
                        self.message,
                        str(event.get("text", "")),
                        int(event.get("completion_tokens") or 0),
                    )
                    sid = self.s.sessions.add_exchange(
                        self.session,
                        self.agent.id,
                        self.agent.owner_uid,
                        self.caller.uid,
                        exchange,
                        max(tpc, fit.MIN_TOKENS_PER_CHAR),
                    )
                    event = {**event, "session": sid}
                yield event

    async def _fold(self, n: int) -> dict[str, Any]:
        """Fold the oldest N turns into the summary; the "folded" event."""
        assert self.session is not None  # a new session has no turns to fold
        old, self.turns = self.turns[:n], self.turns[n:]
        context = self.s.thinking.context_tokens or CONTEXT_TOKENS
        answer = min(FOLD_TOKENS, context // 3)
        prompt = context - answer - MARGIN_TOKENS - fit.FRAME_TOKENS
        chars = int(prompt / max(self.tokens_per_char, 0.01)) - len(FOLD_SYSTEM)
        parsed, facts = True, []
        for batch in fit.batches(old, max(500, chars - fit.SUMMARY_CHARS)):
            summary, found, ok = await self._summarize(batch, answer)
            self.summary, parsed = summary, parsed and ok
            facts += found
        facts = list(dict.fromkeys(facts))[:MAX_FACTS]  # batches may find the same
        stored, error = await self._remember(facts)
        self.s.sessions.fold(self.session.id, self.session.folded + n, self.summary, stored)
        event: dict[str, Any] = {
            "event": "folded",
            "session": self.session.id,
            "turns": n,
            "summary_chars": len(self.summary),
            "facts": len(facts),
            "facts_stored": stored,
            "parsed": parsed,
        }
        if error:
            event["facts_error"] = error
        return event

    async def _summarize(
        self, batch: list[fit.Turn], max_tokens: int
    ) -> tuple[str, list[str], bool]:
        """The new summary and facts; on an answer that does not parse, the old
        summary with the batch's opening lines appended (reported: parsed false)."""
        talk = "\n".join(f"{t.role}: {t.content}" for t in batch)
        messages = [
            {"role": "system", "content": FOLD_SYSTEM},
            {
                "role": "user",
                "content": f"Summary so far:\n{self.summary or '(none)'}\n\n"
                f"New part of the conversation:\n{talk}",
            },
        ]
        options = Options(
            max_tokens=max_tokens, temperature=0.0, json_schema=FOLD_SCHEMA, persona=False
        )
        text = ""
        stream = self.s.thinking.generate(self.agent, self.caller.uid, "chat", messages, options)
        async with contextlib.aclosing(stream):
            async for event in stream:
                if event.get("event") == "done":
                    text = str(event.get("text", ""))
        try:
            answer = json.loads(text)
            summary = fit.cut(str(answer["summary"]).strip(), fit.SUMMARY_CHARS)
            facts = [str(f).strip() for f in answer["facts"] if str(f).strip()][:MAX_FACTS]
            return summary or self.summary, facts, True
        except (ValueError, KeyError, TypeError):
            lines = " ".join(fit.cut(t.content, 120) for t in batch if t.role == "user")
            return fit.cut(f"{self.summary} {lines}".strip(), fit.SUMMARY_CHARS), [], False

    async def _remember(self, facts: list[str]) -> tuple[int, str]:
        """FACTS into the agent's memory: how many were stored, and why not all."""
        if not facts:
            return 0, ""
        if self.s.memories is None:
            return 0, "agentd has no memory (see its log)"
        assert self.session is not None
        source = f"session/{self.session.id}"
        stored = 0
        for fact in facts:
            try:
                await self.s.memories.remember(self.agent, fact, "fact", None, source=source)
                stored += 1
            except AgentdError as e:
                log.warning("session %d: fact not stored: %s", self.session.id, e)
                return stored, f"{e.name}: {e}"
        return stored, ""

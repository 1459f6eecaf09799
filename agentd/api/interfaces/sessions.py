"""The Sessions interface: chats that outlive the client, resumable.

A session belongs to one agent; its owner and administrators talk in it,
read it and remove it. Agents have no sessions of their own (people only).
"""

from __future__ import annotations

from sdbus import DbusInterfaceCommonAsync, dbus_method_async

from .common import U

SESSIONS_INTERFACE = "org.agentos.agentd1.Sessions"


class SessionsInterface(DbusInterfaceCommonAsync, interface_name=SESSIONS_INTERFACE):
    """Chat sessions with agents. Replies are JSON; a message's answer is a stream."""

    @dbus_method_async(
        "stsa{sv}",
        "h",
        flags=U,
        method_name="ChatInSession",
        input_args_names=("agent", "session", "message", "options"),
        result_args_names=("events",),
    )
    async def chat_in_session(
        self, agent: str, session: int, message: str, options: dict[str, tuple[str, object]]
    ) -> int:
        """Say MESSAGE to AGENT in SESSION (0: a new one). The prompt is the
        agent's persona, a summary of older turns and the newest turns, fitted
        to the model's context; turns that no longer fit are first folded into
        the summary by the model, and the lasting facts it finds are written to
        the agent's memory. options: max_tokens (i), temperature (d). events:
        folded (if turns were folded: turns, facts, facts_stored, parsed,
        facts_error), queued, token lines, then done (with "session", the
        session's id, and token counts) or error. The exchange is stored when
        done; Busy while the session answers another message."""
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "s",
        flags=U,
        method_name="ListSessions",
        input_args_names=("agent",),
        result_args_names=("sessions_json",),
    )
    async def list_sessions(self, agent: str) -> str:
        """The caller's agents' sessions (an administrator's: all), of AGENT
        unless empty, the most recently used first. JSON list of {id, agent,
        owner_uid, caller_uid, title, turns, folded, facts, created, updated}."""
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "s",
        flags=U,
        method_name="GetSession",
        input_args_names=("id",),
        result_args_names=("session_json",),
    )
    async def get_session(self, id: int) -> str:
        """One session as ListSessions' rows, with its summary and messages
        ({seq, role, content}); NoSuchSession if there is none."""
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="RemoveSession", input_args_names=("id",))
    async def remove_session(self, id: int) -> None:
        """Remove a session and its turns (facts it wrote to memory stay).
        Audited session.removed."""
        raise NotImplementedError

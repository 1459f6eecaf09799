"""The Teams and Messages interfaces: agents that work together, and what
people and their agents write to each other.

People make teams and choose their members; agents never reach these
interfaces (their messages go through the Runtime interface's Send,
Receive and Ack, about themselves only).
"""

from __future__ import annotations

from sdbus import DbusInterfaceCommonAsync, dbus_method_async, dbus_signal_async

from .common import U

TEAMS_INTERFACE = "org.agentos.agentd1.Teams"
MESSAGES_INTERFACE = "org.agentos.agentd1.Messages"


class TeamsInterface(DbusInterfaceCommonAsync, interface_name=TEAMS_INTERFACE):
    """Teams: a Unix group and a shared directory (/home/agents/.teams/NAME,
    root:agentd-team-NAME 2770) bound into every member's unit at its start.
    Replies are JSON."""

    @dbus_method_async(
        "ss", "", flags=U, method_name="CreateTeam", input_args_names=("name", "description")
    )
    async def create_team(self, name: str, description: str) -> None:
        """Make team NAME (lowercase letters, digits and hyphens, 1..20) of the
        caller's: group agentd-team-NAME and its directory. AlreadyExists if the
        team, the group or the directory exists (agentd adopts neither)."""
        raise NotImplementedError

    @dbus_method_async(
        "sb",
        "s",
        flags=U,
        method_name="RemoveTeam",
        input_args_names=("name", "restart"),
        result_args_names=("archive",),
    )
    async def remove_team(self, name: str, restart: bool) -> str:
        """Remove the team: its members leave it, its directory is archived
        (root-only, under /var/lib/agentd/archive; "" if it was empty) and
        deleted, its group deleted. Busy while it has open tasks, or running
        members unless RESTART (they are restarted without it)."""
        raise NotImplementedError

    @dbus_method_async(
        "sasb",
        "",
        flags=U,
        method_name="AddMembers",
        input_args_names=("name", "agents", "restart"),
    )
    async def add_members(self, name: str, agents: list[str], restart: bool) -> None:
        """Add AGENTS (the team owner's; an administrator may add anyone's) to the
        team, applied at each one's next start, or at once with RESTART."""
        raise NotImplementedError

    @dbus_method_async(
        "sasb",
        "",
        flags=U,
        method_name="RemoveMembers",
        input_args_names=("name", "agents", "restart"),
    )
    async def remove_members(self, name: str, agents: list[str], restart: bool) -> None:
        """Take AGENTS out of the team, applied at each one's next start, or at
        once with RESTART."""
        raise NotImplementedError

    @dbus_method_async("", "s", flags=U, method_name="ListTeams", result_args_names=("teams_json",))
    async def list_teams(self) -> str:
        """The caller's teams (an administrator's: all). JSON list of {name,
        owner_uid, description, group, gid, directory, members, created_at,
        open_tasks}."""
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "s",
        flags=U,
        method_name="GetTeam",
        input_args_names=("name",),
        result_args_names=("team_json",),
    )
    async def get_team(self, name: str) -> str:
        """One team, as ListTeams gives it, and "applied": per member, whether its
        running unit carries the team's group (null: not running)."""
        raise NotImplementedError

    @dbus_signal_async("ss", signal_name="TeamChanged", signal_args_names=("name", "event"))
    def team_changed(self) -> tuple[str, str]:
        """A team was created, its members changed, or it was removed."""
        raise NotImplementedError


class MessagesInterface(DbusInterfaceCommonAsync, interface_name=MESSAGES_INTERFACE):
    """A person's messages with its agents. Replies are JSON."""

    @dbus_method_async(
        "sss",
        "t",
        flags=U,
        method_name="SendMessage",
        input_args_names=("agent", "subject", "body"),
        result_args_names=("message",),
    )
    async def send_message(self, agent: str, subject: str, body: str) -> int:
        """Write to AGENT (one the caller manages): SUBJECT up to 200 characters,
        BODY 1..65,536. Durable when this returns; the message's id. Rate-limited
        per sender (messages_per_second); LimitExceeded when the agent has 1,000
        unread messages."""
        raise NotImplementedError

    @dbus_method_async(
        "sa{sv}",
        "s",
        flags=U,
        method_name="ListMessages",
        input_args_names=("agent", "options"),
        result_args_names=("messages_json",),
    )
    async def list_messages(self, agent: str, options: dict[str, tuple[str, object]]) -> str:
        """Messages to and from AGENT (one the caller manages), oldest first.
        options: after (t: only ids above it), limit (u: 1..500), wait_ms (u: if
        there is none yet, wait up to this long, at most 60,000, for one). JSON
        list of {id, from, from_kind, from_uid, to, to_kind, subject, body,
        sent_at, deliveries, acked_at}."""
        raise NotImplementedError

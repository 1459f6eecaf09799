"""Who may do what, decided from the caller's UID and groups alone.

The bus tells agentd each caller's credentials; since every agent *is* a UID,
no tokens are needed. Deny by default: root and the admin group manage
everything, a local user manages the agents it owns, an agent UID manages
nothing (it may only speak for itself through the Runtime interface).
"""

from __future__ import annotations

import enum
import grp
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    uid: int
    gids: frozenset[int] = field(default_factory=frozenset)
    pid: int = 0


AGENTD = Caller(uid=0)  # agentd itself, for repairs it makes on its own


class Role(enum.Enum):
    ADMIN = "admin"
    USER = "user"
    AGENT = "agent"


class Authority:
    def __init__(self, admin_group: str, is_agent_uid: Callable[[int], bool]) -> None:
        self.admin_group = admin_group
        self.is_agent_uid = is_agent_uid

    def admin_gid(self) -> int | None:
        try:
            return grp.getgrnam(self.admin_group).gr_gid
        except KeyError:
            return None

    def role(self, caller: Caller) -> Role:
        if caller.uid == 0:
            return Role.ADMIN
        if self.is_agent_uid(caller.uid):  # before groups: an agent is never an admin
            return Role.AGENT
        gid = self.admin_gid()
        if gid is not None and gid in caller.gids:
            return Role.ADMIN
        return Role.USER

    def may_manage(self, caller: Caller, owner_uid: int) -> bool:
        role = self.role(caller)
        return role is Role.ADMIN or (role is Role.USER and owner_uid == caller.uid)

    def may_view(self, caller: Caller, owner_uid: int, agent_uid: int) -> bool:
        role = self.role(caller)
        if role is Role.AGENT:
            return caller.uid == agent_uid
        return self.may_manage(caller, owner_uid)

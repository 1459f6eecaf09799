"""The Approvals object: owners and administrators answer their agents' requests.

Authorization is the engine's (agentd.approvals, policy approval.*): this layer
only names the action of each method and carries JSON both ways. Signals are
emitted after the commit that made them true (agentd.store.after_commit).
"""

from __future__ import annotations

import json
from typing import Any

from sdbus import dbus_method_async_override

from ..approvals import MAX_REASON, Approvals
from ..limits import Bound
from .access import Callers, rule
from .interfaces.approvals import ApprovalsInterface


class ApprovalsObject(ApprovalsInterface):
    def __init__(self, approvals: Approvals, callers: Callers) -> None:
        super().__init__()
        self.approvals = approvals
        self.callers = callers
        approvals.listeners.append(self._on_approval)

    def _on_approval(self, what: str, info: dict[str, Any]) -> None:
        if what == "requested":
            self.approval_requested.emit((info["id"], info["task"], info["tool"]))
        else:
            self.approval_answered.emit((info["id"], info["task"], info["status"]))

    @dbus_method_async_override()
    @rule("approval.list")
    async def list_approvals(self) -> str:
        return _json(self.approvals.listing(await self.callers.current()))

    @dbus_method_async_override()
    @rule("approval.show")
    async def get_approval(self, approval: int) -> str:
        return _json(self.approvals.show(await self.callers.current(), approval))

    @dbus_method_async_override()
    @rule("approval.grant")
    async def grant_approval(self, approval: int, always: bool) -> str:
        caller = await self.callers.current()
        return _json(self.approvals.answer(caller, approval, grant=True, always=always))

    @dbus_method_async_override()
    @rule("approval.deny", limits={"reason": Bound(MAX_REASON)})
    async def deny_approval(self, approval: int, reason: str) -> str:
        caller = await self.callers.current()
        return _json(self.approvals.answer(caller, approval, grant=False, reason=reason))


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)

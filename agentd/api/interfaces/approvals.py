"""The Approvals interface: an agent's actions waiting for its owner's answer."""

from __future__ import annotations

from sdbus import (
    DbusInterfaceCommonAsync,
    dbus_method_async,
    dbus_signal_async,
)

from .common import U

APPROVALS_INTERFACE = "org.agentos.agentd1.Approvals"


class ApprovalsInterface(DbusInterfaceCommonAsync, interface_name=APPROVALS_INTERFACE):
    """For people (owners and administrators), never agents: an agent cannot
    answer an approval, not even its own task's (PermissionDenied, audited)."""

    @dbus_method_async(
        "",
        "s",
        flags=U,
        method_name="ListApprovals",
        result_args_names=("approvals_json",),
    )
    async def list_approvals(self) -> str:
        """JSON list of the approvals the caller may answer (an admin: all),
        newest first, each as GetApproval's object."""
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "s",
        flags=U,
        method_name="GetApproval",
        input_args_names=("approval",),
        result_args_names=("approval_json",),
    )
    async def get_approval(self, approval: int) -> str:
        """JSON {id, task, agent, owner_uid, attempt, tool, arguments, why,
        status (pending|granted|denied|used), reason, always, created_at,
        deadline, answered_by (-1: none), answered_at}."""
        raise NotImplementedError

    @dbus_method_async(
        "tb",
        "s",
        flags=U,
        method_name="GrantApproval",
        input_args_names=("approval", "always"),
        result_args_names=("approval_json",),
    )
    async def grant_approval(self, approval: int, always: bool) -> str:
        """Grant a pending approval; ALWAYS also adds the shell command's simple
        commands to the agent's own allow list. Audited approval.granted."""
        raise NotImplementedError

    @dbus_method_async(
        "ts",
        "s",
        flags=U,
        method_name="DenyApproval",
        input_args_names=("approval", "reason"),
        result_args_names=("approval_json",),
    )
    async def deny_approval(self, approval: int, reason: str) -> str:
        """Deny a pending approval; REASON goes to the agent's model. Audited
        approval.denied."""
        raise NotImplementedError

    @dbus_signal_async(
        "tts", signal_name="ApprovalRequested", signal_args_names=("approval", "task", "tool")
    )
    def approval_requested(self) -> tuple[int, int, str]:
        """An agent asked; fetch the details with GetApproval (authorized)."""
        raise NotImplementedError

    @dbus_signal_async(
        "tts", signal_name="ApprovalAnswered", signal_args_names=("approval", "task", "status")
    )
    def approval_answered(self) -> tuple[int, int, str]:
        """An approval was granted or denied (status), by a person or by its timeout."""
        raise NotImplementedError

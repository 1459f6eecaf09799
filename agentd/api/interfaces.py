"""The org.agentos.agentd1 D-Bus interfaces: names, signatures, argument names.

Defined once, used by the service (agentd.api.manager, .tasks, .runtime and .model
override the methods)
and by clients (agentctl builds proxies from the same classes). Every method is
flagged unprivileged so sd-bus lets ordinary users and agents reach it;
authorization happens in agentd, per caller UID, deny by default. The reference
is docs/dbus-api.md.
"""

from __future__ import annotations

from sdbus import (
    DbusInterfaceCommonAsync,
    DbusUnprivilegedFlag,
    dbus_method_async,
    dbus_property_async,
    dbus_signal_async,
)

BUS_NAME = "org.agentos.agentd1"
ROOT_PATH = "/org/agentos/agentd1"
AGENT_PATH_PREFIX = "/org/agentos/agentd1/agent"
U = DbusUnprivilegedFlag
MANAGER_INTERFACE = "org.agentos.agentd1.Manager"
RUNTIME_INTERFACE = "org.agentos.agentd1.Runtime"
AGENT_INTERFACE = "org.agentos.agentd1.Agent"
TASKS_INTERFACE = "org.agentos.agentd1.Tasks"
MODEL_INTERFACE = "org.agentos.agentd1.Model"


def agent_path(name: str) -> str:
    """Object path of agent NAME; '-' is escaped as systemd does ('_2d')."""
    return f"{AGENT_PATH_PREFIX}/{name.replace('-', '_2d')}"


# ListAgents row: name, template, active state, uid, owner uid, object path
AGENT_ROW = "(sssuuo)"
# ListTemplates row: name, description, profile, capabilities
TEMPLATE_ROW = "(sssas)"
# ListAuditEntries row: seq, time, actor uid, action, agent, agent uid, result,
# detail (JSON), hash
AUDIT_ROW = "(tdussusss)"


class ManagerInterface(DbusInterfaceCommonAsync, interface_name=MANAGER_INTERFACE):
    @dbus_method_async("ssa{sv}", "o", flags=U, method_name="CreateAgent",
                       input_args_names=("name", "template", "limits"),
                       result_args_names=("agent",))
    async def create_agent(self, name: str, template: str,
                           limits: dict[str, tuple[str, object]]) -> str:
        raise NotImplementedError

    @dbus_method_async("s", "o", flags=U, method_name="GetAgent",
                       input_args_names=("name",), result_args_names=("agent",))
    async def get_agent(self, name: str) -> str:
        raise NotImplementedError

    @dbus_method_async("", "a" + AGENT_ROW, flags=U, method_name="ListAgents",
                       result_args_names=("agents",))
    async def list_agents(self) -> list[tuple[str, str, str, int, int, str]]:
        raise NotImplementedError

    @dbus_method_async("s", "a{sv}", flags=U, method_name="DescribeAgent",
                       input_args_names=("name",), result_args_names=("info",))
    async def describe_agent(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async("s", "o", flags=U, method_name="StartAgent", input_args_names=("name",),
                       result_args_names=("job",))
    async def start_agent(self, name: str) -> str:
        """Queue the start; returns systemd's job ("/" if already running)."""
        raise NotImplementedError

    @dbus_method_async("s", "o", flags=U, method_name="StopAgent", input_args_names=("name",),
                       result_args_names=("job",))
    async def stop_agent(self, name: str) -> str:
        """Queue the stop; returns systemd's job ("/" if not running)."""
        raise NotImplementedError

    @dbus_method_async("sb", "", flags=U, method_name="RemoveAgent",
                       input_args_names=("name", "keep_home"))
    async def remove_agent(self, name: str, keep_home: bool) -> None:
        raise NotImplementedError

    @dbus_method_async("", "a" + TEMPLATE_ROW, flags=U, method_name="ListTemplates",
                       result_args_names=("templates",))
    async def list_templates(self) -> list[tuple[str, str, str, list[str]]]:
        raise NotImplementedError

    @dbus_method_async("s", "a{sv}", flags=U, method_name="DescribeTemplate",
                       input_args_names=("name",), result_args_names=("info",))
    async def describe_template(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async("tu", "a" + AUDIT_ROW, flags=U, method_name="ListAuditEntries",
                       input_args_names=("after_seq", "limit"), result_args_names=("entries",))
    async def list_audit_entries(self, after_seq: int, limit: int) -> list[tuple]:
        raise NotImplementedError

    @dbus_method_async("tuas", "a" + AUDIT_ROW, flags=U, method_name="ListEvents",
                       input_args_names=("after_seq", "limit", "types"),
                       result_args_names=("entries",))
    async def list_events(self, after_seq: int, limit: int, types: list[str]) -> list[tuple]:
        """ListAuditEntries, filtered by agentd: only rows whose action matches one of
        the shell-style patterns in types (e.g. "task.*"); all rows if types is empty."""
        raise NotImplementedError

    @dbus_method_async("", "bts", flags=U, method_name="VerifyAudit",
                       result_args_names=("ok", "checked", "message"))
    async def verify_audit(self) -> tuple[bool, int, str]:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Version")
    def version(self) -> str:
        raise NotImplementedError

    @dbus_property_async("t", property_name="StartTimestamp")
    def start_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="NAgents")
    def n_agents(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="NOnline")
    def n_online(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="AuditHead")
    def audit_head(self) -> int:
        """Sequence number of the newest audit row (0: none yet)."""
        raise NotImplementedError

    @dbus_property_async("a{ss}", property_name="Config")
    def config(self) -> dict[str, str]:
        raise NotImplementedError

    @dbus_signal_async("so", signal_name="AgentNew", signal_args_names=("name", "agent"))
    def agent_new(self) -> tuple[str, str]:
        raise NotImplementedError

    @dbus_signal_async("so", signal_name="AgentRemoved", signal_args_names=("name", "agent"))
    def agent_removed(self) -> tuple[str, str]:
        raise NotImplementedError

    @dbus_signal_async("sos", signal_name="AgentChanged",
                       signal_args_names=("name", "agent", "active_state"))
    def agent_changed(self) -> tuple[str, str, str]:
        raise NotImplementedError

    @dbus_signal_async("soss", signal_name="JobRemoved",
                       signal_args_names=("name", "job", "operation", "result"))
    def job_removed(self) -> tuple[str, str, str, str]:
        """A start or stop queued by StartAgent/StopAgent ended (result as systemd's)."""
        raise NotImplementedError

    @dbus_signal_async("t", signal_name="AuditAppended", signal_args_names=("seq",))
    def audit_appended(self) -> int:
        raise NotImplementedError


class RuntimeInterface(DbusInterfaceCommonAsync, interface_name=RUNTIME_INTERFACE):
    """Called by an agent's runtime, as the agent's UID, about itself only.

    An agent gets work by long-polling ClaimTask (no broadcast signals reach
    agents), keeps its claims alive with Heartbeat, and reports each claimed
    task exactly once with CompleteTask, FailTask or BlockTask, quoting the
    attempt number it was given so a report from a superseded attempt is
    refused (LeaseExpired).
    """

    @dbus_method_async("", "soa{sv}", flags=U, method_name="Register",
                       result_args_names=("name", "agent", "settings"))
    async def register(self) -> tuple[str, str, dict[str, tuple[str, object]]]:
        """settings: wip (u), tools (as), heartbeat_interval (u), lease_seconds (u)."""
        raise NotImplementedError

    @dbus_method_async("", "atu", flags=U, method_name="Heartbeat",
                       result_args_names=("abort", "heartbeat_interval"))
    async def heartbeat(self) -> tuple[list[int], int]:
        """Renews the leases of the caller's tasks; returns the tasks it must abort
        and the interval agentd wants now (it may have been reconfigured)."""
        raise NotImplementedError

    @dbus_method_async("u", "ba{sv}", flags=U, method_name="ClaimTask",
                       input_args_names=("timeout_ms",), result_args_names=("found", "task"))
    async def claim_task(self, timeout_ms: int) -> tuple[bool, dict[str, tuple[str, object]]]:
        """Atomically claim the next task assigned to the caller, waiting up to
        timeout_ms for one. task: id, attempt, title, description, exec, needs,
        notes, lease_seconds."""
        raise NotImplementedError

    @dbus_method_async("tusa(ss)", "", flags=U, method_name="CompleteTask",
                       input_args_names=("task", "attempt", "result", "artifacts"))
    async def complete_task(self, task: int, attempt: int, result: str,
                            artifacts: list[tuple[str, str]]) -> None:
        """result: JSON text; artifacts: (name, path under the agent's home)."""
        raise NotImplementedError

    @dbus_method_async("tussa(ss)", "", flags=U, method_name="FailTask",
                       input_args_names=("task", "attempt", "error", "result", "artifacts"))
    async def fail_task(self, task: int, attempt: int, error: str, result: str,
                        artifacts: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    @dbus_method_async("tus", "", flags=U, method_name="BlockTask",
                       input_args_names=("task", "attempt", "reason"))
    async def block_task(self, task: int, attempt: int, reason: str) -> None:
        raise NotImplementedError

    @dbus_method_async("sa{sv}", "s", flags=U, method_name="Think",
                       input_args_names=("messages", "options"), result_args_names=("answer",))
    async def think(self, messages: str, options: dict[str, tuple[str, object]]) -> str:
        """Ask the model, as the calling agent, within its quotas. messages: JSON
        [{"role", "content"}]; the template's system prompt is put first unless
        one is given. options: max_tokens (u), temperature (d), json_schema (s:
        JSON Schema; the answer is constrained to it), task (t: for metering).
        answer: JSON {"text", "finish_reason", "prompt_tokens", "completion_tokens"}."""
        raise NotImplementedError


# ListTasks row: id, title, status, priority, project, agent, attempts, max_attempts,
# created (seconds since the epoch)
TASK_ROW = "(tsssssuud)"
# ListProjects row: name, description, owner uid, number of tasks
PROJECT_ROW = "(ssut)"
# ListArtifacts row: name, type, path, size, sha256
ARTIFACT_ROW = "(sssts)"
# ListTaskEvents row: seq, time, actor uid, event, result, detail (JSON)
EVENT_ROW = "(tdusss)"


class TasksInterface(DbusInterfaceCommonAsync, interface_name=TASKS_INTERFACE):
    """Projects, tasks and artifacts, for people and programs (not agents)."""

    @dbus_method_async("ss", "", flags=U, method_name="CreateProject",
                       input_args_names=("name", "description"))
    async def create_project(self, name: str, description: str) -> None:
        raise NotImplementedError

    @dbus_method_async("", "a" + PROJECT_ROW, flags=U, method_name="ListProjects",
                       result_args_names=("projects",))
    async def list_projects(self) -> list[tuple[str, str, int, int]]:
        raise NotImplementedError

    @dbus_method_async("s", "a{sv}", flags=U, method_name="DescribeProject",
                       input_args_names=("name",), result_args_names=("info",))
    async def describe_project(self, name: str) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async("s", "", flags=U, method_name="RemoveProject",
                       input_args_names=("name",))
    async def remove_project(self, name: str) -> None:
        raise NotImplementedError

    @dbus_method_async("a{sv}", "t", flags=U, method_name="SubmitTask",
                       input_args_names=("spec",), result_args_names=("task",))
    async def submit_task(self, spec: dict[str, tuple[str, object]]) -> int:
        """spec: title (s, required), description (s), project (s), needs (as),
        priority (s: low|medium|high|critical), after (at), agent (s),
        max_attempts (u), exec (s)."""
        raise NotImplementedError

    @dbus_method_async("a{sv}", "a" + TASK_ROW, flags=U, method_name="ListTasks",
                       input_args_names=("filter",), result_args_names=("tasks",))
    async def list_tasks(self, filter: dict[str, tuple[str, object]]) -> list[tuple]:
        """filter: status, project, agent, priority (s each), limit (u)."""
        raise NotImplementedError

    @dbus_method_async("t", "a{sv}", flags=U, method_name="DescribeTask",
                       input_args_names=("task",), result_args_names=("info",))
    async def describe_task(self, task: int) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_method_async("t", "a" + EVENT_ROW, flags=U, method_name="ListTaskEvents",
                       input_args_names=("task",), result_args_names=("events",))
    async def list_task_events(self, task: int) -> list[tuple]:
        raise NotImplementedError

    @dbus_method_async("t", "a" + ARTIFACT_ROW, flags=U, method_name="ListArtifacts",
                       input_args_names=("task",), result_args_names=("artifacts",))
    async def list_artifacts(self, task: int) -> list[tuple]:
        raise NotImplementedError

    @dbus_method_async("ts", "ay", flags=U, method_name="ReadArtifact",
                       input_args_names=("task", "name"), result_args_names=("data",))
    async def read_artifact(self, task: int, name: str) -> bytes:
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="CancelTask", input_args_names=("task",))
    async def cancel_task(self, task: int) -> None:
        raise NotImplementedError

    @dbus_method_async("t", "", flags=U, method_name="RetryTask", input_args_names=("task",))
    async def retry_task(self, task: int) -> None:
        raise NotImplementedError

    @dbus_method_async("ts", "", flags=U, method_name="UnblockTask",
                       input_args_names=("task", "note"))
    async def unblock_task(self, task: int, note: str) -> None:
        raise NotImplementedError

    @dbus_signal_async("tss", signal_name="TaskChanged",
                       signal_args_names=("task", "status", "event"))
    def task_changed(self) -> tuple[int, str, str]:
        """A task changed state; fetch details with DescribeTask (authorized)."""
        raise NotImplementedError


class AgentInterface(DbusInterfaceCommonAsync, interface_name=AGENT_INTERFACE):
    @dbus_method_async("", "o", flags=U, method_name="Start", result_args_names=("job",))
    async def start(self) -> str:
        raise NotImplementedError

    @dbus_method_async("", "o", flags=U, method_name="Stop", result_args_names=("job",))
    async def stop(self) -> str:
        raise NotImplementedError

    @dbus_method_async("b", "", flags=U, method_name="Remove", input_args_names=("keep_home",))
    async def remove(self, keep_home: bool) -> None:
        raise NotImplementedError

    @dbus_method_async("", "a{sv}", flags=U, method_name="Describe",
                       result_args_names=("info",))
    async def describe(self) -> dict[str, tuple[str, object]]:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Name")
    def name(self) -> str:
        raise NotImplementedError

    @dbus_property_async("u", property_name="UID")
    def uid(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="OwnerUID")
    def owner_uid(self) -> int:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Template")
    def template(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Profile")
    def profile(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Home")
    def home(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="Unit")
    def unit(self) -> str:
        raise NotImplementedError

    @dbus_property_async("s", property_name="ActiveState")
    def active_state(self) -> str:
        raise NotImplementedError

    @dbus_property_async("b", property_name="Online")
    def online(self) -> bool:
        raise NotImplementedError

    @dbus_property_async("t", property_name="CreatedTimestamp")
    def created_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="LastSeenTimestamp")
    def last_seen_timestamp(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="MemoryMax")
    def memory_max(self) -> int:
        raise NotImplementedError

    @dbus_property_async("u", property_name="CPUQuotaPercent")
    def cpu_quota_percent(self) -> int:
        raise NotImplementedError

    @dbus_property_async("t", property_name="TasksMax")
    def tasks_max(self) -> int:
        raise NotImplementedError


# ListQuotas row: kind (agent|owner), subject, limit (0: unlimited), used, period,
# resets at (seconds since the epoch), source (admin|template|config)
QUOTA_ROW = "(ssttsds)"
# ListUsage row: day (YYYY-MM-DD, UTC), agent, owner uid, requests, prompt tokens,
# completion tokens
USAGE_ROW = "(ssuttt)"


class ModelInterface(DbusInterfaceCommonAsync, interface_name=MODEL_INTERFACE):
    """The shared model (agentd-inference.service), token usage and quotas.

    Streams (Chat, Reload) are returned as a file descriptor: the read end of a
    socket on which agentd writes JSON lines (docs/dbus-api.md), private to the
    caller, unlike a broadcast signal.
    """

    @dbus_method_async("", "a{sv}", flags=U, method_name="Describe",
                       result_args_names=("info",))
    async def describe(self) -> dict[str, tuple[str, object]]:
        """The model file, its load state, the service's settings and live stats."""
        raise NotImplementedError

    @dbus_method_async("s", "h", flags=U, method_name="Reload", input_args_names=("path",),
                       result_args_names=("events",))
    async def reload(self, path: str) -> int:
        """Admin: reload the model (PATH, or the configured one if empty); the old
        model serves until the new one is loaded. events: progress lines, then
        done or error."""
        raise NotImplementedError

    @dbus_method_async("ssa{sv}", "h", flags=U, method_name="Chat",
                       input_args_names=("agent", "messages", "options"),
                       result_args_names=("events",))
    async def chat(self, agent: str, messages: str,
                   options: dict[str, tuple[str, object]]) -> int:
        """Talk to AGENT (its owner or an admin) as its template's persona.
        Quotas are checked before this returns (QuotaExceeded). messages and
        options as Runtime.Think, plus persona (b, default true). events: queued,
        token lines as they come, then done (with token counts) or error."""
        raise NotImplementedError

    @dbus_method_async("", "a" + QUOTA_ROW, flags=U, method_name="ListQuotas",
                       result_args_names=("quotas",))
    async def list_quotas(self) -> list[tuple]:
        """Quotas of the agents the caller may see and of their owners."""
        raise NotImplementedError

    @dbus_method_async("u", "a" + USAGE_ROW, flags=U, method_name="ListUsage",
                       input_args_names=("days",), result_args_names=("usage",))
    async def list_usage(self, days: int) -> list[tuple]:
        """Tokens by day and agent over the last DAYS days (the caller's agents;
        all of them for an admin)."""
        raise NotImplementedError

    @dbus_method_async("ssts", "", flags=U, method_name="SetQuota",
                       input_args_names=("kind", "subject", "tokens", "period"))
    async def set_quota(self, kind: str, subject: str, tokens: int, period: str) -> None:
        """Admin: KIND agent|owner; SUBJECT an agent name, or an owner's user name or
        UID; TOKENS per PERIOD (daily|weekly|monthly), 0 for unlimited."""
        raise NotImplementedError

    @dbus_method_async("ss", "", flags=U, method_name="ResetQuota",
                       input_args_names=("kind", "subject"))
    async def reset_quota(self, kind: str, subject: str) -> None:
        """Admin: count the current period's usage from now on (the limit stays)."""
        raise NotImplementedError

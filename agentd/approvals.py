"""Approval gates: an agent's action that waits for its owner's answer (issue 12).

Invariants, and why:
- An approval is one row (table approvals, migration 8) holding the EXACT
  action (tool and arguments JSON) the agent asked about. It is written in the
  same transaction as the task's move in_progress -> awaiting_approval and its
  audit row (approval.requested), so a restart finds it as it was: pending
  until answered or past its deadline, then answered.
- Only a person answers: the task's owner or an administrator (policy rules
  approval.grant / approval.deny, Scope.OWNER: an agent is refused, even for
  its own task, and the refusal is audited). The answer, the status change
  back to pending (for the same agent: tasks.agent_id is kept) and the audit
  row (approval.granted / approval.denied) are one transaction.
- A granted action runs at most once: UseApproval moves it granted -> used,
  committed before the reply (the bus layer awaits the commit), and the loop
  runs it only after that reply. A second UseApproval of the same attempt is
  answered the same (the reply may have been lost); of another attempt it is
  refused, so a crash after the run never runs it again. A crash between the
  commit and the run loses the action instead: never twice.
- Unanswered past its deadline (the template's timeout) an approval is denied
  with reason "timed out" by agentd itself (expire(), from the daemon's
  periodic pass and at start), so an agent never waits forever.
- `grant --always` adds the shell command's simple commands, as literal
  patterns, to the agent's own allow list (approval_allow), which
  TaskApprovals returns merged into the rules (agentd.approvalrules).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import shellgate
from .agent import Agent
from .approvalrules import GATEABLE, ApprovalRules
from .errors import Busy, InvalidArgument, NoSuchApproval
from .policy import AGENTD, Caller, Resource, Role

Row = dict[str, Any]

if TYPE_CHECKING:
    from .tasks.queue import TaskQueue
    from .templates import Catalog

MAX_ARGUMENTS = 16 * 1024  # bytes of an action's arguments JSON
MAX_REASON = 4096
MAX_PER_TASK = 100  # approvals one task may ask for, all attempts
MAX_ALLOW = 256  # patterns in one agent's own allow list
TIMED_OUT = "timed out"
STATUSES = ("pending", "granted", "denied", "used")
Listener = Callable[[str, dict[str, Any]], None]  # ("requested"|"answered", approval)


class Approvals:
    def __init__(self, queue: TaskQueue, catalog: Catalog, admin: ApprovalRules) -> None:
        self.queue = queue
        self.store = queue.store
        self.registry = queue.registry
        self.policy = queue.policy
        self.audit = queue.audit
        self.catalog = catalog
        self.admin = admin  # agentd.toml's [approval]
        self.listeners: list[Listener] = []
        self.clock: Callable[[], float] = time.time

    # -- rules -----------------------------------------------------------------------------
    def rules(self, agent: Agent) -> dict[str, Any]:
        """The rules object of TaskApprovals for AGENT (contract section 2)."""
        try:
            template = self.catalog.template(agent.template).approval
        except Exception:  # a template removed since: the admin's policy still holds
            template = ApprovalRules()
        merged = template.merged(self.admin)
        own = tuple(
            r["pattern"]
            for r in self.store.query(
                "SELECT pattern FROM approval_allow WHERE agent_id=? ORDER BY at, rowid",
                (agent.id,),
            )
        )
        return merged.as_dict(own, admin_gates_shell="shell" in self.admin.tools)

    # -- the agent's ---------------------------------------------------------------------------
    def request(
        self, agent: Agent, task_id: int, attempt: int, tool: str, arguments_json: str
    ) -> int:
        """Record what AGENT asks to do; its running task waits for the answer."""
        task = self.queue._agent_task(agent, task_id, attempt, "runtime.request_approval")
        if tool not in GATEABLE:
            raise InvalidArgument(f"tool must be one of {', '.join(GATEABLE)}, got {tool!r}")
        arguments = _arguments(arguments_json)
        rules = self.rules(agent)
        why = shellgate.needs_approval(rules, tool, arguments) or "the agent asked"
        now = self.clock()
        with self.store.transaction():
            asked = self.store.scalar("SELECT COUNT(*) FROM approvals WHERE task_id=?", (task.id,))
            if asked >= MAX_PER_TASK:
                raise InvalidArgument(f"task {task.id} asked {asked} approvals, the most kept")
            self.store.execute(
                "INSERT INTO approvals (task_id, agent_id, owner_uid, attempt, tool, arguments,"
                " why, status, created_at, deadline) VALUES (?,?,?,?,?,?,?,'pending',?,?)",
                (
                    task.id,
                    agent.id,
                    task.owner_uid,
                    attempt,
                    tool,
                    arguments_json,
                    why,
                    now,
                    now + float(rules["timeout"]),
                ),
            )
            approval_id = int(self.store.db.last_insert_rowid())
            # The attempt is not consumed (as a deferral): the next claim asks again.
            self.queue.lifecycle.transition(
                task,
                "approval.requested",
                agent.uid,
                {"lease_expires": None, "max_attempts": task.max_attempts + 1},
                holder=agent,
                attempt=attempt,
                approval=approval_id,
                tool=tool,
                arguments=arguments_json,
                why=why,
            )
            self._announce("requested", approval_id)
        return approval_id

    def use(self, agent: Agent, approval_id: int, attempt: int) -> None:
        """granted -> used for AGENT's running attempt; idempotent for that attempt."""
        row = self._row(approval_id)
        if row is None or row["agent_id"] != agent.id:
            # refused as any other agent's claim on a task it does not hold (audited)
            self.queue._held(agent, row["task_id"] if row else -1, "runtime.use_approval")
            raise NoSuchApproval(f"no approval {approval_id} of {agent.name}")
        self.queue._agent_task(agent, row["task_id"], attempt, "runtime.use_approval")
        if row["status"] == "used" and row["used_attempt"] == attempt:
            return
        if row["status"] != "granted":
            used = f" by attempt {row['used_attempt']}" if row["status"] == "used" else ""
            raise Busy(f"approval {approval_id} is {row['status']}{used}: do not run it")
        with self.store.transaction():
            self.store.execute(
                "UPDATE approvals SET status='used', used_attempt=?, used_at=?"
                " WHERE id=? AND status='granted'",
                (attempt, self.clock(), approval_id),
            )
            if self.store.db.changes() != 1:
                raise Busy(f"approval {approval_id} changed meanwhile: do not run it")
            self.audit.append(
                "approval.used",
                actor_uid=agent.uid,
                agent=agent.name,
                agent_uid=agent.uid,
                agent_id=agent.id,
                task_id=row["task_id"],
                approval=approval_id,
                attempt=attempt,
            )

    def for_task(self, agent: Agent, task_id: int) -> dict[str, Any]:
        """TaskApprovals: the rules and this task's approvals, for the agent holding it."""
        self.queue._held(agent, task_id, "runtime.approvals", running=True)
        rows = self.store.query("SELECT * FROM approvals WHERE task_id=? ORDER BY id", (task_id,))
        return {"rules": self.rules(agent), "approvals": [_brief(r) for r in rows]}

    # -- people's ------------------------------------------------------------------------------
    def listing(self, caller: Caller) -> list[dict[str, Any]]:
        """Approvals CALLER may answer, newest first (an admin: all of them)."""
        role = self.policy.check(caller, "approval.list")
        if role is Role.ADMIN:
            rows = self.store.query("SELECT * FROM approvals ORDER BY id DESC LIMIT 1000")
        else:
            rows = self.store.query(
                "SELECT * FROM approvals WHERE owner_uid=? ORDER BY id DESC LIMIT 1000",
                (caller.uid,),
            )
        return [self._info(r) for r in rows]

    def show(self, caller: Caller, approval_id: int) -> dict[str, Any]:
        return self._info(self._visible(caller, approval_id, "approval.show"))

    def answer(
        self, caller: Caller, approval_id: int, grant: bool, always: bool = False, reason: str = ""
    ) -> dict[str, Any]:
        """The owner's (or an admin's) answer; the task goes back to its agent."""
        action = "approval.grant" if grant else "approval.deny"
        row = self._visible(caller, approval_id, action)
        if len(reason) > MAX_REASON:
            raise InvalidArgument(f"reason is longer than {MAX_REASON} characters")
        if always and not grant:
            raise InvalidArgument("--always applies to a grant")
        patterns = self._always_patterns(row) if always else []
        self._answer(row, caller.uid, "granted" if grant else "denied", reason, patterns)
        return self._info(self._row(approval_id) or row)

    def expire(self) -> int:
        """Deny every pending approval past its deadline ("timed out"); how many."""
        rows = self.store.query(
            "SELECT * FROM approvals WHERE status='pending' AND deadline<=?", (self.clock(),)
        )
        for row in rows:
            with contextlib.suppress(Busy):  # answered meanwhile
                self._answer(row, AGENTD.uid, "denied", TIMED_OUT, [])
        return len(rows)

    # -- inside ----------------------------------------------------------------------------------
    def _answer(
        self, row: Row, actor_uid: int, status: str, reason: str, patterns: list[str]
    ) -> None:
        now = self.clock()
        with self.store.transaction():
            self.store.execute(
                "UPDATE approvals SET status=?, reason=?, always=?, answered_by=?, answered_at=?"
                " WHERE id=? AND status='pending'",
                (status, reason, int(bool(patterns)), actor_uid, now, row["id"]),
            )
            if self.store.db.changes() != 1:
                raise Busy(f"approval {row['id']} is already answered")
            for pattern in patterns:
                self.store.execute(
                    "INSERT OR IGNORE INTO approval_allow (agent_id, pattern, approval_id,"
                    " by_uid, at) VALUES (?,?,?,?,?)",
                    (row["agent_id"], pattern, row["id"], actor_uid, now),
                )
            event = f"approval.{status}"
            detail = {"approval": row["id"], "tool": row["tool"], "reason": reason}
            if patterns:
                detail["always"] = json.dumps(patterns)
            task = self.queue.repo.find(row["task_id"])
            if task is not None and task.status == "awaiting_approval":
                self.queue.lifecycle.transition(task, event, actor_uid, {"not_before": 0}, **detail)
            else:  # the task was cancelled meanwhile: the answer is still a record
                agent = self.registry.by_id(row["agent_id"], live=False)
                self.audit.append(
                    event,
                    actor_uid=actor_uid,
                    agent=agent.name if agent else None,
                    agent_uid=agent.uid if agent else None,
                    agent_id=row["agent_id"],
                    task_id=row["task_id"],
                    **detail,
                )
            self._announce("answered", row["id"])

    def _always_patterns(self, row: Row) -> list[str]:
        if row["tool"] != "shell":
            raise InvalidArgument("--always applies to shell commands only")
        command = json.loads(row["arguments"]).get("command")
        commands = shellgate.simple_commands(command) if isinstance(command, str) else None
        if commands is None:
            raise InvalidArgument(
                "--always: this command cannot be proved safe to repeat (it would ask "
                "again anyway); grant it without --always"
            )
        have = self.store.scalar(
            "SELECT COUNT(*) FROM approval_allow WHERE agent_id=?", (row["agent_id"],)
        )
        agent = self.registry.by_id(row["agent_id"], live=False)
        allow = self.rules(agent)["shell_allow"] if agent else []
        fresh = [c for c in commands if not shellgate.allowed(c, allow)]
        patterns = list(dict.fromkeys(shellgate.literal_pattern(c) for c in fresh))
        if have + len(patterns) > MAX_ALLOW:
            raise InvalidArgument(f"the agent's allow list is full ({MAX_ALLOW} patterns)")
        return patterns

    def _announce(self, what: str, approval_id: int) -> None:
        def tell() -> None:
            row = self._row(approval_id)
            if row is not None:
                for listener in self.listeners:
                    listener(what, self._info(row))

        self.store.after_commit(tell)

    def _row(self, approval_id: int) -> Row | None:
        rows = self.store.query("SELECT * FROM approvals WHERE id=?", (approval_id,))
        return rows[0] if rows else None

    def _visible(self, caller: Caller, approval_id: int, action: str) -> Row:
        self.policy.check(caller, action)
        row = self._row(approval_id) if isinstance(approval_id, int) else None
        if row is None:
            raise NoSuchApproval(f"no approval {approval_id}")
        agent = self.registry.by_id(row["agent_id"], live=False)
        self.policy.check(
            caller,
            action,
            Resource(
                "approval",
                str(approval_id),
                row["owner_uid"],
                agent=agent.name if agent else None,
                agent_uid=agent.uid if agent else None,
                task_id=row["task_id"],
            ),
        )
        return row

    def _info(self, row: Row) -> dict[str, Any]:
        agent = self.registry.by_id(row["agent_id"], live=False)
        return {
            **_brief(row),
            "task": row["task_id"],
            "agent": agent.name if agent else "",
            "owner_uid": row["owner_uid"],
            "attempt": row["attempt"],
            "why": row["why"],
            "always": bool(row["always"]),
            "created_at": row["created_at"],
            "deadline": row["deadline"],
            "answered_by": row["answered_by"] if row["answered_by"] is not None else -1,
            "answered_at": row["answered_at"] or 0.0,
        }


def _brief(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "tool": row["tool"],
        "arguments": json.loads(row["arguments"]),
        "status": row["status"],
        "reason": row["reason"],
    }


def _arguments(text: str) -> dict[str, Any]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ARGUMENTS:
        raise InvalidArgument(f"arguments_json is longer than {MAX_ARGUMENTS} bytes")
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidArgument("arguments_json is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidArgument("arguments_json must be a JSON object")
    return value

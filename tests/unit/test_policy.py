"""agentd.policy through the bus layer: every D-Bus method declares a rule, and
agents, non-owners and owners who are not administrators are each refused
every method they must not call, with an audit row for each refusal.

The service objects are called as local sdbus objects (no bus): a Callers
stand-in reports a fixed caller, so the whole path from the @rule decorator
through the engine's own check is the one agentd serves.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fakes import BagOfWords
from sdbus.dbus_proxy_async_method import DbusMethodAsync
from world import ALICE, BOB, ROOT, World

from agentd.api import interfaces
from agentd.api.access import ACTION, Callers
from agentd.api.approvals import ApprovalsObject
from agentd.api.errors import AgentdDbusError, short_name
from agentd.api.goals import GoalsObject
from agentd.api.manager import AgentObject, ManagerObject
from agentd.api.memory import MemoryObject
from agentd.api.model import ModelObject, Streams
from agentd.api.observe import ObserveObject
from agentd.api.runtime import RuntimeObject
from agentd.api.sessions import SessionsObject
from agentd.api.tasks import TasksObject
from agentd.api.teams import MessagesObject, TeamsObject
from agentd.approvalrules import ApprovalRules
from agentd.approvals import Approvals
from agentd.errors import PermissionDenied
from agentd.eventlog import EventLog
from agentd.fleet import Fleet
from agentd.goals.delegation import Delegation
from agentd.goals.runner import GoalRunner
from agentd.goals.service import Goals
from agentd.journal import AgentJournal
from agentd.memory import MemoryService
from agentd.memory.memories import Memories
from agentd.messages import Mailbox
from agentd.metrics import Counters, Metrics
from agentd.modelclient import ModelClient
from agentd.models.admin import ModelAdmin
from agentd.policy import Caller, Policy
from agentd.quotas import Meter
from agentd.rules import RULES, Scope
from agentd.sessions import Sessions
from agentd.tasks.queue import TaskQueue
from agentd.teams import TeamDirs, Teams
from agentd.thinking import Thinking
from agentd.units import UnitUsage

SERVICES = {
    interfaces.ManagerInterface: ManagerObject,
    interfaces.AgentInterface: AgentObject,
    interfaces.RuntimeInterface: RuntimeObject,
    interfaces.TasksInterface: TasksObject,
    interfaces.ModelInterface: ModelObject,
    interfaces.ApprovalsInterface: ApprovalsObject,
    interfaces.MemoryInterface: MemoryObject,
    interfaces.SessionsInterface: SessionsObject,
    interfaces.GoalsInterface: GoalsObject,
    interfaces.TeamsInterface: TeamsObject,
    interfaces.MessagesInterface: MessagesObject,
    interfaces.ObserveInterface: ObserveObject,
}


def dbus_methods(cls: type) -> dict[str, DbusMethodAsync]:
    return {name: m for name, m in vars(cls).items() if isinstance(m, DbusMethodAsync)}


def declared(service: type, name: str) -> str | None:
    return getattr(vars(service)[name].original_method, ACTION, None)


def test_every_method_of_every_interface_declares_a_rule() -> None:
    assert set(SERVICES) == set(interfaces.INTERFACES)
    used = set()
    for interface, service in SERVICES.items():
        methods = dbus_methods(interface)
        assert methods, interface
        for name, method in methods.items():
            action = declared(service, name)
            assert action in RULES, f"{method.method_name} of {interface.__name__} has no rule"
            used.add(action)
    assert used == set(RULES), f"rules no method declares: {set(RULES) - used}"


def test_an_undeclared_action_is_refused_and_audited(w: World) -> None:
    with pytest.raises(PermissionDenied, match=r"no rule allows agent\.frobnicate"):
        w.reg.policy.check(ROOT, "agent.frobnicate")
    assert w.audit.entries(limit=1000)[-1].result == "denied"


class FixedCallers(Callers):
    """Every call comes from one caller; polkit, when given, is a set of grants."""

    def __init__(self, policy: Policy, caller: Caller, grants: set[str] = frozenset()) -> None:
        super().__init__(None, policy, _Grants(grants))
        self.caller = caller

    async def credentials(self) -> Caller:
        return self.caller


class _Grants:
    def __init__(self, grants: set[str]) -> None:
        self.grants = grants
        self.asked: list[str] = []

    async def allowed(self, caller: Caller, action_id: str) -> bool:
        self.asked.append(action_id)
        return action_id in self.grants


class _People:
    """Accounts as agentd.limits.Logins sees them: alice and bob are people with a
    login shell here, whatever this host's passwd says about uids 1000 and 1001."""

    def uid_min(self) -> int:
        return 1000

    def shell(self, uid: int) -> str | None:
        return "/bin/bash" if uid in (ALICE.uid, BOB.uid) else None


class _Idle:
    """Units as agentd.fleet reads them: none uses anything."""

    async def usage(self, unit: str) -> UnitUsage:
        return UnitUsage()


class Api:
    """agentd's five service objects over a World, called as CALLER."""

    def __init__(self, tmp_path: Path) -> None:
        self.w = World(tmp_path)
        self.w.reg.policy.logins = _People()
        self.queue = TaskQueue(self.w.store, self.w.reg)
        self.meter = Meter(self.w.cfg, self.w.store, self.w.audit, self.w.reg)
        self.thinking = Thinking(
            self.w.reg,
            self.meter,
            ModelClient(tmp_path / "no-model.sock", patience_s=0.1),
            self.w.audit,
        )
        self.a1 = self.w.run(self.w.reg.create(ALICE, "a1", "sandbox"))
        self.a2 = self.w.run(self.w.reg.create(ALICE, "a2", "sandbox"))
        self.queue.create_project(ALICE, "p1")
        self.task = self.queue.submit(ALICE, {"title": "t", "project": "p1"}).id
        # an approval a1 asked about its own task (approval gates, issue 12)
        self.approvals = Approvals(self.queue, self.w.reg.catalog, ApprovalRules())
        gated = self.queue.submit(ALICE, {"title": "g", "agent": "a1", "priority": "critical"})
        claimed = self.queue.claim(self.a1)
        assert claimed is not None and claimed.id == gated.id
        self.approval = self.approvals.request(self.a1, gated.id, 1, "shell", '{"command": "ls"}')
        # the catalog's admin operations (agentd.models), over an empty model dir
        self.models = ModelAdmin(
            tmp_path / "models", self.w.reg.policy, self.w.audit, self.thinking.reload, None, print
        )
        # the memory (issue 13), with a chunk in a1's memory (alice's)
        service = MemoryService(tmp_path / "memory.db", BagOfWords())
        self.memories = Memories(service, self.w.reg.policy, self.w.audit, self.meter, self.w.reg)

        async def remember() -> int:
            await service.open()
            added = await service.remember(("agent", self.a1.id), "the vault is backed up")
            return added.ids[0]

        self.chunk = asyncio.run(remember())
        # a chat session with a1 (issue 13)
        self.sessions = Sessions(self.w.store, self.thinking, self.w.audit)
        exchange = ("hi", "hello", 1)
        self.session = self.sessions.sessions.add_exchange(
            None, self.a1.id, ALICE.uid, ALICE.uid, exchange, 0.3
        )
        # a goal of alice's, its plan held, planned by her planner agent (issue 14)
        runner = GoalRunner(
            self.w.store, self.queue, self.w.reg.catalog, self.w.audit, self.w.reg.events
        )
        self.goals = Goals(runner, self.w.reg, self.queue, self.w.reg.policy)
        asyncio.run(self.w.reg.create(ALICE, "pl", "planner"))
        self.goal = runner.create(ALICE.uid, "apples", "pl", approve_plan=True).id
        runner.goals.update(runner.goals.get(self.goal), state="awaiting_approval")
        # a team of alice's with a1 in it, and a mailbox (issue 15)
        self.teams = Teams(
            self.w.store,
            self.w.reg,
            self.w.accounts,
            TeamDirs(tmp_path / "teams", tmp_path / "archive"),
            self.w.audit,
            self.w.reg.events,
        )
        asyncio.run(self.teams.create(ALICE, "t1", ""))
        asyncio.run(self.teams.add(ALICE, "t1", ["a1"], restart=False))
        self.mailbox = Mailbox(
            self.w.store, self.w.reg, self.w.audit, self.w.reg.events, self.teams.share
        )
        # top, agent ps and metrics (issue 16): units that use nothing
        self.fleet = Fleet(
            self.w.store, self.w.reg, self.w.reg.policy, _Idle(), lambda a: "inactive"
        )
        self.metrics = Metrics(self.fleet, self.w.store, self.w.reg.policy, Counters(), lambda: 0)

    def objects(self, caller: Caller, grants: set[str] = frozenset()) -> dict[str, Any]:
        callers = FixedCallers(self.w.reg.policy, caller, grants)
        runtime = RuntimeObject(self.w.reg, self.queue, callers, self.thinking)
        runtime.approvals = self.approvals
        runtime.memories = self.memories
        runtime.delegation = Delegation(
            self.w.store, self.queue, self.w.reg.catalog, self.w.audit, self.w.reg.events
        )
        runtime.mailbox = self.mailbox
        return {
            "manager": ManagerObject(
                self.w.reg, EventLog(self.w.audit, self.w.reg, self.w.reg.policy), callers, None
            ),
            "agent": AgentObject(self.w.reg, callers, "a2"),
            "runtime": runtime,
            "tasks": TasksObject(self.queue, callers),
            "model": ModelObject(self.thinking, self.meter, callers, self.models),
            "approvals": ApprovalsObject(self.approvals, callers),
            "memory": MemoryObject(self.memories, callers),
            "sessions": SessionsObject(self.sessions, callers, Streams()),
            "goals": GoalsObject(self.goals, callers),
            "teams": TeamsObject(self.teams, callers),
            "messages": MessagesObject(self.mailbox, callers),
            "observe": ObserveObject(self.fleet, self.metrics, callers, AgentJournal(self.w.reg)),
        }

    def calls(self) -> dict[tuple[str, str], tuple]:
        t, ap = self.task, self.approval
        hello = json.dumps([{"role": "user", "content": "hi"}])
        return {
            ("manager", "create_agent"): ("a3", "sandbox", {}),
            ("manager", "get_agent"): ("a1",),
            ("manager", "list_agents"): (),
            ("manager", "describe_agent"): ("a1",),
            ("manager", "start_agent"): ("a1",),
            ("manager", "stop_agent"): ("a1",),
            ("manager", "remove_agent"): ("a1", False),
            ("manager", "remove_agent_with_flags"): ("a1", 0),
            ("manager", "list_templates"): (),
            ("manager", "describe_template"): ("sandbox",),
            ("manager", "list_audit_entries"): (0, 10),
            ("manager", "list_events"): (0, 10, ["task.*"]),
            ("manager", "verify_audit"): (),
            ("agent", "start"): (),
            ("agent", "stop"): (),
            ("agent", "remove"): (False,),
            ("agent", "remove_with_flags"): (0,),
            ("agent", "describe"): (),
            ("runtime", "register"): (),
            ("runtime", "heartbeat"): (),
            ("runtime", "claim_task"): (0,),
            ("runtime", "register_and_claim"): (0,),
            ("runtime", "claim_tasks"): (0, 0),
            ("runtime", "complete_and_claim"): (t, 1, "{}", [], 0, 0),
            ("runtime", "complete_task"): (t, 1, "{}", []),
            ("runtime", "fail_task"): (t, 1, "no", "", []),
            ("runtime", "block_task"): (t, 1, "why"),
            ("runtime", "think"): (hello, {}),
            ("runtime", "think_stream"): (hello, {}),
            ("runtime", "embed"): (["a text"],),
            ("runtime", "task_context"): (t,),
            ("runtime", "record_step"): (t, 1, "{}"),
            ("runtime", "ask_owner"): (t, 1, "which?"),
            ("runtime", "defer_task"): (t, 1, 1.0, "later"),
            ("runtime", "delegate"): (t, 1, '[{"title": "a", "instructions": "b"}]'),
            ("runtime", "delegated"): (t, 0),
            ("runtime", "send"): ("a2", "s", "hi"),
            ("runtime", "receive"): (1, 0),
            ("runtime", "ack"): ([],),
            ("runtime", "request_approval"): (t, 1, "shell", '{"command": "ls"}'),
            ("runtime", "use_approval"): (ap, 1),
            ("runtime", "task_approvals"): (t,),
            ("runtime", "remember"): ("a fact", "fact", 0),
            ("runtime", "recall"): ("vault", 3, 0),
            ("memory", "add_memory"): ("agent/a1", "notes", "text", False),
            ("memory", "continue_memory"): ("agent/a1", "notes", "more", 1, 5, 2, [(1, "T")]),
            ("memory", "search_memory"): (["agent/a1"], "vault", 3),
            ("memory", "list_memory"): ("agent/a1", "", 0, 10),
            ("memory", "get_memory"): (self.chunk,),
            ("memory", "remove_memory"): ([self.chunk],),
            ("memory", "remove_memory_source"): ("agent/a1", "notes"),
            ("memory", "memory_usage"): ("agent/a1",),
            ("approvals", "list_approvals"): (),
            ("approvals", "get_approval"): (ap,),
            ("approvals", "grant_approval"): (ap, False),
            ("approvals", "deny_approval"): (ap, "no"),
            ("tasks", "create_project"): ("p2", ""),
            ("tasks", "list_projects"): (),
            ("tasks", "describe_project"): ("p1",),
            ("tasks", "remove_project"): ("p1",),
            ("tasks", "submit_task"): ({"title": ("s", "x")},),
            ("tasks", "list_tasks"): ({},),
            ("tasks", "describe_task"): (t,),
            ("tasks", "list_task_events"): (t,),
            ("tasks", "list_artifacts"): (t,),
            ("tasks", "read_artifact"): (t, "out.txt"),
            ("tasks", "cancel_task"): (t,),
            ("tasks", "retry_task"): (t,),
            ("tasks", "unblock_task"): (t, "note"),
            ("tasks", "reply_task"): (t, "answer"),
            ("tasks", "list_task_steps"): (t,),
            ("model", "describe"): (),
            ("model", "list_models"): (),
            ("model", "install_model"): ("smollm2-135m", ""),
            ("model", "install_model_file"): ("/x.gguf", "x"),
            ("model", "use_model"): ("smollm2-135m",),
            ("model", "remove_model"): ("x",),
            ("model", "reload"): ("",),
            ("model", "chat"): ("a1", hello, {}),
            ("model", "chat_start"): ("a1", hello, {}),
            ("model", "chat_read"): (1, 0),
            ("model", "chat_cancel"): (1,),
            ("model", "list_quotas"): (),
            ("model", "list_usage"): (7,),
            ("model", "set_quota"): ("agent", "a1", 5, "daily"),
            ("model", "reset_quota"): ("agent", "a1"),
            ("model", "list_plans"): (),
            ("model", "describe_plan"): ("", str(ALICE.uid)),
            ("model", "assign_plan"): ("user", str(ALICE.uid), ""),
            ("sessions", "chat_in_session"): ("a1", self.session, "hi", {}),
            ("sessions", "list_sessions"): ("",),
            ("sessions", "get_session"): (self.session,),
            ("sessions", "remove_session"): (self.session,),
            ("goals", "submit_goal"): ("more apples", {}),
            ("goals", "list_goals"): (),
            ("goals", "get_goal"): (self.goal,),
            ("goals", "approve_goal"): (self.goal,),
            ("goals", "reject_goal"): (self.goal, "no"),
            ("goals", "cancel_goal"): (self.goal,),
            ("teams", "create_team"): ("t2", ""),
            ("teams", "remove_team"): ("t1", False),
            ("teams", "add_members"): ("t1", ["a1"], False),
            ("teams", "remove_members"): ("t1", ["a1"], False),
            ("teams", "list_teams"): (),
            ("teams", "get_team"): ("t1",),
            ("messages", "send_message"): ("a1", "s", "hi"),
            ("messages", "list_messages"): ("a1", {}),
            ("observe", "fleet"): (),
            ("observe", "list_processes"): ("a1",),
            ("observe", "read_agent_journal"): ("a1", "", 10, 0),
            ("observe", "metrics"): (),
        }

    def call(self, caller: Caller, obj: str, method: str, grants: set[str] = frozenset()) -> str:
        """Call one method; return the D-Bus error's short name, or "" if none."""
        target = self.objects(caller, grants)[obj]

        async def go() -> str:
            try:
                answer = await getattr(target, method)(*self.calls()[(obj, method)])
            except AgentdDbusError as e:
                return short_name(e)
            if obj in ("model", "sessions") and isinstance(answer, int):  # a stream:
                await target.streams.close()  # its fd is closed by agentd on the next turn
            return ""

        return asyncio.run(go())


def all_calls() -> list[tuple[str, str]]:
    return [
        (obj, method)
        for interface, service in SERVICES.items()
        for method in dbus_methods(interface)
        for obj in [_object_key(service)]
    ]


def _object_key(service: type) -> str:
    return {
        ManagerObject: "manager",
        AgentObject: "agent",
        RuntimeObject: "runtime",
        TasksObject: "tasks",
        ModelObject: "model",
        ApprovalsObject: "approvals",
        MemoryObject: "memory",
        SessionsObject: "sessions",
        GoalsObject: "goals",
        TeamsObject: "teams",
        MessagesObject: "messages",
        ObserveObject: "observe",
    }[service]


def test_the_call_table_covers_every_method(tmp_path: Path) -> None:
    assert set(Api(tmp_path).calls()) == set(all_calls())


def _scope(obj: str, method: str) -> Scope:
    service = {
        v: k
        for k, v in {
            ManagerObject: "manager",
            AgentObject: "agent",
            RuntimeObject: "runtime",
            TasksObject: "tasks",
            ModelObject: "model",
            ApprovalsObject: "approvals",
            MemoryObject: "memory",
            SessionsObject: "sessions",
            GoalsObject: "goals",
            TeamsObject: "teams",
            MessagesObject: "messages",
            ObserveObject: "observe",
        }.items()
    }[obj]
    return RULES[declared(service, method) or ""].scope


# What each kind of caller must be refused. The agent is a1 (alice's), calling
# about a2 (its sibling) and alice's things; the non-owner is bob; the owner
# alice is an ordinary user, not an administrator.
def must_deny(kind: str, obj: str, method: str) -> bool:
    scope = _scope(obj, method)
    if kind == "agent":
        return scope not in (Scope.ANYONE, Scope.SELF)
    if kind == "non-owner":
        return scope in (Scope.OWNER, Scope.VIEWER, Scope.ADMIN, Scope.SELF)
    return scope in (Scope.ADMIN, Scope.SELF)  # owner, unprivileged


@pytest.mark.parametrize("kind", ["agent", "non-owner", "owner"])
def test_callers_are_denied_what_they_must_not_call_and_each_denial_is_audited(
    tmp_path: Path, kind: str
) -> None:
    api = Api(tmp_path)
    caller = {"agent": Caller(api.a1.uid), "non-owner": BOB, "owner": ALICE}[kind]
    denied = []
    for obj, method in sorted(all_calls()):
        if not must_deny(kind, obj, method):
            continue
        before = api.w.audit.head()[0]
        error = api.call(caller, obj, method)
        assert error == "PermissionDenied", (kind, obj, method, error)
        rows = api.w.audit.entries(after=before, limit=100)
        assert [(r.actor_uid, r.result) for r in rows] == [(caller.uid, "denied")], (
            kind,
            obj,
            method,
            rows,
        )
        denied.append(method)
    assert denied


@pytest.mark.parametrize("kind", ["non-owner", "owner"])
def test_the_same_calls_pass_the_policy_for_those_entitled(tmp_path: Path, kind: str) -> None:
    """The control: what bob is refused on alice's things, alice may do; what only
    administrators may do, root may. So the refusals above are the policy's, not
    the setup's."""
    api = Api(tmp_path)
    for obj, method in sorted(all_calls()):
        scope = _scope(obj, method)
        if not must_deny(kind, obj, method) or scope is Scope.SELF:
            continue
        entitled = ROOT if scope is Scope.ADMIN else ALICE
        assert api.call(entitled, obj, method) != "PermissionDenied", (obj, method)


def test_an_agent_may_describe_itself_but_not_manage_itself(tmp_path: Path) -> None:
    api = Api(tmp_path)
    me = Caller(api.a2.uid)
    assert api.call(me, "agent", "describe") == ""
    assert api.call(me, "agent", "stop") == "PermissionDenied"


def test_polkit_grants_one_action_to_one_person(tmp_path: Path) -> None:
    """A polkit rule granting bob org.agentos.agentd1.set-quota lets him set quotas,
    and nothing else: he still may not verify the audit log or stop alice's agent."""
    api = Api(tmp_path)
    grant = {"org.agentos.agentd1.set-quota"}
    assert api.call(BOB, "model", "set_quota", grant) == ""
    assert api.meter.agent_quota(api.a1).limit == 5
    assert api.call(BOB, "manager", "verify_audit", grant) == "PermissionDenied"
    assert api.call(BOB, "manager", "stop_agent", grant) == "PermissionDenied"


def test_polkit_is_asked_only_about_people_agentd_does_not_already_decide(tmp_path: Path) -> None:
    api = Api(tmp_path)
    for caller in (ROOT, Caller(api.a1.uid)):
        callers = FixedCallers(api.w.reg.policy, caller)
        asyncio.run(callers.authorize("quota.list"))
        assert callers.polkit.asked == []  # type: ignore[union-attr]
    callers = FixedCallers(api.w.reg.policy, BOB)
    asyncio.run(callers.authorize("quota.list"))
    assert callers.polkit.asked == ["org.agentos.agentd1.manage-agents"]  # type: ignore[union-attr]

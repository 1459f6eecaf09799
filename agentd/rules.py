"""The rules agentd.policy decides by: one Rule per policy action (RULES).

Kept apart from the deciding (agentd.policy) so that the table, which grows
with every D-Bus method, reads as one list. A method whose action has no rule
here is refused (deny by default).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.Enum):
    """Who a rule lets through."""

    ANYONE = "anyone"  # any caller; what it returns is filtered per caller
    PERSON = "person"  # any local user but not an agent; rows filtered by ownership
    OWNER = "owner"  # the resource's owner, or an administrator; never an agent
    VIEWER = "viewer"  # OWNER, or the agent the resource is
    ADMIN = "admin"  # administrators only
    SELF = "self"  # an agent, about itself (the Runtime interface)


# polkit actions (policies/org.agentos.agentd1.policy)
MANAGE = "org.agentos.agentd1.manage-agents"
AUDIT = "org.agentos.agentd1.read-audit"
QUOTA = "org.agentos.agentd1.set-quota"
RELOAD = "org.agentos.agentd1.reload-model"

MANAGER_ONLY_PEOPLE = "agents may not use the Manager interface"
TASKS_ONLY_PEOPLE = "agents may not use the Tasks interface"
NO_AGENT_MANAGES = "agents may not manage agents"


@dataclass(frozen=True)
class Rule:
    scope: Scope
    polkit: str | None = None  # the polkit action that makes a person an admin here
    agents: str = "agents may not do this"  # why an agent is refused (if it is)
    what: str = ""  # for "only administrators may WHAT"
    creates: bool = False  # a creation: rate-limited per UID (creates_per_second)
    creator: bool = False  # only people who may own agents (creator_group, login shell)
    # a system account made an administrator for this action alone, as a polkit
    # grant makes a person one (metrics.read: the metrics unit's agentd-metrics)
    account: str = ""


_M, _T = MANAGER_ONLY_PEOPLE, TASKS_ONLY_PEOPLE
RULES: dict[str, Rule] = {
    # Manager and Agent objects
    "agent.create": Rule(
        Scope.PERSON, MANAGE, "agents may not create agents", creates=True, creator=True
    ),
    "agent.get": Rule(Scope.OWNER, MANAGE, _M),
    "agent.list": Rule(Scope.PERSON, MANAGE, _M),
    "agent.show": Rule(Scope.OWNER, MANAGE, _M),
    "agent.describe": Rule(Scope.VIEWER, MANAGE),
    "agent.start": Rule(Scope.OWNER, MANAGE, NO_AGENT_MANAGES),
    "agent.stop": Rule(Scope.OWNER, MANAGE, NO_AGENT_MANAGES),
    "agent.remove": Rule(Scope.OWNER, MANAGE, NO_AGENT_MANAGES),
    "template.list": Rule(Scope.PERSON, None, _M),
    "template.show": Rule(Scope.PERSON, None, _M),
    "audit.list": Rule(Scope.PERSON, AUDIT, _M),
    "audit.verify": Rule(Scope.ADMIN, AUDIT, _M, "verify the audit log"),
    # Runtime: an agent about itself
    "runtime.register": Rule(Scope.SELF),
    "runtime.heartbeat": Rule(Scope.SELF),
    "task.claim": Rule(Scope.SELF),
    "task.completed": Rule(Scope.SELF),
    "task.failed": Rule(Scope.SELF),
    "task.blocked": Rule(Scope.SELF),
    "model.think": Rule(Scope.SELF),
    "runtime.context": Rule(Scope.SELF),  # the agent loop (agentd.tasks.trace)
    "runtime.record_step": Rule(Scope.SELF),
    "runtime.ask_owner": Rule(Scope.SELF),
    "runtime.defer": Rule(Scope.SELF),
    "runtime.delegate": Rule(Scope.SELF),
    "runtime.delegated": Rule(Scope.SELF),
    "runtime.request_approval": Rule(Scope.SELF),  # approval gates (agentd.approvals)
    "runtime.use_approval": Rule(Scope.SELF),
    "runtime.approvals": Rule(Scope.SELF),
    # Tasks
    "project.create": Rule(Scope.PERSON, MANAGE, _T, creates=True),
    "project.list": Rule(Scope.PERSON, MANAGE, _T),
    "project.show": Rule(Scope.OWNER, MANAGE, _T),
    "project.remove": Rule(Scope.OWNER, MANAGE, _T),
    "task.create": Rule(Scope.PERSON, MANAGE, _T, creates=True),
    "task.list": Rule(Scope.PERSON, MANAGE, _T),
    "task.show": Rule(Scope.OWNER, MANAGE, _T),
    "artifact.read": Rule(Scope.OWNER, MANAGE, _T),
    "task.cancel": Rule(Scope.OWNER, MANAGE, _T),
    "task.retry": Rule(Scope.OWNER, MANAGE, _T),
    "task.unblock": Rule(Scope.OWNER, MANAGE, _T),
    "task.reply": Rule(Scope.OWNER, MANAGE, _T),
    # Approvals: a person answers; an agent never does, not even for its own task
    "approval.list": Rule(Scope.PERSON, MANAGE, "agents may not answer approvals"),
    "approval.show": Rule(Scope.OWNER, MANAGE, "agents may not answer approvals"),
    "approval.grant": Rule(Scope.OWNER, MANAGE, "agents may not answer approvals"),
    "approval.deny": Rule(Scope.OWNER, MANAGE, "agents may not answer approvals"),
    # Model
    # memory (issue 13; agentd.memory): an agent's through Runtime only
    "memory.read": Rule(Scope.OWNER, MANAGE, "agents recall through the Runtime interface"),
    "memory.write": Rule(Scope.OWNER, MANAGE, "agents remember through the Runtime interface"),
    "runtime.remember": Rule(Scope.SELF),
    "runtime.recall": Rule(Scope.SELF),
    "runtime.embed": Rule(Scope.SELF),  # its endpoint's /v1/embeddings (agentd.endpoint)
    # chat sessions (issue 13; agentd.sessions): talking in one is model.chat
    "session.list": Rule(Scope.PERSON, MANAGE, "agents may not read chat sessions"),
    "session.show": Rule(Scope.OWNER, MANAGE, "agents may not read chat sessions"),
    "session.remove": Rule(Scope.OWNER, MANAGE, "agents may not read chat sessions"),
    # goals (issue 14; agentd.goals): people ask, watch and answer; agents do not
    "goal.create": Rule(Scope.PERSON, MANAGE, "agents may not start goals", creates=True),
    "goal.list": Rule(Scope.PERSON, MANAGE, "agents may not read goals"),
    "goal.show": Rule(Scope.OWNER, MANAGE, "agents may not read goals"),
    "goal.approve": Rule(Scope.OWNER, MANAGE, "agents may not answer goals"),
    "goal.cancel": Rule(Scope.OWNER, MANAGE, "agents may not cancel goals"),
    # teams (issue 15; agentd.teams): people make them and choose their members
    "team.create": Rule(Scope.PERSON, MANAGE, "agents may not make teams", creates=True),
    "team.list": Rule(Scope.PERSON, MANAGE, "agents may not read teams"),
    "team.show": Rule(Scope.OWNER, MANAGE, "agents may not read teams"),
    "team.manage": Rule(Scope.OWNER, MANAGE, "agents may not change teams"),
    # messages (issue 15; agentd.messages): a person with its agents; agents
    # among themselves through the Runtime interface
    "message.send": Rule(Scope.OWNER, MANAGE, "agents send through the Runtime interface"),
    "message.list": Rule(Scope.OWNER, MANAGE, "agents receive through the Runtime interface"),
    "runtime.send": Rule(Scope.SELF),
    "runtime.receive": Rule(Scope.SELF),
    "model.show": Rule(Scope.ANYONE),
    "model.reload": Rule(Scope.ADMIN, RELOAD, what="reload the model"),
    "model.list": Rule(Scope.ANYONE),
    "model.install": Rule(Scope.ADMIN, RELOAD, what="install models"),
    "model.use": Rule(Scope.ADMIN, RELOAD, what="choose the model"),
    "model.remove": Rule(Scope.ADMIN, RELOAD, what="remove models"),
    "model.chat": Rule(Scope.OWNER, MANAGE, "agents may not chat with agents"),
    # ChatRead/ChatCancel: a stream is its starter's UID's alone (agentd.api.streams.Polled)
    "model.chat_stream": Rule(Scope.PERSON, None, "agents may not chat with agents"),
    "quota.list": Rule(Scope.ANYONE, MANAGE),
    "usage.list": Rule(Scope.ANYONE, MANAGE),
    "quota.set": Rule(Scope.ADMIN, QUOTA, what="change quotas"),
    "quota.reset": Rule(Scope.ADMIN, QUOTA, what="change quotas"),
    # observing (issue 16; agentd.fleet, agentd.metrics): reads, rows filtered per caller
    "fleet.read": Rule(Scope.PERSON, MANAGE, "agents may not watch the fleet"),
    "agent.ps": Rule(Scope.OWNER, MANAGE, _M),
    "agent.journal": Rule(Scope.OWNER, MANAGE, _M),
    "metrics.read": Rule(
        Scope.PERSON, MANAGE, "agents may not read metrics", account="agentd-metrics"
    ),
    # quota plans (issue 16; agentd.plans): people read them; administrators assign them
    "plan.list": Rule(Scope.PERSON, MANAGE, "agents may not read plans"),
    "plan.show": Rule(Scope.OWNER, MANAGE, "agents may not read plans"),
    "plan.assign": Rule(Scope.ADMIN, QUOTA, what="assign plans"),
}

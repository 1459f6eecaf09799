"""Typed engine errors.

Each class carries a short ``name``; the bus layer turns it into
``org.agentos.agentd1.Error.<name>`` so callers match on names, never on text.
The engine itself knows nothing of D-Bus.
"""

from __future__ import annotations


class AgentdError(Exception):
    """Base of every error agentd reports to a caller."""

    name = "Failed"


class InvalidName(AgentdError):
    name = "InvalidName"


class InvalidArgument(AgentdError):
    name = "InvalidArgument"


class NoSuchAgent(AgentdError):
    name = "NoSuchAgent"


class NoSuchTemplate(AgentdError):
    name = "NoSuchTemplate"


class AlreadyExists(AgentdError):
    name = "AlreadyExists"


class PermissionDenied(AgentdError):
    name = "PermissionDenied"


class LimitExceeded(AgentdError):
    """A per-owner limit (agents, projects, queued tasks), a per-caller rate, or
    the UID range is exhausted."""

    name = "LimitExceeded"


class Busy(AgentdError):
    """The agent is in the middle of another operation (creating, removing)."""

    name = "Busy"


class NoSuchTask(AgentdError):
    name = "NoSuchTask"


class NoSuchProject(AgentdError):
    name = "NoSuchProject"


class NoSuchApproval(AgentdError):
    """No approval with that id (issue 12's gates); not the caller's is PermissionDenied."""

    name = "NoSuchApproval"


class NoCapableAgent(AgentdError):
    """No agent the caller owns has what the task needs."""

    name = "NoCapableAgent"


class LeaseExpired(AgentdError):
    """A report about a claim that is no longer current (expired, cancelled, retried)."""

    name = "LeaseExpired"


class Conflict(AgentdError):
    """Another change won the race for the same row (optimistic versioning)."""

    name = "Conflict"


class QuotaExceeded(AgentdError):
    """A token quota is used up; the message says which and when it resets."""

    name = "QuotaExceeded"

    def __init__(self, message: str, resets_at: float = 0.0) -> None:
        super().__init__(message)
        self.resets_at = resets_at


class ModelUnavailable(AgentdError):
    """The inference service cannot be reached, or has no model loaded."""

    name = "ModelUnavailable"


class Overloaded(AgentdError):
    """The inference service's bounded queue is full: retry later."""

    name = "Overloaded"


class NoSpace(AgentdError):
    """agentd's state directory is full: the change was not made (retry later)."""

    name = "NoSpace"


class InvalidConfig(AgentdError):
    name = "InvalidConfig"


class SystemError_(AgentdError):
    """A system tool or systemd refused; the message says which and why."""

    name = "SystemError"


ALL_ERRORS: tuple[type[AgentdError], ...] = (
    AgentdError,
    InvalidName,
    InvalidArgument,
    NoSuchAgent,
    NoSuchTemplate,
    AlreadyExists,
    PermissionDenied,
    LimitExceeded,
    Busy,
    InvalidConfig,
    SystemError_,
    NoSuchTask,
    NoSuchProject,
    NoSuchApproval,
    NoCapableAgent,
    LeaseExpired,
    Conflict,
    QuotaExceeded,
    ModelUnavailable,
    Overloaded,
    NoSpace,
)


# Agent memory (issue 13, agentd.memory).


class NoSuchMemory(AgentdError):
    """No memory chunk with that id (in the scopes asked about)."""

    name = "NoSuchMemory"


class MemoryLimitExceeded(LimitExceeded):
    """An agent's memory or an owner's knowledge base would pass its chunk or
    byte limit: nothing of the add was stored."""

    name = "MemoryLimitExceeded"


class MemoryDimensionMismatch(InvalidConfig):
    """The memory database was made for vectors of another dimension than the
    embedding model gives (another model): refused, never mixed."""

    name = "MemoryDimensionMismatch"


class NoEmbeddingModel(ModelUnavailable):
    """The inference service has no embedding model (none installed or configured)."""

    name = "NoEmbeddingModel"


class MemoryUnavailable(AgentdError):
    """The memory database cannot be used (sqlite-vec missing or refused)."""

    name = "MemoryUnavailable"


ALL_ERRORS += (
    NoSuchMemory,
    MemoryLimitExceeded,
    MemoryDimensionMismatch,
    MemoryUnavailable,
    NoEmbeddingModel,
)


# Chat sessions (issue 13, agentd.sessions).


class NoSuchSession(AgentdError):
    """No chat session with that id (or not one of the agent asked about)."""

    name = "NoSuchSession"


ALL_ERRORS += (NoSuchSession,)


class NoSuchGoal(AgentdError):
    """No goal with that id (or not one the caller may see)."""

    name = "NoSuchGoal"


ALL_ERRORS += (NoSuchGoal,)


class NoSuchTeam(AgentdError):
    """No team with that name (or not one the caller may see)."""

    name = "NoSuchTeam"


class NoSuchMessage(AgentdError):
    """No message with that id addressed to the caller."""

    name = "NoSuchMessage"


ALL_ERRORS += (NoSuchTeam, NoSuchMessage)

"""The engine's view of a systemd unit, free of any D-Bus type.

agentd.systemd fills it from systemd's D-Bus API; unit tests fill it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UnitStatus:
    active_state: str = "inactive"
    sub_state: str = "dead"
    main_pid: int = 0
    memory_current: int | None = None
    cpu_usage_nsec: int | None = None
    tasks_current: int | None = None

    @property
    def active(self) -> bool:
        return self.active_state in ("active", "activating", "reloading")


@dataclass(frozen=True)
class UnitUsage:
    """What a running unit uses now (systemd's counters; None: not counted)."""

    main_pid: int = 0
    control_group: str = ""
    memory_current: int | None = None
    cpu_usage_nsec: int | None = None
    tasks_current: int | None = None

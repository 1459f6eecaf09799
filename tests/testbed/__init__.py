"""The disposable systemd machine that integration tests run in (see machine.py)."""

from .machine import BootError, Machine, MachineCommandError

__all__ = ["BootError", "Machine", "MachineCommandError"]

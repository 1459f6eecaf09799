"""agentd: AI agents as Unix users in systemd units, managed over D-Bus."""

__version__ = "0.1.0"

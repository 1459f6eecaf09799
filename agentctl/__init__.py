"""agentctl: the command-line client of agentd (org.agentos.agentd1 on the system bus)."""

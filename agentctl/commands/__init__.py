"""agentctl's commands, one module per noun group; agentctl.cli puts them on the root.

Each module defines its click group (or command) without knowing the root
group, and imports only agentctl.app, agentctl.output, agentctl.params and
agentctl.client, never agentctl.cli: the tree is assembled in one place
(agentctl.cli.COMMANDS), so there is no import circle.
"""

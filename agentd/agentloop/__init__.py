"""The agent loop: how an agent's runtime works on a free-form task with the model.

host.py is all it asks of agentd (TaskHost: think, context, record_step,
ask_owner, defer, request_approval, use_approval, remember, recall); tools.py
runs the tools in the agent's home; prompt.py builds and trims what the model
sees; loop.py is the loop; memory.py what it recalls and the lessons it
stores; fetch.py the web tool. Runs as the agent, inside its unit:
nothing here imports agentd's engine or sdbus (agentd.runtime adapts D-Bus).
"""

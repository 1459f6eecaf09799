"""Chat sessions: conversations with an agent that outlive `agentctl chat`.

A session belongs to one agent; its owner (and administrators) may read,
resume and remove it. Turns are stored as they complete, in one transaction
with the answer's end, so a crash loses at most the exchange in flight. The
prompt of each new message is the agent's persona, a summary of the older
turns and the newest turns whole, fitted to the model's context: when the
turns outgrow it, the oldest are folded into the summary by the model, and
the lasting facts it finds are written to the agent's memory (agentd.memory).

store.py is the SQL (store migration 11: agentd.sessionschema), fit.py the pure rules
of what goes into a prompt, service.py the engine the bus layer calls.
"""

from .service import Sessions

__all__ = ["Sessions"]

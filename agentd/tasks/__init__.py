"""The task queue (see agentd.tasks.queue); agentd.tasks.model is its vocabulary.

Kept empty of imports so that `agentd.tasks.model` loads without the engine.
"""

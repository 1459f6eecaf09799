"""Goals (issue 14): an intent planned into steps that agents run in parallel.

plan    the plan's JSON schema and its validation (pure)
model   the vocabulary: states, records, bounds
prompt  what a goal's tasks say (pure)
store   the goals tables (store migration 12)
runner  moving goals along: the planner's answers, the steps, the report
"""

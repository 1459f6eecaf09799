"""A template's program (tests/integration/test_openai_endpoint.py): an agent
built on the openai client, started by the agent's runtime, which asks the
model once through its endpoint and writes what it saw to bot.json."""

import json
import os
from pathlib import Path

import openai

client = openai.OpenAI(max_retries=0, timeout=120)
answer = client.chat.completions.create(
    model="any", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
)
seen = {
    "uid": os.getuid(),
    "cgroup": Path("/proc/self/cgroup").read_text(),
    "content": answer.choices[0].message.content,
    "completion_tokens": answer.usage.completion_tokens,
}
with open("bot.json.part", "w") as f:
    json.dump(seen, f)
os.rename("bot.json.part", "bot.json")

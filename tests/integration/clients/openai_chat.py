"""Run inside an agent's unit by tests/integration/test_openai_endpoint.py: the
official openai client, unmodified, configured only by the environment the
runtime gives every process it starts (OPENAI_BASE_URL, OPENAI_API_KEY).
Prints one JSON object of what it saw."""

import json
import os

import openai

client = openai.OpenAI(max_retries=0, timeout=120)
out: dict = {"base_url": os.environ.get("OPENAI_BASE_URL")}
ask = [{"role": "user", "content": "Say hello."}]

chat = client.chat.completions.create(model="any", messages=ask, max_tokens=12, temperature=0)
out["chat"] = {
    "content": chat.choices[0].message.content,
    "finish_reason": chat.choices[0].finish_reason,
    "usage": chat.usage.model_dump(),
}

stream = client.chat.completions.create(
    model="any",
    messages=ask,
    max_tokens=12,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
chunks = list(stream)
out["stream"] = {
    "chunks": len(chunks),
    "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "finish_reason": [c.choices[0].finish_reason for c in chunks if c.choices][-1],
    "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None,
}

schema = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
shaped = client.chat.completions.create(
    model="any",
    messages=[{"role": "user", "content": "Name a city and its population as JSON."}],
    max_tokens=200,
    temperature=0,
    response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
)
out["json"] = {
    "content": shaped.choices[0].message.content,
    "finish_reason": shaped.choices[0].finish_reason,
}

try:
    client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "7" * 30000}], max_tokens=16
    )
    out["too_long"] = None
except openai.BadRequestError as e:
    out["too_long"] = {"status": e.status_code, "code": e.code, "message": e.message}

vectors = client.embeddings.create(model="any", input=["the cat sat", "a cat was sitting"])
out["embeddings"] = {
    "dimensions": [len(d.embedding) for d in vectors.data],
    "norms": [sum(x * x for x in d.embedding) ** 0.5 for d in vectors.data],
    "cosine": sum(
        a * b for a, b in zip(vectors.data[0].embedding, vectors.data[1].embedding, strict=True)
    ),
    "tokens": vectors.usage.prompt_tokens,
}

print(json.dumps(out))

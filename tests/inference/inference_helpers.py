"""Shared by the inference test modules (which do not import each other)."""

from __future__ import annotations

from typing import Any

from agentd.inference.engine import Engine

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about the sea.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "What do cats eat?",
]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


def chat(engine: Engine, q: str) -> list[int]:
    """The tokens of one user message, with the model's chat template."""
    return engine.chat_tokens([{"role": "user", "content": q}])

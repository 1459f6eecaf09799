"""Text to tokens and back, with the model's own vocabulary and chat template.

Invariants:

- Every prompt becomes tokens here, and every generated token becomes bytes
  here: one vocabulary, so the engine's output equals what a single-sequence
  decode loop over the same model gives.
- The chat template is the one in the GGUF (``tokenizer.chat_template``),
  rendered in jinja2's immutable sandbox: a model file is data, and its
  template must not reach Python objects or change state.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentd.inference.errors import EngineError
from agentd.inference.llama import llama_cpp

if TYPE_CHECKING:  # jinja2 is imported when a chat is first formatted
    import jinja2


class Vocab:
    """The tokenizer of one loaded model (a ``llama_model`` pointer)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._chat_template = self.meta_str("tokenizer.chat_template")
        self._compiled_template: jinja2.Template | None = None
        self._bos = self.token_text(llama_cpp.llama_vocab_bos(self._vocab))
        self._eos = self.token_text(llama_cpp.llama_vocab_eos(self._vocab))

    @property
    def handle(self) -> Any:
        """The ``llama_vocab`` pointer (for grammar samplers)."""
        return self._vocab

    def is_eog(self, token: int) -> bool:
        """End of generation: EOS, EOT and the like."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        arr = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), arr, n_max, add_special, parse_special
        )
        if n < 0:
            n_max = -n
            arr = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), arr, n_max, add_special, parse_special
            )
        return list(arr[:n])

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.token_bytes(token, special=True).decode("utf-8", "replace")

    def meta_str(self, key: str) -> str | None:
        """A string of the GGUF's metadata, or None."""
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """Format chat messages with the model's own (jinja2) chat template."""
        import jinja2.sandbox

        if self._chat_template is None:
            raise EngineError("the model has no chat template")

        def raise_exception(msg: str) -> None:
            raise EngineError(f"chat template: {msg}")

        if self._compiled_template is None:  # compiling costs more than rendering
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._compiled_template = env.from_string(self._chat_template)
        return self._compiled_template.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self._bos,
            eos_token=self._eos,
            raise_exception=raise_exception,
        )

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.tokenize(
            self.apply_chat_template(messages), add_special=False, parse_special=True
        )

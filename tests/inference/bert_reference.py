"""A reference for the embedding model, independent of llama.cpp: BERT's
WordPiece tokenizer (Hugging Face's BertTokenizer: clean, CJK split,
lowercase, strip accents, punctuation split, greedy longest match) from
vocab.txt, and all-MiniLM-L6-v2's forward pass in numpy from the safetensors
weights (post-norm encoder layers, exact erf GELU, mean pooling, L2 norm).

What the GGUF made by agentd.models.bertgguf must agree with.
"""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from agentd.models.bertgguf import read_safetensors, read_vocab


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(
        lo <= cp <= hi
        for lo, hi in (
            (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
        )
    )  # fmt: skip


class WordPiece:
    """BertTokenizer(do_lower_case=True) over vocab.txt."""

    def __init__(self, model_dir: Path) -> None:
        self.vocab = {t: i for i, t in enumerate(read_vocab(model_dir))}
        self.unk, self.cls, self.sep = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]"))

    def _words(self, text: str) -> list[str]:
        clean = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_cjk(cp):
                clean.append(f" {ch} ")
            else:
                clean.append(" " if _is_whitespace(ch) else ch)
        words = []
        for word in "".join(clean).split():
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            cur = ""
            for ch in word:
                if _is_punctuation(ch):
                    if cur:
                        words.append(cur)
                    words.append(ch)
                    cur = ""
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = ("##" if start else "") + word[start:end]
                if piece in self.vocab:
                    out.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return out

    def encode(self, text: str) -> list[int]:
        ids = [self.cls]
        for word in self._words(text):
            ids += self._pieces(word)
        return [*ids, self.sep]


def _layer_norm(x: np.ndarray[Any, Any], w: np.ndarray[Any, Any], b: np.ndarray[Any, Any],
                eps: float) -> np.ndarray[Any, Any]:  # fmt: skip
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: np.ndarray[Any, Any] = (x - mu) / np.sqrt(var + eps) * w + b
    return out


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out: np.ndarray[Any, Any] = 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
    return out


class MiniLM:
    """The BERT encoder of the safetensors weights, in float64."""

    def __init__(self, model_dir: Path) -> None:
        self.hp = json.loads((model_dir / "config.json").read_text())
        weights = read_safetensors(model_dir / "model.safetensors")
        self.w = {k.removeprefix("bert."): np.asarray(v, np.float64) for k, v in weights.items()}

    def embed(self, ids: list[int]) -> np.ndarray[Any, Any]:
        w, eps, heads = (
            self.w,
            float(self.hp["layer_norm_eps"]),
            int(self.hp["num_attention_heads"]),
        )
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])  # fmt: skip
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        d = x.shape[1] // heads
        for i in range(int(self.hp["num_hidden_layers"])):
            p = f"encoder.layer.{i}."

            def lin(x: np.ndarray[Any, Any], name: str, p: str = p) -> np.ndarray[Any, Any]:
                out: np.ndarray[Any, Any] = x @ w[p + name + ".weight"].T + w[p + name + ".bias"]
                return out

            q, k, v = (lin(x, f"attention.self.{m}").reshape(n, heads, d).transpose(1, 0, 2)
                       for m in ("query", "key", "value"))  # fmt: skip
            s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
            x = _layer_norm(x + lin(ctx, "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)  # fmt: skip
            h = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)  # fmt: skip
        v = x.mean(0)
        out: np.ndarray[Any, Any] = v / np.linalg.norm(v)
        return out

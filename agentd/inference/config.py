"""Configuration: the engine's knobs, and the ``[model]`` table that sets them.

Invariants:

- agentd-inference reads the ``[model]`` table of agentd's TOML file and
  nothing else of it (docs/inference-protocol.md, Configuration); an unknown
  key or a value out of range is a :class:`ConfigError` (the service exits
  with EX_CONFIG at start, or fails a reload), as agentd refuses its own:
  a typo must not pass silently.
- A valid table always makes a valid :class:`EngineConfig` (every sequence
  has a slot in each step; an agent's share of the queue is never more than
  its owner's, nor an owner's more than the queue).

No llama.cpp here: the config can be checked without loading the engine.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from agentd.inference import model as gguf
from agentd.inference.installed import MODEL_DIR, active_path, embedding_path

log = logging.getLogger("agentd.inference")

DEFAULT_CONFIG = "/etc/agentd/agentd.toml"
DEFAULT_MODEL = f"/var/lib/agentd-models/{gguf.DEFAULT_FILENAME}"


class ConfigError(Exception):
    """The [model] table has a bad key or value."""


@dataclass(frozen=True)
class EngineConfig:
    n_seq_max: int = 16
    n_ctx_per_seq: int = 1024
    n_batch: int = 128  # bigger prefills at once delay every sequence's next token
    n_threads: int = 2
    max_queue: int = 64
    max_queue_per_owner: int | None = None  # None: max_queue
    max_queue_per_agent: int | None = None  # None: max_queue
    # One KV stream per sequence (False) is what the tests verify: batched greedy
    # output equals one-at-a-time. True (one shared buffer) was faster at 16
    # sequences here but gave different tokens in a batch with 0.3.36: do not use.
    kv_unified: bool = False
    seed: int = 0
    # Prompt prefix reuse: a request whose prompt starts with at least this many
    # tokens that another sequence already holds (a finished request's, kept
    # in its free sequence, or a running one's) takes their KV cache instead of
    # computing it again. 0: never.
    prefix_min: int = 16


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ModelConfig:
    """The [model] table (docs/inference-protocol.md, Configuration)."""

    path: str = DEFAULT_MODEL
    # The embedding model's GGUF (the ``embed`` op); None: no embedding model.
    # Unset in the table: the manifest's choice, else the default's file if present.
    embedding: str | None = None
    # None: from the model (resolve()): context = its training context, at most
    # AUTO_CONTEXT; sequences = as many as kv_memory holds, at most AUTO_SEQUENCES.
    context: int | None = None
    sequences: int | None = None
    batch: int | None = None
    kv_memory: int = 768  # MiB of KV cache the automatic sequence count may use
    threads: int = field(default_factory=_default_threads)
    max_queue: int = 64
    # A fixed quarter of the queue (agentd.inference.fairqueue says why fixed):
    # one owner, with however many agents, cannot fill it.
    max_queue_per_owner: int = 16
    max_queue_per_agent: int = 16

    def engine_config(self) -> EngineConfig:
        # resolve() sets all three from the model; unresolved, the automatic caps
        sequences = self.sequences or AUTO_SEQUENCES
        return EngineConfig(
            n_seq_max=sequences,
            n_ctx_per_seq=self.context or AUTO_CONTEXT,
            n_batch=self.batch or max(AUTO_BATCH, sequences),
            n_threads=self.threads,
            max_queue=self.max_queue,
            max_queue_per_owner=min(self.max_queue_per_owner, self.max_queue),
            max_queue_per_agent=min(
                self.max_queue_per_agent, self.max_queue_per_owner, self.max_queue
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        """What ``show`` reports as ``config``."""
        d = asdict(self)
        del d["path"], d["kv_memory"]  # an input of resolve(): its outcome is shown
        del d["embedding"]  # show's "embedding" says what is loaded
        return d


# key: (lowest, highest) for the integers
_RANGES: dict[str, tuple[int, int]] = {
    "context": (64, 1 << 20),
    "sequences": (1, 256),
    "batch": (1, 1 << 16),
    "threads": (1, 1024),
    "max_queue": (1, 1 << 20),
    "max_queue_per_owner": (1, 1 << 20),
    "max_queue_per_agent": (1, 1 << 20),
    "kv_memory": (16, 1 << 20),
}

# The automatic settings. 4,096 tokens: enough for an agent's prompt with tool
# output (issue 12), and what the 1.5B coder model needs at least; a model
# trained on less gets its own. 16 sequences: beyond that, on 2 cores, each
# request only waits longer (bench/inference.py). 768 MiB of KV cache: with
# MemoryMax=3G (agentd-inference.service) a 1.1 GB model and a reload's second
# copy still fit. Measured KV per token (f16): SmolLM2-135M 23,040 B (8
# sequences of 4,096), Qwen2.5-Coder-1.5B 28,672 B (6 sequences of 4,096).
AUTO_CONTEXT = 4096
AUTO_SEQUENCES = 16
AUTO_BATCH = 128


def kv_bytes_per_token(meta: dict[str, Any]) -> int | None:
    """KV cache bytes one token takes (f16 K and V, every layer), from GGUF metadata."""
    arch = meta.get("general.architecture")
    try:
        layers = int(meta[f"{arch}.block_count"])
        heads = int(meta[f"{arch}.attention.head_count"])
        kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
        head_dim = int(meta[f"{arch}.embedding_length"]) // heads
        k = int(meta.get(f"{arch}.attention.key_length", head_dim))
        v = int(meta.get(f"{arch}.attention.value_length", head_dim))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return layers * kv_heads * (k + v) * 2


def resolve(cfg: ModelConfig, info: gguf.ModelInfo) -> ModelConfig:
    """CFG with every automatic setting (None) computed for the model INFO:
    the context from its training context, the sequences from kv_memory."""
    context = cfg.context or min(info.n_ctx_train or AUTO_CONTEXT, AUTO_CONTEXT)
    sequences = cfg.sequences
    if sequences is None:
        per_token = kv_bytes_per_token(info.metadata) or 32_768
        fits = (cfg.kv_memory << 20) // (context * per_token)
        sequences = max(1, min(AUTO_SEQUENCES, fits))
    batch = cfg.batch or max(AUTO_BATCH, sequences)
    if batch < sequences:
        raise ConfigError(
            f"[model] batch ({batch}) must be at least sequences ({sequences}): "
            "every sequence needs a slot in each step"
        )
    return replace(cfg, context=context, sequences=sequences, batch=batch)


def _value(key: str, value: Any) -> Any:
    """One checked value of the table."""
    if key == "path":
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigError("[model] path must be an absolute path (a string)")
        return value
    if key == "embedding":  # "": no embedding model
        if not isinstance(value, str) or (value and not value.startswith("/")):
            raise ConfigError('[model] embedding must be an absolute path, or "" for none')
        return value or None
    if key in _RANGES:
        lo, hi = _RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"[model] {key} must be an integer in {lo}..{hi}, not {value!r}")
        return value
    known = ", ".join(["path", "embedding", *_RANGES])
    raise ConfigError(f"[model] {key}: unknown key (known: {known})")


def parse_model_table(table: dict[str, Any]) -> ModelConfig:
    """Validate the [model] table; an unknown key is refused, as agentd refuses
    its own (a typo must not pass silently)."""
    cfg = ModelConfig(**{key: _value(key, value) for key, value in table.items()})
    if cfg.batch is not None and cfg.sequences is not None and cfg.batch < cfg.sequences:
        raise ConfigError(
            f"[model] batch ({cfg.batch}) must be at least sequences "
            f"({cfg.sequences}): every sequence needs a slot in each step"
        )
    return cfg


def load_config(path: str | os.PathLike[str], model_dir: str = MODEL_DIR) -> ModelConfig:
    """The [model] table of the TOML file at ``path`` (defaults if the file or
    the table is absent); other tables are not looked at. Without a path
    there, the active model of MODEL_DIR's manifest (agentd.inference.installed);
    without an embedding key, its embedding model."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        log.info("%s does not exist: default model settings", path)
        return ModelConfig(
            path=active_path(model_dir) or DEFAULT_MODEL, embedding=embedding_path(model_dir)
        )
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    table = doc.get("model", {})
    if isinstance(table, str):  # `model = "/path/to/x.gguf"`, the short form
        table = {"path": table}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: model must be a table, or a GGUF file's path")
    try:
        cfg = parse_model_table(table)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    if "path" not in table:  # not pinned here: the model agentctl model use chose
        cfg = replace(cfg, path=active_path(model_dir) or cfg.path)
    if "embedding" not in table:
        cfg = replace(cfg, embedding=embedding_path(model_dir))
    return cfg

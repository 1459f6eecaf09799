"""Which models are in use: the manifest of installed models, as the service reads it.

agentd (``agentd.models``) writes ``models.json`` in the model directory,
atomically (temporary file, fsync, rename), whenever a model is installed,
chosen or removed; the service reads only its ``active`` entry (the chat
model) and its ``embedding`` entry, to know which files to load when
agentd.toml does not name them (``[model] path`` and ``embedding``, which
then win). Kept here, stdlib only, so that agentd.inference imports nothing
of agentd outside itself.
"""

from __future__ import annotations

import json
import os

MODEL_DIR = "/var/lib/agentd-models"
MANIFEST = "models.json"
# The default embedding model's file (agentd.models.catalog's minilm; a unit
# test checks they agree): loaded when present and nothing else is chosen.
DEFAULT_EMBEDDING_FILE = "all-MiniLM-L6-v2.F16.gguf"


def read_manifest(model_dir: str = MODEL_DIR) -> dict[str, object]:
    """The manifest, or an empty one if it is absent or unreadable."""
    try:
        with open(os.path.join(model_dir, MANIFEST), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def active_path(model_dir: str = MODEL_DIR) -> str | None:
    """The active model's file (absolute), if the manifest names one that exists."""
    return _path(model_dir, "active")


def embedding_path(model_dir: str = MODEL_DIR) -> str | None:
    """The embedding model's file (absolute): the manifest's choice if its
    file exists, else the default embedding model's file if present."""
    chosen = _path(model_dir, "embedding")
    default = os.path.join(model_dir, DEFAULT_EMBEDDING_FILE)
    return chosen or (default if os.path.isfile(default) else None)


def _path(model_dir: str, key: str) -> str | None:
    doc = read_manifest(model_dir)
    name, models = doc.get(key), doc.get("models")
    if not isinstance(name, str) or not isinstance(models, dict):
        return None
    entry = models.get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    path = os.path.join(model_dir, os.path.basename(entry["file"]))
    return path if os.path.isfile(path) else None

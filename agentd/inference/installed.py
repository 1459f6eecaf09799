"""Which model is active: the manifest of installed models, as the service reads it.

agentd (``agentd.models``) writes ``models.json`` in the model directory,
atomically (temporary file, fsync, rename), whenever a model is installed,
chosen or removed; the service reads only its ``active`` entry, to know which
file to load when agentd.toml does not name one (``[model] path``, which then
wins). Kept here, stdlib only, so that agentd.inference imports nothing of
agentd outside itself.
"""

from __future__ import annotations

import json
import os

MODEL_DIR = "/var/lib/agentd-models"
MANIFEST = "models.json"


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
    doc = read_manifest(model_dir)
    active, models = doc.get("active"), doc.get("models")
    if not isinstance(active, str) or not isinstance(models, dict):
        return None
    entry = models.get(active)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    path = os.path.join(model_dir, os.path.basename(entry["file"]))
    return path if os.path.isfile(path) else None

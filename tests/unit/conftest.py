"""Unit tests: the project and this folder on sys.path, the World fixture."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from world import World


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)

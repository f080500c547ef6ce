"""Shared fixtures: the golden real-Caffe data copied into tests/golden (no ../shared needed)."""
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
UPSTREAM = Path(__file__).parent / "upstream"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
CASES = sorted(k for k in MANIFEST if not k.startswith("_"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN

"""Shared fixtures: the golden real-Caffe data copied into tests/golden (no ../shared needed)."""
import os

# Before anything loads numpy: the BLAS kernels that give the original's resize bits (see reproduce/__init__.py).
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

import hashlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
UPSTREAM = Path(__file__).parent / "upstream"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
CASES = sorted(k for k in MANIFEST if not k.startswith("_"))


def tree_digest(root: Path) -> str:
    """sha256 over every path and file content below root: proves a folder was not written."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN

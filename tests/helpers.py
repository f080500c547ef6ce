"""What several test modules share: where the golden real-Caffe data lives (copied into
tests/golden, so no ../shared is needed) and a digest that proves a folder was not written."""
import hashlib
import json
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
UPSTREAM = Path(__file__).parent / "upstream"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
CASES = sorted(k for k in MANIFEST if not k.startswith("_"))


def tree_digest(root: Path) -> str:
    """sha256 over every path and file content below root."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()

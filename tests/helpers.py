"""What several test modules share: where the golden real-Caffe data lives (copied into
tests/golden, so no ../shared is needed) and a digest that proves a folder was not written."""
import hashlib
import json
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_STD = Path(__file__).parent / "golden_std"    # Caffe's standard losses, metrics and solvers
GOLDEN_ZOO = Path(__file__).parent / "golden_zoo"    # Model Zoo nets run by the real Caffe
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


def copy_golden_voc(folder: Path) -> Path:
    """A copy of the golden synthetic VOC set (the original data layer's episodes are on it) at
    folder/VOC2012, so that a test can prove it is never written."""
    import shutil

    voc = folder / "VOC2012"
    shutil.copytree(GOLDEN / "episodes" / "VOC2012", voc)
    return voc


def mixed_thin_params(seed: int) -> dict:
    """A random thin OSLSM's blobs whose masks on the golden episodes are mixed: random weights
    give logits of order 100 on one side of 0 (an all-foreground mask), and this bias shift puts
    0 inside the logit range."""
    import numpy as np

    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.random_init import random_oslsm_params

    params = random_oslsm_params(OSLSMWidths.THIN, seed=seed, hashing=True)
    params["rb1s"][1] = params["rb1s"][1] - np.float32(60.0)
    return params


def write_mixed_thin_caffemodel(path: Path, seed: int) -> None:
    """mixed_thin_params as a caffemodel."""
    from weights_convert.oslsm.random_init import write_oslsm_caffemodel

    write_oslsm_caffemodel(path, mixed_thin_params(seed))

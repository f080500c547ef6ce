"""What several test modules share: where the golden real-Caffe data lives (copied into
tests/golden, so no ../shared is needed) and a digest that proves a folder was not written."""
import hashlib
import json
import shutil
from pathlib import Path

TESTS = Path(__file__).resolve().parent   # the tests, in folders that follow the packages, and their data
ROOT = TESTS.parent
GOLDEN = TESTS / "golden"
GOLDEN_TRAIN = TESTS / "golden_train"  # the real Caffe training a thin OSLSM
GOLDEN_STD = TESTS / "golden_std"      # Caffe's standard losses, metrics and solvers
GOLDEN_ZOO = TESTS / "golden_zoo"      # Model Zoo nets run by the real Caffe
TRAINING_DATA = GOLDEN_TRAIN / "episodes" / "data"  # synthetic VOC + SBD folders of the training layer
REFERENCE = TESTS / "reference"        # episode lists of the original and of HSNet
UPSTREAM = TESTS / "upstream"
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


def thin_solver(folder: Path) -> Path:
    """A short SGD solver for the golden thin OSLSM train net, written with a copy of the net into `folder`."""
    shutil.copy(GOLDEN_TRAIN / "net.prototxt", folder / "net.prototxt")
    solver = folder / "solver.prototxt"
    solver.write_text('train_net: "net.prototxt"\nbase_lr: 1e-9\nlr_policy: "fixed"\nmomentum: 0.9\n'
                      'weight_decay: 0.0005\niter_size: 2\naverage_loss: 10\nmax_iter: 4\nsnapshot: 2\n')
    return solver

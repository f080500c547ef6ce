"""What a GPU run needs, checked without a GPU: the self-check as a user runs it, a one-line
failure where CUDA is missing, cuBLAS's workspace set before CUDA starts, and no host
synchronisation in the per-episode and per-pass paths beyond the results the host needs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import GOLDEN, ROOT
from weights_convert.cli import main
from weights_convert.oslsm.loading import load_oslsm

HOST_TRANSFERS = ("cpu", "numpy", "item", "tolist")


@pytest.mark.slow
def test_selfcheck_passes_on_the_cpu_and_records_every_case(tmp_path, capsys):
    assert main(["selfcheck", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "selfcheck.json").read_text())
    groups = {c["group"] for c in record["cases"]}
    assert groups == {"layers (graph)", "OSLSM module", "training pass", "solver", "solver state"}
    assert record["passed"] and all(c["passed"] and c["worst_over_tolerance"] <= 1 for c in record["cases"])
    assert len(record["cases"]) >= 58 and f"{len(record['cases'])} passed, 0 failed" in printed
    assert record["environment"]["torch"] == torch.__version__


def test_selfcheck_and_test_gpu_fail_in_one_line_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.fail("this test describes a machine without CUDA; run `make test-gpu` there instead")
    done = subprocess.run([sys.executable, "-m", "weights_convert", "selfcheck", "--device", "cuda"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no usable CUDA device" in done.stderr
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--device", "cuda", "tests/weights_convert/layers/test_layers_golden.py"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "ERROR: --device 'cuda'" in done.stdout + done.stderr
    assert " passed" not in done.stdout


def test_cublas_workspace_is_set_when_the_package_loads():
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    done = subprocess.run([sys.executable, "-c", "import os, weights_convert; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ":4096:8"


@pytest.fixture
def host_transfers(monkeypatch):
    """Counts of the tensor methods that move data to the host (each a device synchronisation)."""
    counts = {name: 0 for name in HOST_TRANSFERS}
    for name in HOST_TRANSFERS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def test_an_episode_moves_only_its_score_to_the_host(host_transfers):
    from reproduce.evaluation.evaluate import score_map

    case = GOLDEN / "oslsm_thin_5shot_500x500"
    model = load_oslsm(case / "weights.caffemodel", case / "net.prototxt")
    with np.load(case / "blobs.npz") as z:
        img, label, query = (torch.from_numpy(z[n]) for n in ("first_img", "first_label", "second_img"))
    with torch.inference_mode():
        w, b = model.condition(img, label)
        features = model.query_features(query, head_cells_only=True)
        assert sum(host_transfers.values()) == 0  # forwards: nothing reaches the host
        score_map(model, features, w, b)
    assert host_transfers == {"cpu": 0, "numpy": 1, "item": 0, "tolist": 0}  # the score, once


def test_a_training_pass_moves_only_its_loss_to_the_host(host_transfers):
    """Caffe sums the loss terms sequentially in float32; torch's CUDA cumsum is refused by
    deterministic mode, so the terms are summed on the host (numpy), and the loss is logged:
    one copy to the host and one numpy view of each."""
    from weights_convert.checks.golden import _train_net
    from weights_convert.runtime.numerics import faithful_mode
    from weights_convert.train.passes import forward_backward

    net, batch = _train_net(GOLDEN.parent / "golden_train", "cpu")
    with faithful_mode():
        forward_backward(net, batch)
    assert host_transfers == {"cpu": 2, "numpy": 2, "item": 0, "tolist": 0}


def test_out_of_device_memory_says_which_pass_and_what_to_try():
    from weights_convert.runtime.devices import explained_out_of_memory

    with pytest.raises(MemoryError, match=r"^query forward of 2007_000032 \(1x3x500x500\): the device ran out of "
                                          r"memory \(CUDA out of memory\. Tried.*\); free the GPU"):
        with explained_out_of_memory("query forward of 2007_000032 (1x3x500x500)"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

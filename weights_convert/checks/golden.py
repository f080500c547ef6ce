"""The real-Caffe golden cases (tests/golden, tests/golden_train) as checks that return numbers,
on any device: what `selfcheck` runs to prove a machine (a GPU above all) against Caffe's own
outputs, with the tolerances of the test suite. A check's `ratio` is its worst difference over
its tolerance: it passes at or below 1."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

BLOB_TOL, SCALAR_RTOL = 5e-5, 2e-4       # forward blobs x max(1, max|Caffe|); scalar losses
GRAD_RTOL, LOSS_RTOL = 1e-4, 1e-5        # one training pass: gradients x max|Caffe|; the loss
HISTORY_RTOL = 2e-3                      # momentum after the visible case (tests/weights_convert/train/test_train_golden.py)
FROZEN = ("rw1s/0", "rw1s/1", "rb1s/0", "rb1s/1", "uppred_offset/0")  # lr_mult 0: never changed
SOLVER_CASES = {"train_steps_visible": (5, 3e-5), "train_steps_faithful": (3, LOSS_RTOL)}  # iterations, loss rtol
OSLSM_CASES = ("oslsm_thin_1shot_120x200", "oslsm_thin_1shot_500x500", "oslsm_thin_5shot_500x500")
REPO_TESTS = Path(__file__).resolve().parents[2] / "tests"


@dataclasses.dataclass
class Check:
    group: str
    name: str
    ratio: float   # worst |ours - Caffe| / tolerance
    note: str = ""

    @property
    def passed(self) -> bool:
        return math.isfinite(self.ratio) and self.ratio <= 1.0


def golden_folders(root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(golden, golden_train): below `root`, else the checkout's tests/ folder."""
    base = Path(root) if root is not None else REPO_TESTS
    folders = (base / "golden", base / "golden_train")
    missing = [str(f) for f in folders if not (f / "manifest.json").is_file()]
    if missing:
        raise FileNotFoundError(f"golden data not found: {', '.join(missing)} (a checkout's tests/ holds it; "
                                "give --golden DIR, the folder holding golden/ and golden_train/)")
    return folders


def blob_ratio(ours, ref: np.ndarray) -> float:
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    if ours.shape != ref.shape:
        return math.inf
    if not ref.size:
        return 0.0
    limit = (SCALAR_RTOL if ref.ndim == 0 else BLOB_TOL) * max(1.0, float(np.abs(ref).max()))
    return float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max()) / limit


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _params(path: Path) -> dict[str, list[np.ndarray]]:
    """'<layer>/<index>' arrays regrouped as layer -> blobs in order."""
    grouped: dict[str, dict[int, np.ndarray]] = {}
    for key, value in _npz(path).items():
        layer, _, index = key.rpartition("/")
        grouped.setdefault(layer, {})[int(index)] = value
    return {layer: [blobs[i] for i in range(len(blobs))] for layer, blobs in grouped.items()}


def layer_cases(golden: Path, device: str) -> list[Check]:
    """Every case through the graph interpreter: every stored blob."""
    from weights_convert.graph import CaffeNet

    manifest = json.loads((golden / "manifest.json").read_text())
    checks = []
    for case in sorted(k for k in manifest if not k.startswith("_")):
        entry, folder = manifest[case], golden / case
        net = CaffeNet.from_prototxt(folder / "net.prototxt", phase=entry["phase"], device=device)
        if entry["has_weights"]:
            net.load_params(_params(folder / "params.npz"))
        ref = _npz(folder / "blobs.npz")
        with torch.no_grad():
            blobs = net(**{name: torch.from_numpy(ref[name]).to(device) for name in entry["inputs"]})
        missing = sorted(set(ref) - set(blobs))
        ratio = math.inf if missing else max(blob_ratio(blobs[n], ref[n]) for n in ref)
        checks.append(Check("layers (graph)", case, ratio, f"not computed: {missing}" if missing else ""))
    return checks


def oslsm_module_cases(golden: Path, device: str) -> list[Check]:
    """The thin OSLSM nets through the module, in both weight layouts: every exposed blob, and the
    binary mask wherever Caffe's logit is clear of 0."""
    from weights_convert.oslsm import load_oslsm

    checks = []
    for case in OSLSM_CASES:
        ref = _npz(golden / case / "blobs.npz")
        inputs = [torch.from_numpy(ref[n]).to(device) for n in ("first_img", "first_label", "second_img")]
        for layout in (torch.contiguous_format, torch.channels_last):
            model = load_oslsm(golden / case / "weights.caffemodel", golden / case / "net.prototxt",
                               device=device, memory_format=layout)
            with torch.no_grad():
                ours = model.forward_blobs(*inputs)
            ratio = max(blob_ratio(ours[n], ref[n]) for n in set(ours) & set(ref))
            clear = np.abs(ref["pre_score2"]) > 1e-4
            mask = (ours["score"].cpu().numpy() > 0.5)[clear] == (ref["score"] > 0.5)[clear]
            note = "" if mask.all() else f"{int((~mask).sum())} mask pixels differ"
            name = f"{case} ({'channels_last' if layout is torch.channels_last else 'contiguous'})"
            checks.append(Check("OSLSM module", name, ratio if mask.all() else math.inf, note))
    return checks


def _train_net(golden_train: Path, device: str, skip_constant_frame: bool = True):
    """The thin train net with its start weights (on "meta": shapes only) and its first batch."""
    from weights_convert.graph import CaffeNet
    from weights_convert.train.data import EpisodeInputs

    data = EpisodeInputs(golden_train / "inputs.npz")
    batch = data.batch(0)
    data.close()
    net = CaffeNet.from_prototxt(golden_train / "net.prototxt", phase="TRAIN", device=device,
                                 data_shapes={k: v.shape for k, v in batch.items()},
                                 skip_constant_frame=skip_constant_frame)
    if device != "meta":
        net.load_weights(golden_train / "weights.caffemodel")
    return net, batch


def training_pass(golden_train: Path, device: str) -> list[Check]:
    """One forward/backward of the thin train net: the loss, every param gradient, every blob diff,
    each convolution computed at every position as Caffe does (blob diffs need that; the solver
    cases run `train`, which skips the query branch's constant frame)."""
    from weights_convert.runtime.numerics import faithful_mode
    from weights_convert.train.passes import forward_backward

    net, batch = _train_net(golden_train, device, skip_constant_frame=False)
    with faithful_mode():
        result = forward_backward(net, batch, blob_diffs=True)
    caffe_loss = json.loads((golden_train / "train_grad" / "loss.json").read_text())["loss"]
    loss = abs(float(result.loss) - caffe_loss) / (LOSS_RTOL * abs(caffe_loss))
    grads = {f"{layer.name}/{i}": blob.grad for layer in net.param_layers() for i, blob in enumerate(layer.blobs)}
    param_ratio = 0.0
    for key, ref in _npz(golden_train / "train_grad" / "diffs.npz").items():
        ours = np.zeros(ref.shape, np.float32) if grads[key] is None else grads[key].cpu().numpy().reshape(ref.shape)
        param_ratio = max(param_ratio, _relative(ours, ref, GRAD_RTOL))
    blob_diff_ratio = max(_relative(result.blob_diffs[name].cpu().numpy().reshape(ref.shape), ref, GRAD_RTOL)
                          for name, ref in _npz(golden_train / "train_grad" / "blob_diffs.npz").items())
    return [Check("training pass", "loss", loss), Check("training pass", "every param gradient", param_ratio),
            Check("training pass", "every blob diff", blob_diff_ratio)]


def _relative(ours: np.ndarray, ref: np.ndarray, rtol: float) -> float:
    """|ours - ref| over rtol x max|ref|; an all-zero reference must be met exactly."""
    diff = float(np.abs(ours - ref).max()) if ref.size else 0.0
    scale = rtol * float(np.abs(ref).max()) if ref.size else 0.0
    return diff / scale if scale else (0.0 if diff == 0 else math.inf)


def solver_cases(golden_train: Path, device: str) -> list[Check]:
    """Caffe's SGD solver through `train`: params after every iteration, the losses, the final
    momentum history, lr_mult-0 blobs unchanged."""
    checks = []
    for case, (iterations, loss_rtol) in SOLVER_CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = _train(golden_train, case, iterations, device, Path(tmp))
            checks += _solver_checks(golden_train, case, iterations, loss_rtol, out)
    return checks


def _train(golden_train: Path, case: str, iterations: int, device: str, tmp: Path) -> Path:
    from weights_convert.files.provenance import sha256_file
    from weights_convert.train.data import EpisodeInputs
    from weights_convert.train.run import TrainRequest, train
    from weights_convert.train.solver_file import read_solver

    data = EpisodeInputs(golden_train / "inputs.npz")
    try:
        train(TrainRequest(solver=read_solver(golden_train / case / "solver.prototxt"), data=data,
                           data_digest=sha256_file(golden_train / "inputs.npz"), out=tmp / "run",
                           weights=str(golden_train / "weights.caffemodel"), iterations=iterations,
                           snapshot_every=1, seed=0, device=device, progress=False))
    finally:
        data.close()
    return tmp / "run"


def _solver_checks(golden_train: Path, case: str, iterations: int, loss_rtol: float, out: Path) -> list[Check]:
    from weights_convert.formats.caffemodel import read_caffemodel
    from weights_convert.formats.solverstate import read_solverstate

    steps = golden_train / case / "steps"
    initial = _npz(steps / "params_iter0.npz")
    worst = 0.0
    for t in range(1, iterations + 1):
        ours = read_caffemodel(out / f"snapshot_iter_{t}.caffemodel")
        for key, ref in _npz(steps / f"params_iter{t}.npz").items():
            layer, index = key.rsplit("/", 1)
            got = ours[layer][int(index)].reshape(ref.shape)
            if key in FROZEN:
                worst = max(worst, 0.0 if np.array_equal(got, initial[key]) else math.inf)
            else:
                moved = 1e-3 * float(np.abs(ref - initial[key]).max()) + 1e-6 * float(np.abs(ref).max())
                worst = max(worst, float(np.abs(got - ref).max()) / moved)
    manifest = json.loads((golden_train / "manifest.json").read_text())
    caffe_losses = [it["raw_loss_mean_over_iter_size"] for it in manifest[case]["losses"]]
    lines = (out / "losses.csv").read_text().splitlines()[1:]
    losses = max(abs(float(line.split(",")[2]) - c) / (loss_rtol * abs(c)) for line, c in zip(lines, caffe_losses))
    checks = [Check("solver", f"{case}: params after each of {iterations} iterations", worst),
              Check("solver", f"{case}: losses", losses)]
    if case == "train_steps_visible":
        from weights_convert.train.learnable import learnable_params

        history = read_solverstate(out / f"snapshot_iter_{iterations}.solverstate").history
        keys = [p.key for p in learnable_params(_train_net(golden_train, "meta")[0])]
        caffe = _npz(steps / "history_final.npz")
        ratio = max(_relative(h.reshape(caffe[k].shape), caffe[k], HISTORY_RTOL) for k, h in zip(keys, history))
        checks.append(Check("solver", f"{case}: final momentum history", ratio))
    return checks


def solverstate_round_trip(golden_train: Path) -> Check:
    """Caffe's own .solverstate read and written again by us: byte for byte."""
    from weights_convert.formats.solverstate import read_solverstate, write_solverstate

    source = golden_train / "train_steps_visible" / "snapshot_iter_5.solverstate"
    state = read_solverstate(source)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / source.name
        write_solverstate(copy, state.iteration, state.current_step, state.learned_net, state.history)
        same = copy.read_bytes() == source.read_bytes()
    return Check("solver state", "Caffe's .solverstate read and rewritten", 0.0 if same else math.inf,
                 "" if same else "bytes differ")

"""Forward time of exported nets against the graph they come from (run on demand, not a unit test).

    .venv/bin/python bench/export_bench.py [--rounds 5] [--no-write]

For GoogLeNet and ResNet-50 (tests/golden_zoo's prototxts and seeded weights, their golden input
sizes) and the full-size OSLSM 1-shot deploy net (random VGG-16-width weights, a 500x500 query),
times one forward through (a) the kit's graph, (b) the `export` .pt2 program
(torch.export.load(...).module()) and (c) onnxruntime on the .onnx, each alternated round by
round in one process, and reports the medians and the ratios to the graph, with the largest
difference of an output from the graph's. Replaces the "## Export" section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from eval_bench import machine, write_section  # noqa: E402
from weights_convert.artifacts import load_artifact  # noqa: E402
from weights_convert.export import export_program  # noqa: E402

SECTION = "## Export"
ZOO = ROOT / "tests" / "golden_zoo"


def zoo_case(name: str, work: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    case = json.loads((ZOO / "cases.json").read_text())[name]
    weights = work / f"{name}.caffemodel"
    subprocess.run([sys.executable, str(ZOO / "zoo_oracle.py"), "weights", str(ZOO / case["params"]),
                    str(case["seed"]), str(weights)], check=True)
    rng = np.random.default_rng(0)
    inputs = {k: rng.uniform(-60, 60, shape).astype(np.float32) for k, shape in case["inputs"].items()}
    return ZOO / case["prototxt"], weights, inputs


def oslsm_case(work: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    from weights_convert.netspec import write_net
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.random_init import random_oslsm_params, write_oslsm_caffemodel
    from weights_convert.oslsm.spec import oslsm_deploy_net

    prototxt, weights = work / "deploy_1shot.prototxt", work / "oslsm_full.caffemodel"
    write_net(oslsm_deploy_net(1, OSLSMWidths.FULL), prototxt)
    write_oslsm_caffemodel(weights, random_oslsm_params(OSLSMWidths.FULL, seed=0, hashing=True))
    rng = np.random.default_rng(0)
    inputs = {"first_img": rng.uniform(-120, 120, (1, 3, 224, 224)).astype(np.float32),
              "first_label": (rng.uniform(0, 1, (1, 1, 224, 224)) > 0.5).astype(np.float32),
              "second_img": rng.uniform(-120, 120, (1, 3, 500, 500)).astype(np.float32),
              "second_label": np.zeros((1, 1, 500, 500), np.float32)}
    return prototxt, weights, inputs


def median_times(runners: dict, rounds: int) -> dict[str, float]:
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench(label: str, prototxt: Path, weights: Path, inputs: dict, work: Path, rounds: int,
          outputs: list[str] | None = None) -> str:
    pt2, onnx = work / f"{prototxt.stem}.pt2", work / f"{prototxt.stem}.onnx"
    record = export_program(prototxt, weights, {k: v.shape for k, v in inputs.items() if v.ndim == 4 and k != "second_label"},
                            pt2, onnx_out=onnx, outputs=outputs)
    program, runtime = load_artifact(pt2), load_artifact(onnx)
    from weights_convert.graph import CaffeNet

    # The reference computes every position, as the programs do (random full-size OSLSM weights give
    # logits of order 1e4, where the constant frame's other rounding order flips sigmoids near 0)
    exact = CaffeNet.from_prototxt(prototxt, skip_constant_frame=False).load_weights(weights).eval()
    with torch.no_grad():
        reference = {name: value.numpy() for name, value in exact(**{k: torch.from_numpy(v) for k, v in inputs.items()
                                                                    if k in exact.input_names}).items()
                     if name in record.outputs}
    del exact
    worst = {}  # per artifact: max |artifact - graph| over the outputs, relative to max(1, max|graph|)
    for kind, artifact in (("pt2", program), ("onnx", runtime)):
        worst[kind] = max(float(np.abs(value - reference[name]).max()) / max(1.0, float(np.abs(reference[name]).max()))
                          for name, value in artifact.run(inputs).items())
    net = CaffeNet.from_prototxt(prototxt).load_weights(weights).eval()
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}

    def graph_forward():
        with torch.no_grad():
            net(**tensors)
    medians = median_times({"graph": graph_forward, "pt2": lambda: program.run(inputs),
                            "onnxruntime": lambda: runtime.run(inputs)}, rounds)
    base = medians["graph"]
    return (f"| {label} | {base:.3f} s | {medians['pt2']:.3f} s ({medians['pt2'] / base:.2f}x) | "
            f"{medians['onnxruntime']:.3f} s ({medians['onnxruntime'] / base:.2f}x) | {worst['pt2']:.1e} | "
            f"{worst['onnx']:.1e} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, case in (("GoogLeNet 227x251", lambda: zoo_case("googlenet", work)),
                            ("ResNet-50 225x209", lambda: zoo_case("resnet50", work)),
                            ("OSLSM 1-shot, full size, 500x500 query", lambda: oslsm_case(work))):
            # OSLSM's logits (pre_score2), not its sigmoid: random full-size weights give logits of order
            # 1e6, where any other order of float sums flips the sigmoid of the few pixels near 0
            rows.append(bench(label, *case(), work, args.rounds, ["pre_score2"] if "OSLSM" in label else None))
            print(rows[-1], flush=True)
    text = (f"{SECTION}\n\n`bench/export_bench.py`: one forward, medians of {args.rounds} rounds alternated in one "
            f"process (graph, `.pt2` program, onnxruntime); the last columns are the largest difference of each "
            f"artifact's outputs (the nets' outputs; OSLSM's logits `pre_score2`, of order 1e6 with random "
            f"full-size weights) from the graph computing every position as the programs do, relative to "
            f"max(1, max|graph|). The timed graph runs as evaluations do (OSLSM's constant frame once per "
            f"channel). Machine: {machine()}.\n\n| net | graph | .pt2 program | onnxruntime | .pt2 diff | "
            f"ONNX diff |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")
    print(text)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", text, SECTION)
    return 0


if __name__ == "__main__":
    main()

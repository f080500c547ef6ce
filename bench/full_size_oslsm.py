"""Full-size (VGG-16 widths, ~1.1 GB) OSLSM conversion check (run on demand; too slow for the unit tests).

    .venv/bin/python bench/full_size_oslsm.py [--workdir DIR] [--keep]

Writes a random full-width OSLSM .caffemodel with our writer, converts it with
`python -m weights_convert convert` in both forms (separate processes, so their peak
memory is measured), loads each result and checks that the PyTorch model from the
converted file computes exactly what the model built straight from the .caffemodel does.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from weights_convert.netspec import write_net
from weights_convert.oslsm import OSLSMWidths, load_oslsm
from weights_convert.oslsm.random_init import random_oslsm_params, write_oslsm_caffemodel
from weights_convert.oslsm.spec import oslsm_deploy_net


def run_convert(prototxt: Path, caffemodel: Path, out: Path, form: str) -> tuple[float, str]:
    """(wall seconds, peak RSS of the converter process). The peak comes from /usr/bin/time:
    a child forked from this (large) process would report this process's pages as its own."""
    command = [sys.executable, "-m", "weights_convert", "convert", "--prototxt", str(prototxt),
               "--caffemodel", str(caffemodel), "--out", str(out), "--model", form,
               "--report", str(out.with_suffix(".json"))]
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    peak_file = out.with_suffix(".maxrss")
    if timer:
        command = [timer, "-f", "%M", "-o", str(peak_file), *command]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    peak = f"{int(peak_file.read_text().split()[-1]) / 1024:.0f} MiB" if timer else "not measured (no /usr/bin/time)"
    return wall, peak


def check_graph_against_module(work: Path, prototxt: Path, caffemodel: Path, first_img, first_label,
                               second_img) -> bool:
    """`forward` (the Caffe graph interpreter, from the graph-form safetensors) and `verify`
    (the caffemodel) as a user runs them, with the OSLSM module's blobs as the reference."""
    import numpy as np

    model = load_oslsm(work / "full_oslsm.safetensors")
    with torch.no_grad():
        blobs = {k: v.numpy() for k, v in model.forward_blobs(first_img, first_label, second_img).items()}
    del model
    inputs = {"first_img": first_img.numpy(), "first_label": first_label.numpy(), "second_img": second_img.numpy(),
              "second_label": np.zeros((1, 1, *second_img.shape[2:]), np.float32)}
    np.savez(work / "inputs.npz", **inputs)
    np.savez(work / "module_blobs.npz", **inputs, **blobs)
    cli = [sys.executable, "-m", "weights_convert"]
    start = time.perf_counter()
    subprocess.run([*cli, "forward", "--prototxt", str(prototxt), "--weights", str(work / "full_graph.safetensors"),
                    "--inputs", str(work / "inputs.npz"), "--out", str(work / "graph_blobs.npz")], check=True)
    print(f"forward (graph interpreter, graph-form weights): {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    rc = subprocess.run([*cli, "verify", "--prototxt", str(prototxt), "--weights", str(caffemodel),
                         "--golden", str(work / "module_blobs.npz")]).returncode
    print(f"verify (graph interpreter from the caffemodel vs the OSLSM module's {len(blobs)} blobs): "
          f"exit {rc}, {time.perf_counter() - start:.1f} s")
    return rc == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", help="where to write the 1.1 GB files (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="oslsm_full_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        net = oslsm_deploy_net(1, OSLSMWidths.FULL)
        prototxt = work / "deploy_1shot.prototxt"
        write_net(net, prototxt)
        start = time.perf_counter()
        params = random_oslsm_params(OSLSMWidths.FULL, seed=0)
        caffemodel = work / "full.caffemodel"
        write_oslsm_caffemodel(caffemodel, params)
        del params
        print(f"wrote {caffemodel} ({caffemodel.stat().st_size / 1e9:.3f} GB) in {time.perf_counter() - start:.1f} s")
        for form in ("oslsm", "graph"):
            out = work / f"full_{form}.safetensors"
            wall, peak = run_convert(prototxt, caffemodel, out, form)
            print(f"convert --model {form}: {wall:.1f} s, {out.stat().st_size / 1e9:.3f} GB, peak RSS {peak}")
        gen = torch.Generator().manual_seed(0)
        first_img = torch.randn(1, 3, 224, 224, generator=gen) * 50
        first_label = (torch.rand(1, 1, 224, 224, generator=gen) > 0.5).float()
        second_img = torch.randn(1, 3, 160, 200, generator=gen) * 50
        outputs = {}
        for name, path, proto in (("caffemodel", caffemodel, prototxt), ("oslsm", work / "full_oslsm.safetensors", None),
                                  ("graph", work / "full_graph.safetensors", None)):
            start = time.perf_counter()
            model = load_oslsm(path, proto)
            loaded = time.perf_counter() - start
            with torch.no_grad():
                start = time.perf_counter()
                outputs[name] = model(first_img, first_label, second_img)
            print(f"{name}: load {loaded:.1f} s, forward (query 160x200) {time.perf_counter() - start:.1f} s, "
                  f"hashing {model.hashing.describe()['rw1s']['form']}")
            del model
        same = all(torch.equal(outputs["caffemodel"], v) for v in outputs.values())
        print(f"outputs identical across weight forms: {same}; score range "
              f"[{float(outputs['oslsm'].min()):.3g}, {float(outputs['oslsm'].max()):.3g}]")
        agree = check_graph_against_module(work, prototxt, caffemodel, first_img, first_label, second_img)
        return 0 if same and agree else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

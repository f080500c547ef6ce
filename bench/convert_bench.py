"""Convert benchmark on a full-size OSLSM caffemodel (~1.1 GB of random float32 values).

Writes the model with our streaming writer, then measures, each in its own
subprocess so that peak RSS belongs to one method only:
  (a) read_caffemodel            our mmap scanner, full decode into arrays
  (b) naive protobuf             NetParameter.ParseFromString(whole file) + np.array(blob.data)
  (c) caffemodel_to_safetensors  our streaming conversion (read + write safetensors)
A last subprocess checks that (a), (b) and the file written by (c) hold identical values.
Prints a table and replaces the "## Convert" section of bench/RESULTS.md.

Run on demand (not a unit test):  .venv/bin/python bench/convert_bench.py [--dir DIR] [--keep]
Needs ~2.3 GB free in DIR and a few GB of RAM. The file is read from a warm page cache.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEPLOY = ROOT / "tests" / "upstream" / "deploy_1shot.prototxt"
RESULTS = ROOT / "bench" / "RESULTS.md"
TARGET_SPEEDUP, TARGET_MEMORY = 2.0, 4.0


def vgg16(suffix: str) -> list[tuple[str, tuple[int, ...]]]:
    widths = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
              (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    names = ["1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "4_1", "4_2", "4_3", "5_1", "5_2", "5_3"]
    return [(f"conv{n}{suffix}", (out, inp, 3, 3)) for n, (out, inp) in zip(names, widths)]


# Weight shape of every parameterised layer of deploy_1shot.prototxt (a 224x224 support image
# gives pool5f 512x7x7 = 25088 inputs to fc6f); each has a bias of shape[0] unless listed in NO_BIAS.
WEIGHT_SHAPES = dict(vgg16("f") + vgg16("s") + [
    ("fc6s", (4096, 512, 7, 7)), ("fc6f", (4096, 25088)), ("fc7f", (4096, 4096)), ("fc7s", (4096, 4096, 1, 1)),
    ("fc8f", (1000, 4096)), ("rw1s", (4096, 1000)), ("rb1s", (1, 1000)), ("uppred_offset", (1, 1, 64, 64)),
])
NO_BIAS = {"uppred_offset"}


def oslsm_layers() -> list[tuple[str, str, list[tuple[int, ...]]]]:
    """(name, type, blob shapes) in net order, the table checked against the deploy prototxt."""
    from weights_convert.formats.prototxt import load_net

    layers = []
    for layer in load_net(DEPLOY).layer:
        if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
            continue
        shape = WEIGHT_SHAPES[layer.name]
        if layer.type == "InnerProduct":
            num_output, bias, kernel = layer.inner_product_param.num_output, layer.inner_product_param.bias_term, ()
            outputs = shape[0]
        else:
            p = layer.convolution_param
            num_output, bias, kernel = p.num_output, p.bias_term, tuple(p.kernel_size) * 2
            outputs = shape[1] * max(p.group, 1) if layer.type == "Deconvolution" else shape[0]
        assert outputs == num_output and shape[2:] == kernel[:len(shape) - 2] and bias == (layer.name not in NO_BIAS), layer.name
        layers.append((layer.name, layer.type, [shape] + ([(num_output,)] if bias else [])))
    assert sorted(name for name, _, _ in layers) == sorted(WEIGHT_SHAPES)
    return layers


# ---------------------------------------------------------------- children (one method each)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"{field}:\s+(\d+)", fh.read()).group(1)) / 1024


def peak_rss_mb() -> float:
    """VmHWM, the high-water RSS of this process's own address space. Not ru_maxrss: Linux
    carries the parent's high-water mark over fork/exec into a child's ru_maxrss."""
    return _status_mb("VmHWM")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def digest(named_arrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key, array in named_arrays:
        h.update(key.encode() + str(array.shape).encode() + array.tobytes())
    return h.hexdigest()


def child(method: str, src: str, dst: str) -> dict:
    import numpy as np  # noqa: F401  (imports are part of the baseline, not the measurement)
    from weights_convert.formats.caffemodel import read_caffemodel
    from weights_convert.formats.safetensors_io import caffemodel_to_safetensors, read_safetensors
    from weights_convert.formats.schema import pb

    baseline = current_rss_mb()
    start = time.perf_counter()
    result = None
    if method == "read":
        params = read_caffemodel(src)
        result = [(f"{n}/{i}", a) for n, blobs in params.items() for i, a in enumerate(blobs)]
    elif method == "naive":
        net = pb.NetParameter()
        net.ParseFromString(open(src, "rb").read())
        arrays = []
        for layer in net.layer:
            for i, blob in enumerate(layer.blobs):
                arrays.append((f"{layer.name}/{i}", np.array(blob.data, dtype=np.float32).reshape(tuple(blob.shape.dim))))
        result = arrays
    elif method == "convert":
        caffemodel_to_safetensors(src, dst)
    elif method == "write":
        seconds, count, size = write_model(Path(src))
        return {"method": method, "seconds": seconds, "count": count, "size": size, "digest": None}
    elif method == "verify":
        tensors, _ = read_safetensors(dst)
        result = list(tensors.items())
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    return {"method": method, "seconds": seconds, "peak_rss_mb": peak, "baseline_rss_mb": baseline,
            "digest": digest(result) if result is not None else None}


def run_child(method: str, src: Path, dst: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", method, "--src", str(src), "--dst", str(dst)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- parent


def write_model(path: Path) -> tuple[float, int, int]:
    import numpy as np
    from weights_convert.formats.caffemodel import write_caffemodel

    rng = np.random.default_rng(20171)
    layers = oslsm_layers()
    params = {name: [rng.standard_normal(shape, dtype=np.float32) for shape in shapes] for name, _, shapes in layers}
    count = sum(a.size for blobs in params.values() for a in blobs)
    start = time.perf_counter()
    write_caffemodel(path, params, {name: t for name, t, _ in layers}, net_name="OSLSM 1-shot (random weights)")
    seconds = time.perf_counter() - start
    return seconds, count, path.stat().st_size


def machine() -> dict:
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()
    except (OSError, AttributeError):
        model = platform.processor() or "unknown"
    with open("/proc/meminfo") as fh:
        ram_gib = int(re.search(r"MemTotal:\s+(\d+)", fh.read()).group(1)) / 2**20
    return {"cpu": model, "cores": os.cpu_count(), "ram_gib": ram_gib, "python": platform.python_version(),
            "torch": version("torch"), "numpy": version("numpy"), "protobuf": version("protobuf"),
            "os": platform.platform()}


def report(m: dict, write: tuple[float, int, int], rows: list[dict]) -> str:
    write_s, count, size = write
    by = {r["method"]: r for r in rows}
    speedup = by["naive"]["seconds"] / by["convert"]["seconds"]
    memory = by["naive"]["peak_rss_mb"] / by["convert"]["peak_rss_mb"]
    labels = {"read": "(a) our `read_caffemodel` (full decode to arrays)",
              "naive": "(b) naive `ParseFromString` + `np.array(blob.data)`",
              "convert": "(c) our `caffemodel_to_safetensors` (read + write)"}
    lines = [
        "## Convert",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/convert_bench.py` on: "
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']:.1f} GiB RAM; Python {m['python']}, torch {m['torch']}, "
        f"numpy {m['numpy']}, protobuf {m['protobuf']} ({m['os']}).",
        "",
        f"Model: every parameterised layer of `deploy_1shot.prototxt` with its real shape "
        f"(fc6f 4096x25088, fc6s 4096x512x7x7, ...), random float32 values: {count:,} values, "
        f"{size / 1e9:.3f} GB. Written by our streaming `write_caffemodel` in {write_s:.2f} s "
        f"(including fsync). Each method runs in its own process on a warm page cache; peak RSS is the "
        f"process's VmHWM (interpreter and imports included, their share shown as baseline).",
        "",
        "| method | seconds | peak RSS (MB) | baseline RSS (MB) |",
        "|---|---:|---:|---:|",
    ]
    for key in ("read", "naive", "convert"):
        r = by[key]
        lines.append(f"| {labels[key]} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} |")
    ok = speedup >= TARGET_SPEEDUP and memory >= TARGET_MEMORY
    lines += [
        "",
        f"(c) vs (b): {speedup:.1f}x faster, {memory:.1f}x less peak memory "
        f"(target: at least {TARGET_SPEEDUP:g}x and {TARGET_MEMORY:g}x: {'met' if ok else 'NOT met'}). "
        f"Values of (a), (b) and the safetensors file of (c) are identical (same digest).",
        "",
    ]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """Replace the '## Convert' section (up to the next '## ' heading) or append it."""
    pattern = re.compile(r"^## Convert\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    if not text.strip():
        text = "# Benchmarks\n"
    return text.rstrip("\n") + "\n\n" + section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where to write the ~2.3 GB of files (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--no-record", action="store_true", help=f"do not update {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--child", choices=["write", "read", "naive", "convert", "verify"], help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.src, args.dst)))
        return 0

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="convert_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    src, dst = work / "oslsm_1shot_random.caffemodel", work / "oslsm_1shot_random.safetensors"
    try:
        print(f"writing {src} ...", flush=True)
        written = run_child("write", src, dst)  # in a child, so this process never holds the model
        write = (written["seconds"], written["count"], written["size"])
        print(f"  {write[2] / 1e9:.3f} GB in {write[0]:.2f} s", flush=True)
        rows = []
        for method in ("read", "naive", "convert"):
            print(f"running {method} ...", flush=True)
            rows.append(run_child(method, src, dst))
            print(f"  {rows[-1]['seconds']:.2f} s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
        verify = run_child("verify", src, dst)
        digests = {r["method"]: r["digest"] for r in rows + [verify] if r["digest"]}
        if len(set(digests.values())) != 1:
            print(f"MISMATCH between methods: {digests}", file=sys.stderr)
            return 1
        section = report(machine(), write, rows)
        print()
        print(section)
        if not args.no_record:
            from weights_convert.files.atomic import atomic_write_text

            old = RESULTS.read_text() if RESULTS.exists() else ""
            atomic_write_text(RESULTS, replace_section(old, section))
            print(f"recorded in {RESULTS}")
    finally:
        if args.keep:
            print(f"kept {work}")
        elif args.dir:
            for path in (src, dst):
                path.unlink(missing_ok=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

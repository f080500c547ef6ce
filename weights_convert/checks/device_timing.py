"""Timings of the full-size work on one device, with the inputs already there and the device
synchronised around each measurement: a float32 convolution's throughput (the yardstick), the
OSLSM query forward, and one forward/backward of the full-size net."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from weights_convert.runtime.devices import explained_out_of_memory

CONV_FLOPS = 2 * 256 * 256 * 9 * 128 * 128  # x (1,256,128,128) * w (256,256,3,3), pad 1


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median wall time of `run` after one warm-up call (kernel selection, allocator)."""
    run()
    synchronize(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_throughput(device: torch.device, reps: int = 5) -> dict:
    """float32 FLOP/s of one VGG conv3-like convolution, the better of the two layouts."""
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(1, 256, 128, 128, device=device).contiguous(memory_format=layout)
        w = torch.randn(256, 256, 3, 3, device=device).contiguous(memory_format=layout)
        with torch.inference_mode():
            best = min(best, median_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, reps))
    return {"shape": "x (1,256,128,128) * w (256,256,3,3), pad 1, best layout", "flops": CONV_FLOPS,
            "seconds": best, "flops_per_s": CONV_FLOPS / best}


def query_forward(device: torch.device, hw: tuple[int, int] = (500, 500), reps: int = 3) -> dict:
    """The full-width OSLSM module's query forward (as the evaluation runs it), random weights."""
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.model import OSLSM

    with explained_out_of_memory(f"full-size query forward ({hw[0]}x{hw[1]})"):
        model = OSLSM(OSLSMWidths.FULL).to(device=device, memory_format=torch.channels_last).eval()
        x = torch.randn(1, 3, *hw, device=device) * 50
        with torch.inference_mode():
            seconds = median_seconds(lambda: model.query_features(x, head_cells_only=True), device, reps)
    return {"query_hw": list(hw), "seconds": seconds}


def train_pass(device: torch.device, hw: tuple[int, int] = (375, 500), reps: int = 2) -> dict:
    """One forward/backward of the full-width 1-shot OSLSM net with its loss, through the graph
    interpreter as training runs it (random weights)."""
    from weights_convert.graph import CaffeNet
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.spec import oslsm_deploy_net
    from weights_convert.train.passes import forward_backward

    generator = torch.Generator().manual_seed(0)
    batch = {"first_img": torch.randn(1, 3, 224, 224, generator=generator) * 50,
             "first_label": (torch.rand(1, 1, 224, 224, generator=generator) > 0.5).float(),
             "second_img": torch.randn(1, 3, *hw, generator=generator) * 50,
             "second_label": (torch.rand(1, 1, *hw, generator=generator) > 0.5).float()}
    with explained_out_of_memory(f"full-size training pass ({hw[0]}x{hw[1]} query)"):
        net = CaffeNet(oslsm_deploy_net(1, OSLSMWidths.FULL, hw), phase="TRAIN", device=device)
        for blob in net.parameters():
            torch.nn.init.normal_(blob, std=0.01)
        batch = {k: v.to(device) for k, v in batch.items()}
        seconds = median_seconds(lambda: forward_backward(net, batch), device, reps)
    return {"query_hw": list(hw), "seconds": seconds}

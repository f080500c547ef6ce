"""Data-parallel training over torch.distributed, as `torchrun` launches it: the iter_size passes
of an iteration are shared out among the ranks (pass k to rank k mod N), their summed gradients
all-reduced, and Caffe's update then applied identically on every rank. Batches and dropout
masks belong to the pass, not to the rank, so a run follows the same trajectory for any N but
for the order of float sums. Rank 0 alone writes. NCCL on CUDA, gloo on the CPU."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Sequence

import numpy as np
import torch

from weights_convert.errors import CaffeFormatError


@dataclasses.dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where the collectives' tensors live

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def passes(self, iter_size: int) -> list[int]:
        """This rank's passes of an iteration (uneven shares when N does not divide iter_size)."""
        return [k for k in range(iter_size) if k % self.world == self.rank]


SINGLE = Ranks()


def lead_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process: the one that speaks for the job and writes."""
    return os.environ.get("RANK", "0") == "0"


def join(device: str) -> tuple[Ranks, str]:
    """(this process's ranks, its device) from torchrun's environment; a plain process is SINGLE.
    On CUDA each rank takes cuda:LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if device.startswith("cuda"):
        if device not in ("cuda", "cuda:0"):
            raise CaffeFormatError(f"--device {device} under torchrun: give --device cuda (rank r takes "
                                   "cuda:LOCAL_RANK)")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=dt.timedelta(minutes=30))
    return Ranks(rank, world, torch.device(device)), device


def leave(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _collective(ranks: Ranks, what: str, op) -> object:
    """Run a collective; a rank that died or left turns into one clear error."""
    try:
        return op()
    except (RuntimeError, ConnectionError) as exc:
        raise CaffeFormatError(f"rank {ranks.rank} of {ranks.world}: another rank stopped during {what} "
                               f"({str(exc).splitlines()[0][:200]}); run the same torchrun command again to "
                               "resume from the last snapshot") from None


def sum_gradients(ranks: Ranks, grads: Sequence[torch.Tensor]) -> None:
    """Each tensor becomes the sum over the ranks of its value (in place)."""
    if ranks.world == 1:
        return
    import torch.distributed as dist

    for grad in grads:
        _collective(ranks, "the gradient sum", lambda g=grad: dist.all_reduce(g))


def gather_pass_losses(ranks: Ranks, losses: Sequence[np.float32]) -> list[np.float32]:
    """Every pass's loss on every rank (each pass's value came from one rank, the others hold 0:
    x + 0 is exact), so the iteration's loss is summed in pass order as in one process."""
    if ranks.world == 1:
        return list(losses)
    import torch.distributed as dist

    values = torch.tensor(np.asarray(losses, dtype=np.float32), device=ranks.device)
    _collective(ranks, "the loss exchange", lambda: dist.all_reduce(values))
    return [np.float32(v) for v in values.cpu().numpy()]


def any_rank(ranks: Ranks, flag: bool) -> bool:
    """True on every rank when it is true on one (a stop request reaches the ranks at different times)."""
    if ranks.world == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=ranks.device)
    _collective(ranks, "the stop check", lambda: dist.all_reduce(value, op=dist.ReduceOp.MAX))
    return bool(value.item())


def from_lead(ranks: Ranks, value):
    """Rank 0's `value` on every rank (a JSON-able object)."""
    if ranks.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    _collective(ranks, "the start", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]

"""The common frame of every Caffe layer: names, bottoms/tops, learnable blobs, axis helpers."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb

Shape = tuple[int, ...]


class CaffeLayer(nn.Module):
    """One Caffe layer. `param_shapes` says which learnable blobs it needs (known once its
    bottoms' shapes are known, as in Caffe's LayerSetUp); `forward` maps bottoms to tops.

    The blobs themselves are attached by the net (`attach_blobs`) because Caffe shares them
    between layers by `param { name }`."""

    # How many bottoms/tops the layer takes: (min, max); None = unbounded.
    bottoms_range: tuple[int, int | None] = (1, 1)
    tops_range: tuple[int, int | None] = (1, 1)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__()
        self.name = lp.name
        self.type = lp.type
        self.bottoms = list(lp.bottom)
        self.tops = list(lp.top)
        self.phase = "TRAIN" if lp.phase == pb.TRAIN else "TEST"
        self.blobs = nn.ParameterList()
        self.blob_shapes: list[Shape] = []
        self.shapes_only = False  # set while the net sets up on meta tensors
        # Blobs this layer's own `param` specs give lr_mult 0: Caffe computes no gradient for
        # them here (param_propagate_down), even where another layer shares and trains them.
        self.frozen = {i for i, spec in enumerate(lp.param) if spec.HasField("lr_mult") and spec.lr_mult == 0}
        self._check_arity("bottom", len(self.bottoms), self.bottoms_range)
        self._check_arity("top", len(self.tops), self.tops_range)
        if len(lp.propagate_down) not in (0, len(self.bottoms)):
            raise self.fail(f"propagate_down has {len(lp.propagate_down)} values; expected none or one per "
                            f"bottom ({len(self.bottoms)})")
        # Bottoms the gradient must not reach (`propagate_down: false`); the net detaches them.
        self.propagate_down = [bool(v) for v in lp.propagate_down] or [True] * len(self.bottoms)

    # ------------------------------------------------------------------ overridable
    def setup(self, bottoms: Sequence[torch.Tensor]) -> None:
        """Caffe's LayerSetUp: what the layer fixes from its first bottoms' shapes (may be meta tensors)."""

    def param_shapes(self, bottoms: Sequence[torch.Tensor]) -> list[Shape]:
        """Shapes of the learnable blobs, given the bottoms (may be meta tensors); after setup()."""
        return []

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def forward_framed(self, bottoms: list[torch.Tensor], frames: list) -> tuple[list[torch.Tensor], list]:
        """`forward`, given each bottom's Frame (layers/frame.py: where it may differ from one value
        per channel; None: anywhere), returning the tops' frames too. By default a top has none."""
        return self(bottoms), [None] * len(self.tops)

    # ------------------------------------------------------------------ helpers
    def attach_blobs(self, blobs: Sequence[nn.Parameter], shapes: Sequence[Shape]) -> None:
        self.blobs = nn.ParameterList(blobs)
        self.blob_shapes = [tuple(s) for s in shapes]

    def blob(self, index: int) -> torch.Tensor:
        """Learnable blob `index` in this layer's own shape (a shared PERMISSIVE blob may differ)."""
        shape = self.blob_shapes[index]
        if self.shapes_only:
            return torch.empty(shape, dtype=torch.float32, device="meta")
        p = self.blobs[index]
        if index in self.frozen:
            p = p.detach()
        return p if tuple(p.shape) == shape else p.view(shape)

    def fail(self, message: str) -> CaffeFormatError:
        return CaffeFormatError(f"layer '{self.name}' (type {self.type}): {message}")

    def canonical_axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's CanonicalAxisIndex: negative counts from the end; out of range is an error."""
        if not -ndim <= axis < ndim:
            raise self.fail(f"{what} {axis} out of range for a blob with {ndim} axes")
        return axis + ndim if axis < 0 else axis

    def axis_or_legacy(self, param, legacy_field: str) -> int:
        """`axis`, or the older `concat_dim` / `slice_dim` field that means the same; not both."""
        if param.HasField("axis") and param.HasField(legacy_field):
            raise self.fail(f"give either axis or {legacy_field}, not both")
        return int(getattr(param, legacy_field)) if param.HasField(legacy_field) else int(param.axis)

    def _check_arity(self, what: str, n: int, bounds: tuple[int, int | None]) -> None:
        lo, hi = bounds
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
            raise self.fail(f"has {n} {what}(s); expected {want}")


def traced(*sizes) -> bool:
    """Sizes that are symbols (torch.export with dynamic height and width), not numbers: checks
    that compare them are left to the numbers a run gives, since comparing would fix them."""
    return any(isinstance(s, torch.SymInt) for s in sizes)


def count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    """Caffe's Blob::count(start, end): the product of the dims in [start, end)."""
    return math.prod(int(d) for d in list(shape)[start:end])

"""Layers that only move data: Reshape, ReshapeLike (fork), Flatten, Tile, Crop, Concat, Slice,
Split, Silence."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, count, traced


class Reshape(CaffeLayer):
    """reshape_param.shape replaces axes [axis, axis + num_axes) of bottom[0]; a 0 copies the
    corresponding dim, one -1 is inferred from the count."""

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.reshape_param
        self.dims = [int(d) for d in p.shape.dim]
        self.axis_param, self.num_axes = int(p.axis), int(p.num_axes)
        if self.dims.count(-1) > 1:
            raise self.fail("at most one dim may be -1")
        if any(d < -1 for d in self.dims):
            raise self.fail(f"dims {self.dims}: each must be >= -1")
        if self.num_axes < -1:
            raise self.fail(f"num_axes {self.num_axes} must be >= -1")

    def _range(self, ndim: int) -> tuple[int, int]:
        # Caffe: a negative axis counts from ndim + 1 (so -1 means "after the last axis")
        axis = self.axis_param if self.axis_param >= 0 else self.axis_param + ndim + 1
        if not 0 <= axis <= ndim:
            raise self.fail(f"axis {self.axis_param} out of range for a blob with {ndim} axes")
        end = ndim if self.num_axes == -1 else axis + self.num_axes
        if end > ndim:
            raise self.fail(f"axis {axis} + num_axes {self.num_axes} exceeds the bottom's {ndim} axes")
        return axis, end

    def _target(self, x: torch.Tensor, copy_from: torch.Tensor) -> list[int]:
        start, end = self._range(x.dim())
        mid = []
        for i, d in enumerate(self.dims):
            if d == 0:
                src = start + i
                if src >= copy_from.dim():
                    raise self.fail(f"dim {i} is 0 (copy) but the source blob {tuple(copy_from.shape)} "
                                    f"has no axis {src}")
                d = int(copy_from.shape[src])
            mid.append(d)
        shape = [int(v) for v in x.shape[:start]] + mid + [int(v) for v in x.shape[end:]]
        if -1 in shape:
            known = count(d for d in shape if d != -1)
            if known == 0 or x.numel() % known:
                raise self.fail(f"cannot infer the -1 dim: {x.numel()} values of {tuple(x.shape)} "
                                f"do not divide into {shape}")
            shape[shape.index(-1)] = x.numel() // known
        if count(shape) != x.numel():
            raise self.fail(f"cannot reshape {tuple(x.shape)} ({x.numel()} values) to {tuple(shape)}")
        return shape

    def forward(self, bottoms):
        x = bottoms[0]
        return [x.reshape(self._target(x, x))]


class ReshapeLike(Reshape):
    """The OSLSM fork's Reshape: a 0 dim is copied from the SECOND bottom (the reference);
    -1 is still inferred from the first bottom's count."""
    bottoms_range = (2, 2)

    def forward(self, bottoms):
        x, ref = bottoms
        return [x.reshape(self._target(x, ref))]


class Flatten(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.axis_param, self.end_param = int(lp.flatten_param.axis), int(lp.flatten_param.end_axis)

    def forward(self, bottoms):
        x = bottoms[0]
        start = self.canonical_axis(self.axis_param, x.dim())
        end = self.canonical_axis(self.end_param, x.dim(), "end_axis")
        if end < start:
            raise self.fail(f"end_axis {end} is before axis {start}")
        return [x.flatten(start, end)]


class Tile(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.tile_param
        if not p.HasField("tiles") or p.tiles < 1:
            raise self.fail("tile_param.tiles must be given and >= 1")
        self.axis_param, self.tiles = int(p.axis), int(p.tiles)

    def forward(self, bottoms):
        x = bottoms[0]
        axis = self.canonical_axis(self.axis_param, x.dim())
        reps = [1] * x.dim()
        reps[axis] = self.tiles
        return [x.repeat(reps)]


class Crop(CaffeLayer):
    """Crop bottom[0] to bottom[1]'s size on every axis from `axis`; one offset for all or one each."""
    bottoms_range = (2, 2)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.axis_param = int(lp.crop_param.axis)
        self.offsets = [int(o) for o in lp.crop_param.offset]

    def forward(self, bottoms):
        x, ref = bottoms
        if x.dim() != ref.dim():
            raise self.fail(f"bottoms {tuple(x.shape)} and {tuple(ref.shape)} differ in their number of axes")
        axis = self.canonical_axis(self.axis_param, x.dim())
        n = x.dim() - axis
        if len(self.offsets) not in (0, 1, n):
            raise self.fail(f"{len(self.offsets)} offsets given; expected 0, 1 or {n} (one per cropped axis)")
        for i in range(axis, x.dim()):
            off = 0 if not self.offsets else self.offsets[0] if len(self.offsets) == 1 else self.offsets[i - axis]
            size = ref.shape[i]
            if not traced(size, x.shape[i]) and off + size > x.shape[i]:
                raise self.fail(f"axis {i}: offset {off} + size {size} exceeds the bottom's {x.shape[i]}")
            x = x.narrow(i, off, size)  # a checked view, not a slice: traced sizes are not compared
        return [x]


class Concat(CaffeLayer):
    bottoms_range = (1, None)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.axis_param = self.axis_or_legacy(lp.concat_param, "concat_dim")

    def forward(self, bottoms):
        axis = self.canonical_axis(self.axis_param, bottoms[0].dim())
        for b in bottoms[1:]:
            if b.dim() != bottoms[0].dim() or any(
                    b.shape[i] != bottoms[0].shape[i] for i in range(b.dim()) if i != axis):
                raise self.fail(f"bottom shapes {[tuple(t.shape) for t in bottoms]} differ outside axis {axis}")
        return [bottoms[0] if len(bottoms) == 1 else torch.cat(bottoms, dim=axis)]


class Slice(CaffeLayer):
    tops_range = (1, None)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.axis_param = self.axis_or_legacy(lp.slice_param, "slice_dim")
        self.points = [int(v) for v in lp.slice_param.slice_point]
        if self.points and len(self.points) != len(self.tops) - 1:
            raise self.fail(f"{len(self.points)} slice points for {len(self.tops)} tops; expected {len(self.tops) - 1}")

    def forward(self, bottoms):
        x = bottoms[0]
        axis = self.canonical_axis(self.axis_param, x.dim())
        size = int(x.shape[axis])
        if self.points:
            bounds = [0] + self.points + [size]
            # Caffe: each point above the previous one (no empty slice); the last top gets the rest.
            if any(b <= a for a, b in zip(bounds[:-2], bounds[1:-1])) or bounds[-2] > size:
                raise self.fail(f"slice points {self.points} must increase strictly from above 0 and stay "
                                f"within axis size {size}")
        else:
            if size % len(self.tops):
                raise self.fail(f"axis {axis} of size {size} does not split evenly into {len(self.tops)} tops")
            step = size // len(self.tops)
            bounds = [i * step for i in range(len(self.tops) + 1)]
        return [x.narrow(axis, a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


class Split(CaffeLayer):
    """Copies of the bottom; never written in place here, so the same tensor serves every top."""
    tops_range = (1, None)

    def forward(self, bottoms):
        return [bottoms[0]] * len(self.tops)

    def forward_framed(self, bottoms, frames):
        return self(bottoms), frames * len(self.tops)


class Silence(CaffeLayer):
    bottoms_range = (1, None)
    tops_range = (0, 0)

    def forward(self, bottoms):
        return []

"""Input: declares the net's input blobs and their shapes; the values come from forward()."""
from __future__ import annotations

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, Shape


class Input(CaffeLayer):
    bottoms_range = (0, 0)
    tops_range = (1, None)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        shapes = [tuple(int(d) for d in s.dim) for s in lp.input_param.shape]
        if len(shapes) not in (1, len(self.tops)):
            raise self.fail(f"{len(shapes)} shapes for {len(self.tops)} tops; expected 1 or {len(self.tops)}")
        if any(d < 0 for s in shapes for d in s):
            raise self.fail(f"input shapes {shapes} have negative dims")
        self.shapes: list[Shape] = shapes * len(self.tops) if len(shapes) == 1 else shapes

    def forward(self, bottoms):  # the net feeds Input tops directly
        raise self.fail("Input layers are fed by the net, not run")


# Data layers whose reading Caffe does in C++ or Python code outside the net description; a net
# built for training takes their tops' values from the caller instead (CaffeNet data_shapes).
DATA_LAYER_TYPES = ("Python", "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData")


class FedData(Input):
    """A data layer (Python, Data, ...) whose tops the caller feeds by name, batch by batch,
    like an Input. `shapes` are those of the first batch, which sets the net up (Caffe's data
    layers do the same); later batches may differ where the net allows it."""

    def __init__(self, lp: pb.LayerParameter, shapes: list[Shape]):
        CaffeLayer.__init__(self, lp)
        self.shapes = [tuple(int(d) for d in s) for s in shapes]

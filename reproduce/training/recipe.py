"""The authors' training recipe as shipped in reproduce/recipes: the train net and solver files,
and the train net's learnable blobs (shapes and types) for a given prototxt."""
from __future__ import annotations

from pathlib import Path


RECIPES = Path(__file__).parent / "recipes"
TRAIN_PROTOTXT = RECIPES / "train_ss_os_fc.prototxt"
SOLVER_PROTOTXT = RECIPES / "solver_ss_os_fc.prototxt"
# The iteration of the authors' released models (upstream issue lzzcd001/OSLSM #9 names
# snapshots/fold2/ss_os_fc_iter_60000.caffemodel; github dongzhuoyao/OSLSM's README the fold-0 one):
# `train` stops there with the authors' solver, not at its max_iter of 1,000,000.
RELEASED_ITERATION = 60_000


def default_iterations(iters: int | None, solver: str | Path | None = None) -> int | None:
    """Where a training stops: --iters when given; with the authors' solver (the default) their
    released iteration; with another solver None, its own max_iter."""
    if iters is not None:
        return iters
    return RELEASED_ITERATION if solver is None or Path(solver).resolve() == SOLVER_PROTOTXT.resolve() else None


# Shapes the data layer's tops take while the net is set up (any query size works later).
SETUP_SHAPES = {"first_img": (1, 3, 224, 224), "first_label": (1, 1, 224, 224),
                "second_img": (1, 3, 500, 500), "second_label": (1, 1, 500, 500)}


def train_net_blobs(prototxt: str | Path = TRAIN_PROTOTXT) -> tuple[dict[str, list[tuple[int, ...]]], dict[str, str]]:
    """(layer -> blob shapes, layer -> type) of the train net's learnable layers; no weights allocated."""
    from weights_convert.formats.prototxt import load_net  # here: the commands' parser reads the paths above
    from weights_convert.graph import CaffeNet

    net = CaffeNet(load_net(prototxt), phase="TRAIN", source=str(prototxt), device="meta",
                   data_shapes={k: v for k, v in SETUP_SHAPES.items()})
    layers = net.param_layers()
    return {layer.name: list(layer.blob_shapes) for layer in layers}, {layer.name: layer.type for layer in layers}

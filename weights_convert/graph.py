"""CaffeNet: a Caffe net run layer by layer, every blob kept by name (pycaffe's `net.blobs`).

Built the way Caffe's Net::Init builds a net: layers filtered by NetStateRules, wired by blob
name (in-place tops allowed), set up in file order so each layer's learnable blob shapes follow
from its bottoms' shapes, and `param { name }` blobs shared between layers."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.blob_shape import shapes_match
from weights_convert.formats.prototxt import load_net
from weights_convert.formats.schema import pb
from weights_convert.layers import CaffeLayer, build_layer
from weights_convert.layers.frame import Frame
from weights_convert.layers.input import DATA_LAYER_TYPES, FedData, Input

_PHASES = {"TRAIN": pb.TRAIN, "TEST": pb.TEST}


# ---------------------------------------------------------------------------- net state rules
def state_meets_rule(state: pb.NetState, rule: pb.NetStateRule) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(state: pb.NetState, layer: pb.LayerParameter) -> bool:
    """Caffe's Net::FilterNet for one layer: with include rules, any met one keeps it; with
    exclude rules, any met one drops it."""
    if len(layer.include) and len(layer.exclude):
        raise CaffeFormatError(f"layer '{layer.name}': give include rules or exclude rules, not both")
    if len(layer.include):
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


def insert_splits(layers: Sequence[pb.LayerParameter], source: str = "<net>") -> list[pb.LayerParameter]:
    """Caffe's InsertSplits: a blob read by more than one bottom (or by a bottom and as a weighted
    loss) gets a Split layer right after its producer, and each reader its own split top. pycaffe
    lists those split blobs too, so they are part of `forward`'s result."""
    last_top: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    readers: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    for i, lp in enumerate(layers):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise CaffeFormatError(f"{source}: layer '{lp.name}' (type {lp.type}) needs bottom '{name}' "
                                       f"(bottom index {j}), which no earlier layer produces")
            source_of[(i, j)] = last_top[name]
            readers[last_top[name]] = readers.get(last_top[name], 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            top = last_top[lp.top[j]]
            loss_weight[top] = lp.loss_weight[j]
            if loss_weight[top]:
                readers[top] = readers.get(top, 0) + 1
    out: list[pb.LayerParameter] = []
    next_split: dict[tuple[int, int], int] = {}
    for i, original in enumerate(layers):
        lp = pb.LayerParameter()
        lp.CopyFrom(original)
        out.append(lp)
        for j in range(len(lp.bottom)):
            top = source_of[(i, j)]
            if readers.get(top, 0) > 1:
                k = next_split.get(top, 0)
                next_split[top] = k + 1
                lp.bottom[j] = split_blob_name(layers[top[0]].name, lp.bottom[j], top[1], k)
        for j, name in enumerate(lp.top):
            n = readers.get((i, j), 0)
            if n <= 1:
                continue
            split = pb.LayerParameter(name=f"{name}_{lp.name}_{j}_split", type="Split", phase=lp.phase)
            split.bottom.append(name)
            split.top.extend(split_blob_name(lp.name, name, j, k) for k in range(n))
            weight = loss_weight.get((i, j), 0.0)
            if weight:
                split.loss_weight.append(weight)
                split.loss_weight.extend([0.0] * (n - 1))
                del lp.loss_weight[:]
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
            out.append(split)
    return out


def _shape(t) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


def _input_on(value, device: torch.device) -> torch.Tensor:
    """An input as float32 on the net's device; to a GPU from pinned memory, without blocking the host."""
    tensor = torch.as_tensor(value, dtype=torch.float32)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _detached(frame: Frame | None, propagate_down: bool) -> Frame | None:
    """A bottom the gradient must not reach: its frame's constant carries none either."""
    if frame is None or propagate_down or frame.value is None:
        return frame
    return dataclasses.replace(frame, value=frame.value.detach())


class Blobs(dict):
    """Every blob by name after one forward, plus `outputs`: the blobs no later layer consumes."""

    def __init__(self, values, output_names: Sequence[str]):
        super().__init__(values)
        self.output_names = list(output_names)

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        return {n: self[n] for n in self.output_names}


class CaffeNet(nn.Module):
    def __init__(self, net: pb.NetParameter, phase: str = "TEST", level: int | None = None,
                 stages: Iterable[str] | None = None, source: str | None = None,
                 device: str | torch.device | None = None,
                 data_shapes: Mapping[str, Sequence[int]] | None = None, skip_constant_frame: bool = True):
        """`device` is where the learnable blobs are created (default CPU); "meta" builds the net
        for its shapes only, without allocating the weights. `data_shapes` (top name -> shape of
        the first batch) lets the net keep its data layers (Python, Data, ...): their tops become
        inputs fed by name, as a training net needs. With `skip_constant_frame`, convolutions
        compute their constant frame once per channel (layers/frame.py; same values and gradients
        up to float rounding): OSLSM's query branch, padded by 121, is 30% frame."""
        super().__init__()
        self.skip_constant_frame = skip_constant_frame
        self._data_shapes = dict(data_shapes) if data_shapes is not None else None
        self._param_device = torch.device(device) if device is not None else torch.device("cpu")
        if phase not in _PHASES:
            raise CaffeFormatError(f"phase must be TRAIN or TEST, not {phase!r}")
        if len(net.layers):
            raise CaffeFormatError("net still holds V1 `layers`; read it with formats.prototxt.load_net "
                                   "or parse_net_text, which upgrade it")
        self.source = source or net.name or "<net>"
        self.phase = phase
        # Caffe's force_backward: every blob, the inputs included, gets its diff
        self.force_backward = bool(net.force_backward)
        self.state = pb.NetState()
        self.state.CopyFrom(net.state)
        self.state.phase = _PHASES[phase]
        if level is not None:
            self.state.level = level
        if stages is not None:
            del self.state.stage[:]
            self.state.stage.extend(stages)

        kept = []
        for lp in net.layer:
            if layer_included(self.state, lp):
                copy = pb.LayerParameter()
                copy.CopyFrom(lp)
                copy.phase = self.state.phase
                kept.append(copy)
        kept = insert_splits(kept, self.source)
        self.layers = nn.ModuleList(self._build(lp) for lp in kept)
        self._layer_params = kept
        self.layer_by_name: dict[str, CaffeLayer] = {}
        for layer in self.layers:
            if layer.name in self.layer_by_name:
                raise CaffeFormatError(f"{self.source}: two layers are named '{layer.name}'")
            self.layer_by_name[layer.name] = layer
        self.input_names = [t for layer in self.layers if isinstance(layer, Input) for t in layer.tops]
        self.output_names = self._wire()
        self.loss_weights = self._loss_weights()
        self.shared: dict[str, tuple[str, int]] = {}  # param name -> (owner layer, blob index)
        self.sharing: dict[tuple[str, int], tuple[str, int]] = {}  # (layer, index) -> owner's
        self.register_buffer("_device_probe", torch.zeros(0, device=self._param_device), persistent=False)
        self.blob_shapes = self._setup()

    @classmethod
    def from_prototxt(cls, path: str | os.PathLike, phase: str = "TEST", **kwargs) -> "CaffeNet":
        return cls(load_net(path), phase=phase, source=os.fspath(path), **kwargs)

    # ------------------------------------------------------------------ construction
    @property
    def layer_params(self) -> list[pb.LayerParameter]:
        """The LayerParameters of the layers run, in order (after filtering and InsertSplits)."""
        return list(self._layer_params)

    def _build(self, lp: pb.LayerParameter) -> CaffeLayer:
        try:
            if lp.type in DATA_LAYER_TYPES and self._data_shapes is not None:
                return self._fed_data_layer(lp)
            return build_layer(lp)
        except CaffeFormatError as exc:
            raise CaffeFormatError(f"{self.source}: {exc}") from None

    def _fed_data_layer(self, lp: pb.LayerParameter) -> FedData:
        missing = [t for t in lp.top if t not in self._data_shapes]
        if missing:
            raise CaffeFormatError(f"data layer '{lp.name}' (type {lp.type}) has tops {list(lp.top)}; the data "
                                   f"give no values for {', '.join(missing)} (they give "
                                   f"{', '.join(sorted(self._data_shapes)) or 'nothing'})")
        return FedData(lp, [self._data_shapes[t] for t in lp.top])

    def _loss_weights(self) -> dict[str, float]:
        """Top name -> its weight in the objective, as Caffe's Layer::SetLossWeights: the given
        `loss_weight`s (one per top), else 1 for the first top of a loss layer."""
        weights: dict[str, float] = {}
        for layer, lp in zip(self.layers, self._layer_params):
            given = list(lp.loss_weight)
            if given and len(given) != len(lp.top):
                raise CaffeFormatError(f"{self.source}: layer '{lp.name}' gives {len(given)} loss_weight(s) for "
                                       f"{len(lp.top)} top(s); expected none or one per top")
            if not given and lp.type.endswith("Loss"):
                given = [1.0] + [0.0] * (len(lp.top) - 1)
            for top, weight in zip(lp.top, given):
                if weight:
                    weights[top] = float(weight)
        return weights

    def objective(self, blobs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss Caffe's ForwardBackward minimises: the sum over weighted tops of weight x sum."""
        if not self.loss_weights:
            raise CaffeFormatError(f"{self.source}: the {self.phase} net has no loss (no *Loss layer and no "
                                   "loss_weight), so there is nothing to train")
        total = None
        for name, weight in self.loss_weights.items():
            term = blobs[name].sum() * weight
            total = term if total is None else total + term
        return total

    def _wire(self) -> list[str]:
        """Check every bottom exists and no top is produced twice (Caffe's AppendBottom/AppendTop);
        returns the net outputs (blobs left unconsumed)."""
        available: dict[str, None] = {}
        produced: set[str] = set()
        for layer in self.layers:
            for name in layer.bottoms:
                if name not in produced:
                    raise CaffeFormatError(f"{self.source}: layer '{layer.name}' (type {layer.type}) needs bottom "
                                           f"'{name}', which no earlier layer produces")
                available.pop(name, None)
            for i, name in enumerate(layer.tops):
                in_place = i < len(layer.bottoms) and layer.bottoms[i] == name
                if name in produced and not in_place:
                    raise CaffeFormatError(f"{self.source}: top '{name}' of layer '{layer.name}' is produced by "
                                           "more than one layer (only in-place reuse is allowed)")
                produced.add(name)
                available[name] = None
        return list(available)

    def _setup(self) -> dict[str, tuple[int, ...]]:
        """Walk the net once on meta tensors (shapes only): create or share each layer's blobs."""
        metas: dict[str, torch.Tensor] = {}
        for layer, lp in zip(self.layers, self._layer_params):
            if isinstance(layer, Input):
                for top, shape in zip(layer.tops, layer.shapes):
                    metas[top] = torch.empty(shape, dtype=torch.float32, device="meta")
                continue
            bottoms = [metas[b] for b in layer.bottoms]
            try:
                tops = self._setup_layer(layer, lp, bottoms)
            except CaffeFormatError as exc:
                raise CaffeFormatError(f"{self.source}: {exc}") from None
            except (RuntimeError, ValueError, IndexError) as exc:
                raise CaffeFormatError(f"{self.source}: layer '{layer.name}' (type {layer.type}) cannot run on "
                                       f"bottoms {[_shape(b) for b in bottoms]}: {exc}") from None
            metas.update(zip(layer.tops, tops))
        return {name: _shape(t) for name, t in metas.items()}

    def _setup_layer(self, layer: CaffeLayer, lp: pb.LayerParameter, bottoms: list[torch.Tensor]):
        """Caffe's LayerSetUp + Reshape for one layer: its blobs, then its tops' shapes."""
        layer.setup(bottoms)
        shapes = [tuple(int(d) for d in s) for s in layer.param_shapes(bottoms)]
        if len(lp.param) > len(shapes):
            raise layer.fail(f"declares {len(lp.param)} param specs but has {len(shapes)} learnable blob(s)")
        layer.attach_blobs([self._blob_for(layer, lp, i, s) for i, s in enumerate(shapes)], shapes)
        layer.shapes_only = True
        try:
            return layer(bottoms)
        finally:
            layer.shapes_only = False

    def _blob_for(self, layer: CaffeLayer, lp: pb.LayerParameter, index: int, shape) -> nn.Parameter:
        spec = lp.param[index] if index < len(lp.param) else None
        if spec is None or not spec.name:
            return self._new_blob(shape)
        owner = self.shared.get(spec.name)
        if owner is None:
            self.shared[spec.name] = (layer.name, index)
            return self._new_blob(shape)
        owner_layer = self.layer_by_name[owner[0]]
        owned = owner_layer.blobs[owner[1]]
        if spec.share_mode == pb.ParamSpec.PERMISSIVE:
            ok = owned.numel() == int(np.prod(shape))
        else:
            ok = _shape(owned) == tuple(shape)
        if not ok:
            mode = "count" if spec.share_mode == pb.ParamSpec.PERMISSIVE else "shape"
            raise CaffeFormatError(
                f"layer '{layer.name}' blob {index} shares param '{spec.name}' owned by layer "
                f"'{owner[0]}' (blob {owner[1]}), but the {mode}s disagree: owner {_shape(owned)}, "
                f"sharing layer expects {tuple(shape)}")
        self.sharing[(layer.name, index)] = owner
        return owned

    def _new_blob(self, shape) -> nn.Parameter:
        # zeros until weights are loaded (the net never applies Caffe's fillers)
        return nn.Parameter(torch.zeros(shape, dtype=torch.float32, device=self._param_device))

    # ------------------------------------------------------------------ weights
    @property
    def device(self) -> torch.device:
        return self._device_probe.device

    def param_layers(self) -> list[CaffeLayer]:
        return [layer for layer in self.layers if len(layer.blobs)]

    def load_params(self, params: Mapping[str, Sequence[np.ndarray]], strict: bool = True) -> None:
        """Copy Caffe blobs (layer name -> blobs in Caffe shapes) into the net. Everything is checked
        before anything is copied; strict also requires every learnable layer present and no extra
        layer in `params`. A blob given as None, or missing at the end of a layer's list, is one the
        file left out because the layer shares it (Caffe's HDF5 does that); an unshared one is an
        error. Blobs are copied in the file's layer order, as Caffe does, so when two layers that
        share a blob carry different values, the later one in the file wins."""
        plan: dict[str, list] = {}
        missing = []
        for layer in self.param_layers():
            if layer.name not in params:
                missing.append(f"'{layer.name}' ({layer.type}, {len(layer.blobs)} blob(s): "
                               f"{', '.join(str(s) for s in layer.blob_shapes)})")
                continue
            given = self.checked_blobs(layer, params[layer.name])
            plan[layer.name] = [(blob, array) for blob, array in zip(layer.blobs, given) if array is not None]
        if strict and missing:
            raise CaffeFormatError(f"the weights have no blobs for layer(s) {'; '.join(missing)}")
        for name, given in params.items():
            layer = self.layer_by_name.get(name)
            if layer is not None and not len(layer.blobs) and len(given):
                raise CaffeFormatError(f"layer '{name}' ({layer.type}) has no learnable blobs, but the weights "
                                       f"hold {len(given)} for it")
        if strict:
            # a file layer without blobs (data, ReLU, ... of a training net) carries nothing to load
            extra = [name for name, given in params.items() if name not in self.layer_by_name and len(given)]
            if extra:
                raise CaffeFormatError(f"the weights hold layer(s) that are not in the net "
                                       f"({self.phase} phase): {', '.join(extra)}")
        with torch.no_grad():
            for name in params:
                for param, array in plan.get(name, ()):
                    param.copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(param.shape))

    def checked_blobs(self, layer: CaffeLayer, given: Sequence) -> list:
        """A weights file's blobs for `layer` (arrays or anything with a .shape), checked as Caffe's
        ShapeEquals does. None, or a blob missing at the end of the list, is one the file left out
        because the layer shares it (Caffe's HDF5); it stays None. Unshared gaps, wrong counts and
        wrong shapes raise CaffeFormatError naming layer, blob index and both shapes."""
        given = list(given)
        n = len(layer.blobs)
        if len(given) < n and all((layer.name, i) in self.sharing for i in range(len(given), n)):
            given += [None] * (n - len(given))
        if len(given) != n:
            raise CaffeFormatError(
                f"layer '{layer.name}' ({layer.type}): the weights hold {len(given)} blob(s), the net expects "
                f"{n} with shapes {', '.join(str(s) for s in layer.blob_shapes)}")
        for i, (blob, shape) in enumerate(zip(given, layer.blob_shapes)):
            owner = self.sharing.get((layer.name, i))
            if blob is None:
                if owner is None:
                    raise CaffeFormatError(f"layer '{layer.name}' ({layer.type}) blob {i}: the weights leave "
                                           "it out, and the net does not share it from another layer")
                continue
            got = tuple(int(d) for d in (blob.shape if hasattr(blob, "shape") else np.shape(blob)))
            if not shapes_match(shape, got):
                extra = f", shared with layer '{owner[0]}' blob {owner[1]}" if owner else ""
                raise CaffeFormatError(f"layer '{layer.name}' blob {i} has shape {got}; the net expects {shape} "
                                       f"({layer.type}{extra})")
        return given

    def refuse_missing_weights(self) -> None:
        """For a net given no weights file: one with learnable blobs cannot run."""
        learnable = [layer.name for layer in self.param_layers()]
        if learnable:
            raise CaffeFormatError(f"{self.source}: layer(s) {', '.join(learnable)} have learnable blobs; pass "
                                   "their weights with --weights")

    def load_weights(self, path: str | os.PathLike, strict: bool = True) -> "CaffeNet":
        """load_params from a weights file (.caffemodel, .caffemodel.h5, our .safetensors in either
        form); errors name the file."""
        from weights_convert.oslsm.loading import read_params  # any weights file, either safetensors form

        path = os.fspath(path)
        try:
            self.load_params(read_params(path), strict=strict)
        except CaffeFormatError as exc:
            raise CaffeFormatError(f"{path}: {exc}") from None
        return self

    def params_to_numpy(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> its blobs as float32 arrays in Caffe shapes (shared blobs under every user)."""
        return {layer.name: [layer.blob(i).detach().cpu().numpy().copy() for i in range(len(layer.blobs))]
                for layer in self.param_layers()}

    # ------------------------------------------------------------------ running
    def needed_for(self, blobs: Sequence[str]) -> tuple[set[str], list[str]]:
        """The layers (by name) and inputs whose values `blobs` depend on."""
        wanted, layers = set(blobs), set()
        for layer in reversed(self.layers):
            if wanted & set(layer.tops):
                layers.add(layer.name)
                wanted |= set(layer.bottoms)
        return layers, [name for name in self.input_names if name in wanted]

    def forward(self, inputs: Mapping[str, object] | None = None,
                on_top: Callable[[str, torch.Tensor], None] | None = None, only: set[str] | None = None,
                **named) -> Blobs:
        """Every blob by name after one forward pass; an in-place layer's blob holds its final value.
        `on_top(name, tensor)` sees every value a blob takes, in order: inputs, then each top.
        `only`: run just these layers (needed_for), the inputs they read being the ones required."""
        given = dict(inputs or {})
        overlap = set(given) & set(named)
        if overlap:
            raise CaffeFormatError(f"inputs {sorted(overlap)} given twice")
        given.update(named)
        read = None if only is None else {b for name in only for b in self.layer_by_name[name].bottoms}
        required = [n for n in self.input_names if read is None or n in read]
        unknown = sorted(set(given) - set(self.input_names))
        missing = [n for n in required if n not in given]
        if unknown or missing:
            raise CaffeFormatError(f"{self.source}: the net's inputs are {', '.join(self.input_names) or 'none'}; "
                                   + (f"missing {', '.join(missing)}" if missing else "")
                                   + ("; " if missing and unknown else "")
                                   + (f"unknown {', '.join(unknown)}" if unknown else ""))
        blobs: dict[str, torch.Tensor] = {}
        frames: dict[str, Frame | None] = {}  # where a blob may differ from one value per channel
        device = self.device
        for name in required:
            value = given[name]
            blobs[name] = _input_on(value, device)
            if on_top is not None:
                on_top(name, blobs[name])
        for layer in self.layers:
            if isinstance(layer, Input) or (only is not None and layer.name not in only):
                continue
            bottoms = [blobs[b] if down else blobs[b].detach() for b, down in zip(layer.bottoms, layer.propagate_down)]
            try:
                if self.skip_constant_frame:
                    tops, top_frames = layer.forward_framed(bottoms, [
                        _detached(frames.get(b), down) for b, down in zip(layer.bottoms, layer.propagate_down)])
                    frames.update(zip(layer.tops, top_frames))
                else:
                    tops = layer(bottoms)
            except CaffeFormatError as exc:
                raise CaffeFormatError(f"{self.source}: {exc}{self._input_shape_hint(blobs)}") from None
            except RuntimeError as exc:
                raise CaffeFormatError(f"{self.source}: layer '{layer.name}' (type {layer.type}) failed: {exc}"
                                       f"{self._input_shape_hint(blobs)}") from None
            # rebinding (never writing into) the name keeps earlier values intact
            blobs.update(zip(layer.tops, tops))
            if on_top is not None:
                for name, value in zip(layer.tops, tops):
                    on_top(name, value)
        return Blobs(blobs, self.output_names)

    def _input_shape_hint(self, blobs: Mapping[str, torch.Tensor]) -> str:
        """Inputs whose shapes differ from the prototxt's Input shapes: Caffe reshapes to any shape,
        but a failure downstream usually means inputs made for another net (k-shot, size)."""
        differ = [f"{n} {_shape(blobs[n])} (declared {self.blob_shapes[n]})" for n in self.input_names
                  if _shape(blobs[n]) != self.blob_shapes[n]]
        return "; inputs that differ from the prototxt's shapes: " + ", ".join(differ) if differ else ""

"""Caffe-exact PyTorch layers, one module per layer family, and the type registry."""
from weights_convert.layers.base import CaffeLayer
from weights_convert.layers.registry import LAYER_TYPES, build_layer

__all__ = ["CaffeLayer", "LAYER_TYPES", "build_layer"]

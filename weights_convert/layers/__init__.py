"""Caffe-exact PyTorch layers, one module per layer family, and the type registry.

The names below load on first use, so that the torch-free facts (facts.py) import without torch."""
from importlib import import_module

_HOMES = {"CaffeLayer": "base", "LAYER_TYPES": "registry", "build_layer": "registry"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)

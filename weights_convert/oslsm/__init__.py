"""OSLSM as a PyTorch module, its deploy net spec and its weight hashing.

The names below load on first use, so that torch-free parts (layout, spec) import without torch."""
from importlib import import_module

_HOMES = {"OSLSM": "model", "load_oslsm": "loading", "OSLSMWidths": "layout",
          "WeightHashing": "hashing", "detect_hashing_map": "hashing"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)

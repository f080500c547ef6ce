"""OSLSM as a PyTorch module, its deploy net spec and its weight hashing."""
from weights_convert.oslsm.hashing import WeightHashing, detect_hashing_map
from weights_convert.oslsm.layout import OSLSMWidths
from weights_convert.oslsm.model import OSLSM, load_oslsm

__all__ = ["OSLSM", "OSLSMWidths", "WeightHashing", "detect_hashing_map", "load_oslsm"]

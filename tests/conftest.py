"""Test session set-up; shared constants and helpers are in helpers.py."""
import os

# Before anything loads numpy: the BLAS kernels that give the original's resize bits (see reproduce/__init__.py).
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

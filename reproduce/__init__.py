"""PASCAL-5i exactly as the original OSLSM code builds and scores it."""
import os

# The small-object filter depends on the last bits of a LAPACK SVD (resize2017), and numpy's
# OpenBLAS chooses its kernels by CPU when it loads. The Haswell kernels (also what AMD Zen
# CPUs get) give the original's bits; this takes effect only if numpy is not loaded yet, and
# resize2017.check_matrix_bits refuses to run otherwise.
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

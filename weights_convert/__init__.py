"""Caffe model files and Caffe-exact networks in PyTorch, without Caffe."""
import os

# cuBLAS is deterministic only with a fixed workspace, read when it first starts: set here, before
# any of our code can touch CUDA (numerics.faithful_mode refuses another value once CUDA is up).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

__version__ = "0.1.0"

"""Caffe model files and Caffe-exact networks in PyTorch, without Caffe."""

__version__ = "0.1.0"

"""Access to the generated protobuf module of our own Caffe schema (proto/caffe.proto)."""
from weights_convert.proto import caffe_pb2 as pb

__all__ = ["pb"]

"""The one exception type for malformed or mismatched model files."""


class CaffeFormatError(ValueError):
    """A Caffe file (prototxt, caffemodel, HDF5, converted weights) is malformed
    or does not match what it is used with. The message names the file and the
    place (line, byte offset, layer or field) and what was expected."""

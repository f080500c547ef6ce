"""The package's exceptions: malformed or mismatched model files, and a run stopped on request."""


class CaffeFormatError(ValueError):
    """A Caffe file (prototxt, caffemodel, HDF5, converted weights) is malformed
    or does not match what it is used with. The message names the file and the
    place (line, byte offset, layer or field) and what was expected."""


class Interrupted(Exception):
    """A run stopped on request (Ctrl-C, SIGTERM) after saving what it needs to resume; the
    message says where it stopped. Command lines exit 130."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception from another library, for a one-line message (its type
    when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__

"""Whether an existing file is of the kind a command writes, so that a command replaces its own
earlier output but never a file of another kind (a results CSV, a manifest, a caffemodel) that
its --out happens to name. Read by header or keys only; nothing here loads torch."""
from __future__ import annotations

import json
import os
import zipfile

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def json_with_keys(path: str | os.PathLike, keys: tuple[str, ...]) -> bool:
    """A JSON object holding every one of `keys`."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in keys)


def is_npz(path: str | os.PathLike) -> bool:
    """An .npz: a zip archive of .npy members only."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def is_png(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False

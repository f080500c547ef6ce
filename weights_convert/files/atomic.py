"""Write files so that a reader never sees half of one: write a temporary sibling, then rename."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator

_UMASK_LOCK = threading.Lock()


def _new_temporary(path: Path, suffix: str) -> tuple[int, str]:
    """A temporary file beside `path` with the permissions a plain open() would give it
    (mkstemp makes it owner-only, and the rename would keep that)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file stands where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory (a file is in the way)", exc.filename) from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, 0o666 & ~_current_umask())
    return fd, tmp


def _current_umask() -> int:
    # The only way to read the umask is to set it. Meanwhile it is 0o077, so a file another
    # thread creates in that instant is only more private; the lock serialises our readers.
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def temporary_folder_beside(path: Path) -> Path:
    """A new hidden folder next to `path`, to be renamed to it once complete, with the mode a plain
    mkdir would give (mkdtemp's 0700 would make the renamed folder private whatever the umask)."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_current_umask())
    return tmp


def _sync_directory(folder: Path) -> None:
    """Make the rename itself durable."""
    with contextlib.suppress(OSError):  # some file systems cannot open or fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it onto `path`,
    on any exception delete it and leave `path` untouched."""
    path = Path(path)
    fd, tmp = _new_temporary(path, ".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _sync_directory(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_naming(exc, tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that need a file name (np.savez, h5py, safetensors): yield a temporary
    path beside `path` that is renamed onto it on success and removed on failure."""
    path = Path(path)
    fd, tmp = _new_temporary(path, ".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
        _sync_directory(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_naming(exc, tmp, path)


def _raise_naming(exc: BaseException, tmp: str, path: Path) -> None:
    """Re-raise `exc`; an OSError that names no file (a write on a full disk) or names our
    temporary file names the user's `path` instead."""
    if isinstance(exc, OSError) and exc.filename2 is None and exc.filename in (None, tmp, Path(tmp)):
        raise _named(exc, path) from exc
    raise exc


def _named(exc: OSError, path: str | os.PathLike) -> OSError:
    try:
        return type(exc)(exc.errno, exc.strerror or str(exc), os.fspath(path))
    except TypeError:  # an OSError subclass with a constructor of its own
        return OSError(exc.errno, exc.strerror or str(exc), os.fspath(path))


@contextlib.contextmanager
def naming_os_errors(path: str | os.PathLike) -> Iterator[None]:
    """An OSError raised within that names no file (writes and fsyncs on a full disk do not) is
    raised again naming `path`, so that every message says which file failed."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.filename2 is None:
            raise _named(exc, path) from exc
        raise


# The name _new_temporary gives: "." + the file's name + "." + mkstemp's 8 random characters + ".tmp[.suffix]".
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def is_temporary(name: str) -> bool:
    """A file name of the kind our writers use before their rename."""
    return bool(_TEMPORARY.match(name))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left below
    `folder`; call it only while holding the folder's lock, when no writer of ours is active."""
    removed = []
    for path in Path(folder).rglob(".*"):
        if path.is_file() and is_temporary(path.name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed

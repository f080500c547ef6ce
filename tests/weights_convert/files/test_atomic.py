import pytest

from weights_convert.files.atomic import atomic_path, atomic_write, atomic_write_text


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "a.npz"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == target.parent
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"y")
            raise ValueError
    assert target.read_bytes() == b"x" and len(list(target.parent.iterdir())) == 1


def test_outputs_get_the_permissions_of_a_plain_open(tmp_path):
    import os
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.npz") as tmp:
            tmp.write_bytes(b"y")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "b.npz").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)


def test_the_next_lock_holder_removes_what_a_killed_writer_left(tmp_path):
    """A writer killed mid-write leaves its temporary file; the next process to take the folder's
    lock deletes it (and nothing else)."""
    import subprocess
    import sys

    from weights_convert.errors import CaffeFormatError
    from weights_convert.files.folder_lock import folder_lock

    script = ("import os, sys\nfrom weights_convert.files.atomic import atomic_write\n"
              "with atomic_write(sys.argv[1]) as fh:\n    fh.write(b'half'); fh.flush(); os.kill(os.getpid(), 9)\n")
    (tmp_path / "pred").mkdir()
    for target in (tmp_path / "summary.json", tmp_path / "pred" / "00001.png"):
        subprocess.run([sys.executable, "-c", script, str(target)])
    (tmp_path / ".keep.tmp").write_text("a user's file")  # not one of ours: another name shape
    left = sorted(p.name for p in tmp_path.rglob(".*.tmp*"))
    assert len(left) == 3 and not (tmp_path / "summary.json").exists()
    with folder_lock(tmp_path, ".lock", "test", CaffeFormatError, owns=lambda _: True):
        pass
    assert sorted(p.name for p in tmp_path.rglob(".*.tmp*")) == [".keep.tmp"]

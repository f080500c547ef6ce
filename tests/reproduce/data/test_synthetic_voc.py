"""The synthetic VOC2012-layout generator: deterministic, valid, usable for 5-shot in every fold."""
import numpy as np
import pytest
from PIL import Image

from reproduce.data.episodes import make_episodes
from reproduce.errors import ReproduceError
from reproduce.data.items import build_items
from reproduce.data.synthetic_voc import make_synthetic_voc
from reproduce.data.voc import voc_palette
from reproduce.data.voc import VOID, VOCDataset, fold_classes
from helpers import tree_digest


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "VOC2012"
    make_synthetic_voc(root, n_images=120, seed=3)
    return root


def test_reads_as_voc(synth):
    root = synth
    ds = VOCDataset(root)
    assert len(ds) == 120
    assert ds.names == sorted(ds.names)
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject"):
        assert len(list((root / sub).iterdir())) == 120


def test_deterministic_from_the_seed(synth, tmp_path):
    root = synth
    make_synthetic_voc(tmp_path / "again", n_images=120, seed=3)
    make_synthetic_voc(tmp_path / "other", n_images=120, seed=4)
    assert tree_digest(tmp_path / "again") == tree_digest(root)
    assert tree_digest(tmp_path / "other") != tree_digest(root)


def test_labels_follow_voc_conventions(synth):
    root = synth
    ds = VOCDataset(root)
    seen, grey = set(), 0
    for name in ds.names:
        with Image.open(ds.mask_path(name)) as im:
            assert im.mode == "P" and im.getpalette()[:60] == voc_palette()[:60]
        mask = ds.read_mask(name)
        seen |= set(np.unique(mask).tolist())
        with Image.open(ds.image_path(name)) as im:
            grey += im.mode == "L"
            assert im.size == (mask.shape[1], mask.shape[0])
    assert seen == set(range(21)) | {VOID}
    assert grey >= 5
    rgb = ds.read_image(ds.names[16])  # every 17th image is grey
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])


def test_every_fold_supports_five_shot_and_some_objects_are_dropped(synth, tmp_path):
    root = synth
    ds = VOCDataset(root)
    dropped = 0
    for fold in range(4):
        items = build_items(ds, fold, cache_dir=tmp_path)
        assert sorted(items.class_sets) == fold_classes(fold)
        assert min(len(v) for v in items.class_sets.values()) >= 6
        dropped += len(items.dropped)
        episodes = make_episodes(items, fold, 5, n_episodes=50)
        assert all(len(e.supports) == 5 and e.query not in e.supports for e in episodes)
    assert dropped >= 10


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(ReproduceError, match="refusing"):
        make_synthetic_voc(tmp_path / "full", n_images=3)
    assert (tmp_path / "full" / "x").read_text() == "keep"
    with pytest.raises(ReproduceError, match="n_images"):
        make_synthetic_voc(tmp_path / "new", n_images=0)
    assert not (tmp_path / "new").exists()


def test_the_folder_gets_the_mode_a_plain_mkdir_gives(tmp_path):
    """Built in a temporary folder and renamed: not mkdtemp's 0700, so a group can share the set."""
    import os

    old = os.umask(0o022)
    try:
        root = make_synthetic_voc(tmp_path / "VOC2012", n_images=40, seed=1)
    finally:
        os.umask(old)
    assert root.stat().st_mode & 0o777 == 0o755

"""Will a user's VOC 2012 give the original's episodes? The layout checked file by file, then
the items of all folds and the 8 episode lists compared with the lists the original printed
on the real VOC 2012 val set; a difference is traced to the (image, class) items behind it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reproduce.data.episodes import make_episodes
from reproduce.errors import ReproduceError
from reproduce.data.items import FoldItems, build_items
from reproduce.data.reference_episodes import SHOTS, VOC2012_VAL_IMAGES, first_difference, reference_items
from reproduce.data.voc import VOCDataset, class_name
from reproduce.data.pascal5i import FOLDS

SHOWN = 10  # problems or items listed by name before "and N more"
WHY = ("Filter decisions that differ usually mean another VOC release (the 2012 val masks are "
       "needed, not 2007-2011 or the SBD ones) or masks that were re-encoded (saved as RGB or JPEG, "
       "resized, recoloured): the original's small-object filter turns on single pixels near an "
       "object's edge.")


@dataclass
class ListCheck:
    fold: int
    shots: int
    difference: int | None       # first differing episode, None when identical

    def line(self) -> str:
        verdict = "identical" if self.difference is None else f"differs at episode {self.difference}"
        return f"fold {self.fold} {self.shots}-shot: {verdict}"


@dataclass
class VOCCheck:
    lists: list[ListCheck] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(c.difference is None for c in self.lists)


def _listed(items, more_than: int = SHOWN) -> str:
    items = sorted(items)
    shown = ", ".join(f"{name} class {cls} ({class_name(cls)})" for name, cls in items[:more_than])
    return shown + (f" and {len(items) - more_than} more" if len(items) > more_than else "")


def _problem_list(problems: list[str]) -> str:
    """'(N problem(s)):' and the first SHOWN of them, one per line."""
    more = f"\n  and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return f"({len(problems)} problem(s)):\n  - " + "\n  - ".join(problems[:SHOWN]) + more


def layout_problems(dataset: VOCDataset) -> list[str]:
    """Every problem of the val split's files: count, missing files, mask values, sizes."""
    problems = []
    if len(dataset.names) != VOC2012_VAL_IMAGES:
        problems.append(f"{dataset.split_file}: {len(dataset.names)} names; VOC 2012 val has {VOC2012_VAL_IMAGES}")
    for name in dataset.names:
        image, mask = dataset.image_path(name), dataset.mask_path(name)
        missing = [str(p) for p in (image, mask) if not p.is_file()]
        if missing:
            problems.append(f"missing: {', '.join(missing)}")
            continue
        try:
            dataset.check_mask_size(name, dataset.read_mask(name).shape)
        except ReproduceError as exc:
            problems.append(str(exc))
    return problems


def diagnose(items: FoldItems) -> list[str]:
    """Which items of this data set's fold are not the original's, and why they may differ."""
    ours, original = set(items.items), reference_items(items.fold)
    dropped_here = set(items.dropped)
    lines = []
    kept_only_here = ours - original
    if kept_only_here:
        lines.append(f"fold {items.fold}: kept here, dropped by the original (or not in its masks): "
                     + _listed(kept_only_here))
    filtered_here = (original - ours) & dropped_here
    if filtered_here:
        lines.append(f"fold {items.fold}: kept by the original, dropped here by the small-object filter: "
                     + _listed(filtered_here))
    absent_here = (original - ours) - dropped_here
    if absent_here:
        lines.append(f"fold {items.fold}: kept by the original, absent here (image not in val.txt or "
                     "class not in its mask): " + _listed(absent_here))
    if not lines and ours == original:
        order = [n for n, _ in items.items]
        if order != sorted(order):
            lines.append(f"fold {items.fold}: the items are the original's but val.txt is not in its "
                         "(sorted) order, which the episode draw follows")
    return lines


def check_voc(voc: str | Path, cache_dir=None) -> VOCCheck:
    """Raises ReproduceError listing every layout problem; otherwise compares the 8 lists."""
    dataset = VOCDataset(voc)
    problems = layout_problems(dataset)
    if problems:
        raise ReproduceError(f"{dataset.root} is not a complete VOC 2012 val set {_problem_list(problems)}")
    result = VOCCheck()
    for fold in FOLDS:
        items = build_items(dataset, fold, cache_dir=cache_dir)
        for shots in SHOTS:
            episodes = make_episodes(items, fold, shots)
            result.lists.append(ListCheck(fold, shots, first_difference(episodes, fold, shots)))
        if any(c.difference is not None for c in result.lists if c.fold == fold):
            result.diagnosis += diagnose(items)
    if not result.identical:
        result.diagnosis.append(WHY)
    return result


def check_hsnet(voc: str | Path, masks: str | Path | None = None, splits: str | Path | None = None) -> list[str]:
    """Protocol hsnet's data: every (image, class) item of the four split files has its image and
    its mask (of the image's size, holding the class). Raises ReproduceError listing every problem;
    otherwise returns what was found, per fold and class, and how HSNet's lists differ from the
    original's items on the real VOC 2012."""
    from reproduce.data.hsnet import MASKS, SPLITS, hsnet_items, item_differences, splits_status

    splits = Path(splits or SPLITS)
    dataset = VOCDataset(voc, masks=masks or Path(voc) / MASKS)
    problems, lines = [], []
    for fold in FOLDS:
        items = hsnet_items(fold, splits)
        per_class: dict[int, int] = {}
        for name, cls in items:
            missing = [str(p) for p in (dataset.image_path(name), dataset.mask_path(name)) if not p.is_file()]
            if missing:
                problems.append(f"fold {fold}, {name} class {cls}: missing {', '.join(missing)}")
                continue
            try:
                mask = dataset.read_mask(name)
                dataset.check_mask_size(name, mask.shape)
            except ReproduceError as exc:
                problems.append(str(exc))
                continue
            if not (mask == cls).any():
                problems.append(f"fold {fold}: {dataset.mask_path(name)} holds no pixel of class {cls} "
                                f"({class_name(cls)}), which the split file lists it for")
            per_class[cls] = per_class.get(cls, 0) + 1
        counts = ", ".join(f"{class_name(c)} {n}" for c, n in sorted(per_class.items()))
        lines.append(f"fold {fold}: {len(items)} items ({counts})")
    if problems:
        raise ReproduceError(f"{dataset.root} with masks {dataset.mask_dir} does not hold protocol hsnet's data "
                             f"{_problem_list(problems)}")
    status = splits_status(splits)
    lines.append(f"every item of {status} has its image and its mask in {dataset.mask_dir}, and the mask holds its class")
    if status == splits_status(SPLITS):  # HSNet's own lists: how they differ from the original's items
        for fold in FOLDS:
            diff = item_differences(fold)
            if diff["only_oslsm"] or diff["only_hsnet"]:
                lines.append(f"fold {fold}: only in the original's items: {_listed(diff['only_oslsm']) or '-'}; "
                             f"only in HSNet's list: {_listed(diff['only_hsnet']) or '-'}")
    return lines

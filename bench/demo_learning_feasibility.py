"""Feasibility check for a demo that learns (issue 12, item 5), before building it into the
Caffe train net: the idealised form of the README's plan, in plain torch at 64x48 pixels.

Query features phi = [relu(x), relu(-x), 1] of the mean-subtracted RGB (what colour-preserving
trunk weights would carry to fc7s); the support vector v = phi averaged under the support mask
(fc7f of the masked support); score = phi(q)^T M v + b, bilinear with M, b as the only
parameters (fc8f's role). 300 SGD steps on training-class episodes of the synthetic set, then
pooled foreground IoU on 200 test-class episodes against the random M. This is not Caffe's
solver and not the paper's metric: it only says whether the plan can learn at all.

    OPENBLAS_CORETYPE=Haswell python bench/demo_learning_feasibility.py
"""
from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reproduce.data.synthetic_voc import make_synthetic_voc  # noqa: E402

MEAN = np.array([104.0, 117.0, 123.0], np.float32)
SIZE = (64, 48)


def features(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy((image - MEAN) / 128).permute(2, 0, 1)
    return torch.cat([torch.relu(x), torch.relu(-x), torch.ones(1, *x.shape[1:])])


def load(root: Path) -> tuple[dict, dict, dict]:
    images, masks, by_class = {}, {}, {}
    for name in (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        rgb = Image.open(root / "JPEGImages" / f"{name}.jpg").convert("RGB").resize(SIZE)
        images[name] = np.asarray(rgb, np.float32)
        masks[name] = np.asarray(Image.open(root / "SegmentationClass" / f"{name}.png").resize(SIZE, Image.NEAREST))
        for c in np.unique(masks[name]):
            if 0 < c < 255 and (masks[name] == c).sum() > 50:
                by_class.setdefault(int(c), []).append(name)
    return images, masks, by_class


def episode(data, classes, rng):
    images, masks, by_class = data
    c = rng.choice(classes)
    query, support = rng.sample(by_class[c], 2)
    support_mask = torch.from_numpy(masks[support] == c).float()
    v = (features(images[support]) * support_mask).sum((1, 2)) / support_mask.sum()
    label = torch.from_numpy(masks[query] == c).float()
    return features(images[query]), v, label, torch.from_numpy(masks[query] != 255)


def foreground_iou(data, M, b, classes, n=200) -> float:
    rng, inter, union = random.Random(99), 0, 0
    for _ in range(n):
        fq, v, label, valid = episode(data, classes, rng)
        pred = (torch.einsum("chw,cd,d->hw", fq, M, v) + b > 0) & valid
        truth = (label > 0) & valid
        inter, union = inter + int((pred & truth).sum()), union + int((pred | truth).sum())
    return 100 * inter / max(1, union)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data = load(make_synthetic_voc(Path(tmp) / "VOC2012", 300, 2017))
    for fold in range(4):
        test = list(range(5 * fold + 1, 5 * fold + 6))
        train = [c for c in data[2] if c not in test]
        torch.manual_seed(fold)
        M = (torch.randn(7, 7) * 0.1).requires_grad_()
        b = torch.zeros((), requires_grad=True)
        before = foreground_iou(data, M.detach(), b.detach(), test)
        opt, rng = torch.optim.SGD([M, b], lr=0.5, momentum=0.9), random.Random(fold)
        for _ in range(300):
            fq, v, label, valid = episode(data, train, rng)
            score = torch.einsum("chw,cd,d->hw", fq, M, v) + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(score[valid], label[valid])
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = foreground_iou(data, M.detach(), b.detach(), test)
        print(f"fold {fold}: foreground IoU of test classes, random {before:.1f} -> trained {after:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

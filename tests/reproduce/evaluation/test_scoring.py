"""Scoring as the original test.py: counts on hand-built masks, per-class sums, IoU, mIoU, FB-IoU,
the 'modern' void-ignoring variant and the iou_results.txt / CSV layouts."""
import numpy as np
import pytest

from reproduce.errors import ReproduceError
from reproduce.evaluation.protocols import protocol_named
from reproduce.evaluation.scoring import (Counts, FoldScore, csv_row, episode_counts, fold_score_from_rows,
                               format_csv_row, iou_results_text, parse_csv_line, py2_str,
                               write_iou_results_txt)


def _grid():
    # 4x5 label: foreground in the top-left 2x3 block (6 px); prediction covers 2x2 of it
    # plus 3 background pixels. tp=4, fp=3, fn=2, tn=20-9=11.
    label = np.zeros((4, 5), np.float32)
    label[:2, :3] = 1.0
    score = np.full((4, 5), 0.2, np.float32)
    score[:2, :2] = 0.9
    score[3, 2:5] = 0.7
    return score, label


def test_counts_on_hand_built_masks():
    score, label = _grid()
    c = episode_counts(score, label)
    assert c == Counts(tp=4, tn=11, fp=3, fn=2)
    assert c.iou == pytest.approx(4 / 9)
    # The net's (1,1,H,W) blobs are accepted as well.
    assert episode_counts(score[None, None], label[None, None]) == c


def test_threshold_is_strict_like_test_py():
    # score == 0.5 is background (p = score > 0.5); label 0.5 is background too.
    label = np.array([[1.0, 0.5, 0.0]], np.float32)
    score = np.array([[0.5, 0.5, 0.50001]], np.float32)
    assert episode_counts(score, label) == Counts(tp=0, tn=1, fp=1, fn=1)


def test_empty_image_iou_is_zero_not_nan():
    z = np.zeros((3, 3), np.float32)
    c = episode_counts(z, z)
    assert c == Counts(0, 9, 0, 0) and c.iou == 0.0


def test_modern_protocol_ignores_void_original_counts_it_as_background():
    score, label = _grid()
    void = np.zeros((4, 5), bool)
    void[3, 3:5] = True        # two false positives sit on void
    void[0, 4] = True          # one true negative on void
    assert episode_counts(score, label) == Counts(4, 11, 3, 2)
    assert episode_counts(score, label, void) == Counts(tp=4, tn=10, fp=1, fn=2)
    # ... as the two protocols score them, from the (label, void) truth their `truth` gives
    assert protocol_named("original").counts(score, (label, None)) == Counts(4, 11, 3, 2)
    assert protocol_named("modern").counts(score, (label, void)) == Counts(tp=4, tn=10, fp=1, fn=2)
    with pytest.raises(ReproduceError, match="unknown scoring protocol 'nope'"):
        protocol_named("nope")


def test_shape_mismatch_is_an_error():
    with pytest.raises(ReproduceError, match="differ"):
        episode_counts(np.zeros((3, 3)), np.zeros((3, 4)))


def test_fold_sums_iou_miou_fb_iou():
    fs = FoldScore([6, 7, 8, 9, 10])
    fs.add(6, Counts(tp=10, tn=80, fp=5, fn=5))
    fs.add(6, Counts(tp=0, tn=90, fp=10, fn=0))
    fs.add(7, Counts(tp=30, tn=60, fp=0, fn=10))
    # Class 6: 10 / (10+15+5) = 1/3; class 7: 30/40; 8, 9, 10 never seen: 0 (test.py's max(.,1)).
    assert fs.class_iou(6) == pytest.approx(1 / 3)
    assert fs.class_iou(7) == pytest.approx(0.75)
    assert fs.miou() == pytest.approx((1 / 3 + 0.75) / 5)
    # Pooled: tp 40, tn 230, fp 15, fn 15 -> fg 40/70, bg 230/260.
    assert fs.fb_iou() == pytest.approx(0.5 * (40 / 70 + 230 / 260))
    assert fs.iou_all()[5] == pytest.approx(1 / 3) and fs.iou_all()[0] == 0.0
    with pytest.raises(ReproduceError, match="not a test class"):
        fs.add(1, Counts(1, 1, 1, 1))


def test_csv_rows_round_trip_and_rebuild_sums():
    rows = [csv_row(0, 6, Counts(10, 80, 5, 5)), csv_row(1, 7, Counts(30, 60, 0, 10))]
    assert rows[0] == [0, 0, 5, 10, 80, 5, 5, 0.5]
    text = "".join(format_csv_row(r) for r in rows)
    assert text == "0,0,5,10,80,5,5,0.5\n1,0,6,30,60,0,10,0.75\n"
    parsed = [parse_csv_line(line, "x.csv", n) for n, line in enumerate(text.splitlines(True), 1)]
    assert parsed == rows
    fs = fold_score_from_rows([6, 7, 8, 9, 10], parsed)
    assert (fs.tp[5], fs.fp[5], fs.fn[5], fs.tn[6]) == (10, 5, 5, 60)
    with pytest.raises(ReproduceError, match=r"x.csv:3: expected 8"):
        parse_csv_line("1,2,3\n", "x.csv", 3)


def test_iou_results_txt_layout(tmp_path):
    fs = FoldScore([1, 2, 3, 4, 5])
    fs.add(1, Counts(tp=1, tn=0, fp=1, fn=1))
    fs.add(3, Counts(tp=2, tn=7, fp=0, fn=0))
    path = tmp_path / "iou_results.txt"
    write_iou_results_txt(path, fs)
    lines = path.read_text().splitlines()
    assert lines[0] == "tp: 1 0 2" + " 0" * 17
    assert lines[1] == "fp: 1" + " 0" * 19
    assert lines[2] == "fn: 1" + " 0" * 19
    assert lines[3] == "iou (all categories): 0.333333333333 0.0 1.0" + " 0.0" * 17
    # mean over the 5 test classes: (1/3 + 1) / 5, with Python 2's 12 significant digits.
    assert lines[4] == "mean_iou (only test categories): 0.266666666667"
    assert path.read_text() == iou_results_text(fs)


def test_py2_str():
    assert py2_str(3) == "3" and py2_str(np.int64(7)) == "7"
    assert py2_str(0.0) == "0.0" and py2_str(1.0) == "1.0" and py2_str(2 / 3) == "0.666666666667"
    assert py2_str(1e-20) == "1e-20"

"""cosam_evaluate on hand-made volumes whose answers are worked out by hand below."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from cosam_nn.evaluation.detection_metrics import average_precision, froc, greedy_match
from cosam_nn.evaluation.evaluate import main as evaluate_main

SHAPE = (10, 20, 20)


def _write(folder, name, array, spacing=(1.0, 1.0, 1.0)):
    os.makedirs(folder, exist_ok=True)
    img = sitk.GetImageFromArray(array.astype(np.uint8))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, os.path.join(folder, name + ".nii.gz"))


def _hand_case():
    """Reference: A (2x3x3 = 18 voxels), B (2x4x4 = 32), C (1x2x2 = 4, missed).
    Prediction: A exactly, B shifted one row (overlap 24, 3D box IoU 24/40 = 0.6), one false
    positive F (1x3x3 = 9) on slice 0."""
    ref, pred = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    ref[1:3, 2:5, 2:5] = True
    ref[5:7, 10:14, 10:14] = True
    ref[8:9, 15:17, 2:4] = True
    pred[1:3, 2:5, 2:5] = True
    pred[5:7, 11:15, 10:14] = True
    pred[0:1, 15:18, 15:18] = True
    probs = np.zeros((2,) + SHAPE, np.float32)
    probs[1][1:3, 2:5, 2:5] = 0.9
    probs[1][5:7, 11:15, 10:14] = 0.6
    probs[1][0:1, 15:18, 15:18] = 0.3
    probs[0] = 1 - probs[1]
    return ref, pred, probs


def _folders(tmp_path, with_empty_case=True):
    ref, pred, probs = _hand_case()
    _write(tmp_path / "ref", "a", ref)
    _write(tmp_path / "pred", "a", pred)
    np.savez(tmp_path / "pred" / "a.npz", probabilities=probs)
    if with_empty_case:
        empty = np.zeros(SHAPE, bool)
        _write(tmp_path / "ref", "b", empty)
        _write(tmp_path / "pred", "b", empty)
        np.savez(tmp_path / "pred" / "b.npz", probabilities=np.stack([np.ones(SHAPE), np.zeros(SHAPE)]))
    return str(tmp_path / "ref"), str(tmp_path / "pred")


def test_hand_worked_case_with_probabilities(tmp_path, capsys):
    ref, pred = _folders(tmp_path)
    assert evaluate_main(["-ref", ref, "-pred", pred, "-o", str(tmp_path / "out"), "--probs",
                          "--plots", str(tmp_path / "pics")]) == 0
    s = json.load(open(tmp_path / "out" / "summary.json"))
    assert s["cases"] == 2 and s["cases_empty_reference_and_prediction"] == 1
    assert s["dice_mean"] == pytest.approx(2 * 42 / (54 + 59))     # only case a counts
    assert s["iou_mean"] == pytest.approx(42 / 71)
    assert s["pooled_slice_dice"] == pytest.approx(84 / (54 + 50))  # F lies on slice 0, which holds no node
    assert s["reference_nodes"] == 3 and s["predicted_nodes"] == 3
    # scores A 0.9 (TP), B 0.6 (TP), F 0.3 (FP); 3 nodes: recall 1/3, 2/3 at precision 1
    assert s["ap"]["0.1"] == pytest.approx(2 / 3) and s["ap"]["0.5"] == pytest.approx(2 / 3)
    # per slice: A on 2 slices, B on 2 (2D IoU 12/20 = 0.6), C on 1 -> 4 TPs before the FP, 5 references
    assert s["ap50_2d_per_slice"] == pytest.approx(4 / 5)
    # 2 scans: the FP comes last, so every rate sees sensitivity 2/3
    assert all(v == pytest.approx(2 / 3) for v in s["froc"].values()) and s["froc_score"] == pytest.approx(2 / 3)
    # short axes (pixel extents, 1 mm): A 3x3 -> 4.24 mm, B 4x4 -> 5.66 mm, C 2x2 -> 2.83 mm
    by_size = s["sensitivity_by_short_axis"]
    # A (small) is found before the FP, C (small) never: 1/2 at every rate; B alone in 5-10 mm
    assert by_size["< 5 mm"] == {"nodes": 2, "sensitivity": 0.5, "froc_score": 0.5}
    assert by_size["5-10 mm"] == {"nodes": 1, "sensitivity": 1.0, "froc_score": 1.0}
    assert by_size["> 10 mm"]["nodes"] == 0 and by_size["> 10 mm"]["froc_score"] is None
    assert s["per_case"]["a"]["nodes_found"] == 2
    assert (s["per_case"]["a"]["reference_voxels"], s["per_case"]["a"]["predicted_voxels"]) == (54, 59)
    assert "mean foreground probability" in s["detection_scores"]
    assert "AP50 per slice" in open(tmp_path / "out" / "summary.md").read()
    assert "FROC score" in capsys.readouterr().out
    pictures = sorted(os.listdir(tmp_path / "pics"))
    assert pictures == ["best_a.png", "froc.png", "node_sizes.png", "worst_a.png"]
    assert all(open(tmp_path / "pics" / f, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for f in pictures)
    assert s["plots"] and all(p.endswith(".png") for p in s["plots"])


def test_without_probabilities_scores_are_one_and_order_is_scan_order(tmp_path):
    ref, pred = _folders(tmp_path, with_empty_case=False)
    assert evaluate_main(["-ref", ref, "-pred", pred]) == 0
    s = json.load(open(os.path.join(pred, "summary.json")))
    # all scores 1.0: ties keep scan order F, A, B -> FP, TP, TP: AP = 1/3 * 2/3 + 1/3 * 2/3
    assert s["ap"]["0.1"] == pytest.approx(4 / 9)
    assert "1.0" in s["detection_scores"]
    # one scan: F puts 1 FP per scan before A, so the small nodes (A, C) reach 1/2 only from rate 1 on
    assert s["sensitivity_by_short_axis"]["< 5 mm"]["froc_score"] == pytest.approx(4 * 0.5 / 7)


def test_ap_and_froc_on_a_case_worked_on_paper():
    # two scans; scan 1: refs r1, r2; detections d1 (0.9, hits r1), d2 (0.8, FP); scan 2: ref r3,
    # detections d3 (0.7, hits r3), d4 (0.6, FP)
    s1 = greedy_match([[0, 0, 2, 2], [5, 5, 6, 6]], [0.9, 0.8], [[0, 0, 2, 2], [8, 8, 9, 9]], 0.5)
    s2 = greedy_match([[1, 1, 3, 3], [7, 7, 9, 9]], [0.7, 0.6], [[1, 1, 3, 3]], 0.5)
    # sorted: T F T F; recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2 -> envelope 1, 2/3, 2/3, 1/2
    assert average_precision([s1, s2]) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    points, score = froc([s1, s2], n_scans=2)
    # FP per scan after each detection: 0, 0.5, 0.5, 1.0 -> sensitivity 1/3 below 1/2, 2/3 from 1/2 on
    assert points[0.125] == pytest.approx(1 / 3) and points[0.25] == pytest.approx(1 / 3)
    assert points[0.5] == pytest.approx(2 / 3) and points[8.0] == pytest.approx(2 / 3)
    assert score == pytest.approx((2 * 1 / 3 + 5 * 2 / 3) / 7)
    assert np.isnan(average_precision([greedy_match(np.zeros((0, 4)), [], np.zeros((0, 4)), 0.5)]))


def test_froc_of_some_references_counts_every_false_positive():
    # scan 1: refs A (small), B (large); detections d1 0.9 finds B, d2 0.8 FP, d3 0.7 finds A;
    # scan 2: ref C (small); d4 0.6 FP, d5 0.5 finds C
    s1 = greedy_match([[10, 10, 20, 20], [30, 30, 32, 32], [0, 0, 2, 2]], [0.9, 0.8, 0.7],
                      [[0, 0, 2, 2], [10, 10, 20, 20]], 0.5)
    s2 = greedy_match([[40, 40, 41, 41], [5, 5, 7, 7]], [0.6, 0.5], [[5, 5, 7, 7]], 0.5)
    assert s1.reference_of.tolist() == [1, -1, 0] and s2.reference_of.tolist() == [-1, 0]
    points, score = froc([s1, s2], n_scans=2, counted=[[True, False], [True]])
    # d1 finds a node not counted: neither hit nor FP; d2 -> 0.5 FP/scan, d3 -> 1/2; d4 -> 1.0, d5 -> 1
    assert [points[r] for r in (0.125, 0.25, 0.5, 1.0, 8.0)] == pytest.approx([0, 0, 0.5, 1, 1])
    assert score == pytest.approx((0.5 + 4) / 7)
    # all references: d1 counts from the start
    assert froc([s1, s2], n_scans=2)[1] == pytest.approx((2 / 3 + 2 / 3 + 4) / 7)
    assert np.isnan(froc([s1, s2], n_scans=2, counted=[[False, False], [False]])[1])


def test_a_detection_matches_one_reference_only():
    m = greedy_match([[0, 0, 4, 4], [0, 0, 4, 4]], [0.9, 0.8], [[0, 0, 4, 4]], 0.1)
    assert m.true_positive.tolist() == [True, False] and m.found.tolist() == [True]


@pytest.mark.parametrize("fault,message", [
    ("spacing", "case a: reference spacing (1.0, 1.0, 1.0) and prediction spacing (1.0, 1.0, 2.0) differ"),
    ("missing_pred", "case b: no prediction"),
    ("missing_ref", "case c: prediction has no reference"),
    ("non_binary", "case a: prediction is not binary"),
    ("no_npz", "case a: "),
    ("npz_without_probabilities", "no 'probabilities' array"),
    ("corrupt_npz", "unreadable .npz"),
    ("one_channel", "expected (classes >= 2"),
])
def test_bad_inputs_name_the_case(tmp_path, capsys, fault, message):
    ref, pred = _folders(tmp_path)
    args = ["-ref", ref, "-pred", pred]
    if fault == "spacing":
        _write(pred, "a", _hand_case()[1], spacing=(1.0, 1.0, 2.0))
    elif fault == "missing_pred":
        os.remove(os.path.join(pred, "b.nii.gz"))
    elif fault == "missing_ref":
        _write(pred, "c", np.zeros(SHAPE, bool))
    elif fault == "non_binary":
        _write(pred, "a", _hand_case()[1].astype(np.uint8) * 2)
    else:
        npz = os.path.join(pred, "a.npz")
        os.remove(npz)
        if fault == "npz_without_probabilities":
            np.savez(npz, something=np.zeros(3))
        elif fault == "corrupt_npz":
            open(npz, "wb").write(b"PK\x03\x04 broken")
        elif fault == "one_channel":
            np.savez(npz, probabilities=np.zeros((1,) + SHAPE, np.float32))
        args.append("--probs")
    assert evaluate_main(args) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert not os.path.exists(os.path.join(pred, "summary.json"))


def test_output_that_is_a_file_is_refused(tmp_path, capsys):
    ref, pred = _folders(tmp_path)
    existing = tmp_path / "summary.txt"
    existing.write_text("keep me")
    assert evaluate_main(["-ref", ref, "-pred", pred, "-o", str(existing)]) == 1
    assert "is a file" in capsys.readouterr().err and existing.read_text() == "keep me"

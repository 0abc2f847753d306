import csv
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from cosam_nn.evaluation.report import main as report_main, n_category

SPACING_XYZ = (0.8, 0.5, 2.0)       # x, y, z in mm: anisotropic
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # in-plane rotation by 90 degrees
ORIGIN = (10.0, 20.0, 30.0)
SHAPE = (12, 60, 60)  # z, y, x


def _image(array, dtype=np.int16):
    img = sitk.GetImageFromArray(array.astype(dtype))
    img.SetSpacing(SPACING_XYZ)
    img.SetDirection(DIRECTION)
    img.SetOrigin(ORIGIN)
    return img


def _ellipsoid(centre_zyx, semi_mm_zyx):
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    sz, sy, sx = SPACING_XYZ[::-1]
    cz, cy, cx = centre_zyx
    az, ay, ax = semi_mm_zyx
    return ((z - cz) * sz / az) ** 2 + ((y - cy) * sy / ay) ** 2 + ((x - cx) * sx / ax) ** 2 <= 1


def _case(tmp_path):
    seg = np.zeros(SHAPE, bool)
    big = _ellipsoid((5, 20, 20), (4.0, 4.0, 8.0))     # 16 mm across x, 8 mm across y
    small = _ellipsoid((5, 45, 45), (2.0, 2.0, 2.0))
    third = _ellipsoid((9, 45, 10), (2.0, 2.5, 2.5))
    seg |= big | small | third
    probs = np.zeros((2,) + SHAPE, np.float32)
    probs[1][big], probs[1][small], probs[1][third] = 0.9, 0.4, 0.7
    probs[0] = 1 - probs[1]
    sitk.WriteImage(_image(np.zeros(SHAPE)), str(tmp_path / "img_0000.nii.gz"))
    sitk.WriteImage(_image(seg, np.uint8), str(tmp_path / "img.nii.gz"))
    np.savez(tmp_path / "img.npz", probabilities=probs)
    return big


def test_node_table_world_coordinates_diameters_and_n_category(tmp_path, capsys):
    big = _case(tmp_path)
    out = tmp_path / "report.json"
    assert report_main([str(tmp_path / "img_0000.nii.gz"), str(tmp_path / "img.nii.gz"),
                        "--probs", str(tmp_path / "img.npz"), "-o", str(out)]) == 0
    r = json.load(open(out))
    nodes = sorted(r["nodes"], key=lambda n: -n["voxels"])
    first = nodes[0]
    # on the central axial slice the ellipse is 16 mm across x and 8 mm across y; measured on the
    # voxels' extents, a diameter is about one voxel (0.8 mm in x, 0.5 mm in y) longer, the long one
    # a little more as it may run corner to corner of the end rows
    assert 16.0 <= first["long_axis_mm"] <= 16.9
    assert 8.0 <= first["short_axis_mm"] <= 8.6
    voxel_mm3 = np.prod(SPACING_XYZ)
    assert first["voxels"] == int(big.sum()) and first["volume_mm3"] == pytest.approx(big.sum() * voxel_mm3, abs=0.01)
    assert first["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 4 * 4 * 8, rel=0.15)
    # world = origin + direction . (spacing * index), index (x, y, z) = (20, 20, 5)
    d = np.array(DIRECTION).reshape(3, 3)
    expected = np.array(ORIGIN) + d @ (np.array(SPACING_XYZ) * np.array([20, 20, 5]))
    np.testing.assert_allclose(first["centroid_world_mm_xyz"], expected, atol=0.02)
    assert first["centroid_voxel_zyx"] == [5.0, 20.0, 20.0]
    assert first["confidence"] == pytest.approx(0.9) and first["meets_short_axis"] is True
    # confidences 0.9, 0.7, 0.4 -> two nodes at >= 0.5 -> N1b
    assert r["nodes_at_or_above_threshold"] == 2 and r["n_category"] == "N1b"
    assert "not a diagnosis" in r["n_category_note"]
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert len(rows) == 3 and rows[0]["case"] == "img"
    assert "N1b" in capsys.readouterr().out


def test_folders_and_empty_case(tmp_path):
    _case(tmp_path)
    images, preds = tmp_path / "images", tmp_path / "preds"
    images.mkdir()
    preds.mkdir()
    os.replace(tmp_path / "img_0000.nii.gz", images / "img_0000.nii.gz")
    os.replace(tmp_path / "img.nii.gz", preds / "img.nii.gz")
    os.replace(tmp_path / "img.npz", preds / "img.npz")
    sitk.WriteImage(_image(np.zeros(SHAPE)), str(images / "empty_0000.nii.gz"))
    sitk.WriteImage(_image(np.zeros(SHAPE), np.uint8), str(preds / "empty.nii.gz"))
    assert report_main([str(images), str(preds), "-o", str(tmp_path / "all.json"), "--threshold", "0.3",
                        "--plots", str(tmp_path / "pics")]) == 0
    assert sorted(os.listdir(tmp_path / "pics")) == ["img_node1.png", "img_node2.png", "img_node3.png"]
    reports = {r["case"]: r for r in json.load(open(tmp_path / "all.json"))}
    assert reports["empty"]["nodes"] == [] and reports["empty"]["n_category"] == "N0"
    assert reports["img"]["n_category"] == "N1b"  # 3 nodes >= 0.3
    volumes = sorted(n["volume_mm3"] for n in reports["img"]["nodes"])  # about 26, 41 and 494 mm^3
    assert report_main([str(images), str(preds), "-o", str(tmp_path / "v.json"), "--threshold", "0.3",
                        "--min-volume", str(volumes[0] + 1)]) == 0
    assert {r["case"]: r for r in json.load(open(tmp_path / "v.json"))}["img"]["nodes_at_or_above_threshold"] == 2


@pytest.mark.parametrize("count,category", [(0, "N0"), (1, "N1a"), (2, "N1b"), (3, "N1b"), (4, "N2a"),
                                            (6, "N2a"), (7, "N2b"), (12, "N2b")])
def test_n_category_boundaries(count, category):
    assert n_category(count) == category


def test_bad_inputs(tmp_path, capsys):
    _case(tmp_path)
    sitk.WriteImage(_image(np.full(SHAPE, 2), np.uint8), str(tmp_path / "bad.nii.gz"))
    assert report_main([str(tmp_path / "img_0000.nii.gz"), str(tmp_path / "bad.nii.gz"), "-o", str(tmp_path / "r.json")]) == 1
    assert "bad.nii.gz: prediction is not binary" in capsys.readouterr().err
    small = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8))
    sitk.WriteImage(small, str(tmp_path / "small.nii.gz"))
    assert report_main([str(tmp_path / "img_0000.nii.gz"), str(tmp_path / "small.nii.gz"), "-o", str(tmp_path / "r.json")]) == 1
    assert "does not match" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r.json")


def test_bad_probabilities_are_one_line_and_a_folder_output_takes_the_case_name(tmp_path, capsys):
    _case(tmp_path)
    args = [str(tmp_path / "img_0000.nii.gz"), str(tmp_path / "img.nii.gz"), "--probs", str(tmp_path / "p.npz")]
    for content, message in ((None, "not found"), (b"PK\x03\x04 broken", "unreadable .npz"), ("keys", "no 'probabilities'")):
        if isinstance(content, bytes):
            (tmp_path / "p.npz").write_bytes(content)
        elif content == "keys":
            np.savez(tmp_path / "p.npz", other=np.zeros(2))
        assert report_main(args + ["-o", str(tmp_path / "r.json")]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    out = tmp_path / "reports"
    out.mkdir()
    assert report_main([str(tmp_path / "img_0000.nii.gz"), str(tmp_path / "img.nii.gz"), "-o", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["img.csv", "img.json"]


def test_instances_and_detections_keep_geometry_numbering_and_boxes(tmp_path):
    import json

    _case(tmp_path)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in-plane
    for name in ("img_0000.nii.gz", "img.nii.gz"):
        im = sitk.ReadImage(str(tmp_path / name))
        im.SetDirection(direction)
        im.SetOrigin((5.0, -7.0, 2.0))
        sitk.WriteImage(im, str(tmp_path / name))
    out = tmp_path / "inst"
    assert report_main([str(tmp_path / "img_0000.nii.gz"), str(tmp_path / "img.nii.gz"), "--probs",
                        str(tmp_path / "img.npz"), "-o", str(tmp_path / "r.json"), "--instances", str(out)]) == 0
    report = json.load(open(tmp_path / "r.json"))
    inst_img = sitk.ReadImage(str(out / "img_instances.nii.gz"))
    image = sitk.ReadImage(str(tmp_path / "img_0000.nii.gz"))
    assert inst_img.GetSize() == image.GetSize() and inst_img.GetDirection() == image.GetDirection()
    np.testing.assert_allclose(inst_img.GetOrigin(), image.GetOrigin())
    inst = sitk.GetArrayFromImage(inst_img)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "img.nii.gz"))) > 0
    assert np.array_equal(inst > 0, seg) and sorted(np.unique(inst))[1:] == [n["node"] for n in report["nodes"]]
    dets = json.load(open(out / "img_detections.json"))
    assert "nnDetection" in dets["box_convention"] and len(dets["detections"]) == len(report["nodes"])
    for det, node in zip(dets["detections"], report["nodes"]):
        voxels = np.argwhere(inst == det["node"])
        lo, hi = voxels.min(0), voxels.max(0) + 1
        assert det["box_voxel_zyx"] == {"lo": lo.tolist(), "hi": hi.tolist()}
        assert det["box_nndetection"] == [lo[0] - 1, lo[1] - 1, hi[0], hi[1], lo[2] - 1, hi[2]]
        assert det["score"] == node["confidence"]
        wmin, wmax = np.array(det["box_world_mm"]["min_xyz"]), np.array(det["box_world_mm"]["max_xyz"])
        for z, y, x in voxels[:: max(1, len(voxels) // 50)]:
            p = np.array(inst_img.TransformIndexToPhysicalPoint((int(x), int(y), int(z))))
            assert np.all(p >= wmin - 1e-6) and np.all(p <= wmax + 1e-6)

import hashlib
import json
import os

import numpy as np
import pytest
from scipy import ndimage

from cosam_nn.data import meply_layout
from cosam_nn.data.synthetic import generate, main as synth_main

SHAPE, SPACING = (24, 96, 96), (1.25, 0.7, 0.7)


def _hashes(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert synth_main([str(tmp_path / name), "--cases", "3", "--seed", str(seed),
                           "--shape", *map(str, SHAPE)]) == 0
    a, b, c = (_hashes(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 8  # 3 images, 3 labels, csv, json
    assert a["npz/synth0000.npz"] != c["npz/synth0000.npz"]


def test_nodes_sizes_labels_and_index_agree(tmp_path):
    out = str(tmp_path / "syn")
    rows = generate(out, 8, seed=1, shape=(40, 128, 128), spacing=SPACING, log=lambda *_: None)
    assert len(rows) >= 8, "several metastatic nodes per case on average"
    voxel_mm3 = float(np.prod(SPACING))
    by_case = {}
    for row in meply_layout.read_prln_targets(out):
        by_case.setdefault(row["case"], []).append(row)
    diameters, under_1600 = [], []
    for case in meply_layout.prln_cases(out):
        img, spacing, label = meply_layout.read_prln_case(out, case)
        assert img.dtype == np.int16 and img.shape == label.shape == (40, 128, 128)
        np.testing.assert_allclose(spacing, SPACING)
        assert set(np.unique(label)) <= {0, 1}
        # every labelled voxel belongs to a csv row's box, and the counts add up
        case_rows = by_case.get(case, [])
        assert sum(r["volume"] for r in case_rows) == int(label.sum())
        for r in case_rows:
            box = label[r["z1"]:r["z2"], r["y1"]:r["y2"], r["x1"]:r["x2"]]
            assert box.sum() >= r["volume"] > 0
            d = 2 * (3 * r["volume"] * voxel_mm3 / (4 * np.pi)) ** (1 / 3)  # equivalent-sphere diameter
            diameters.append(d)
            under_1600.append(r["volume"] * voxel_mm3 / 0.625 ** 3 < 1600)
        if label.any():
            # nodes are soft tissue of low contrast, not fat, gas or bone
            assert 0 < img[label > 0].mean() < 100
            # body CT: gas, fat, soft tissue and bone all present
            assert img.min() < -800 and img.max() > 500
            assert np.median(img[(img > -200) & (img < 0)]) < -50
    diameters = np.array(diameters)
    assert diameters.min() >= 2.0 and diameters.max() <= 16.0, diameters
    assert np.mean(under_1600) > 0.6, "most nodes under 1600 voxels at 0.625 mm"


def test_split_lists_every_case_once(tmp_path):
    out = str(tmp_path / "syn")
    rows = generate(out, 10, seed=2, shape=SHAPE, spacing=SPACING, log=lambda *_: None)
    data = json.load(open(os.path.join(out, "PRLN", "annotations.json")))
    listed = sum(data.values(), [])
    assert sorted(listed) == meply_layout.prln_cases(out)
    with_nodes = {r["case"] for r in rows}
    assert set(data["train_both"] + data["test_both"]) == with_nodes
    assert len(data["test_normal"] + data["test_both"]) == 2  # round(10 * 55 / 269)


def test_slab_layout_is_h_w_d(tmp_path):
    out = str(tmp_path / "slabs")
    generate(out, 2, seed=0, fmt="slabs", shape=(15, 64, 80), log=lambda *_: None)
    with np.load(os.path.join(out, "synth0000.npz")) as npz:
        assert npz["img"].shape == (64, 80, 15) and npz["label"].shape == (64, 80, 15)
    img, label = meply_layout.read_slab(os.path.join(out, "synth0000.npz"))
    assert img.shape == (15, 64, 80)
    # labelled voxels form compact blobs: each component fits a 15 mm node at 0.625 mm
    lab, n = ndimage.label(label)
    for sl in ndimage.find_objects(lab):
        assert max(s.stop - s.start for s in sl) * 0.625 <= 15 * 1.6


def test_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "syn"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SystemExit) as e:
        synth_main([str(out), "--cases", "1"])
    assert e.value.code == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "keep.txt").exists()


def test_test_split_size_and_node_free_share(tmp_path):
    out = str(tmp_path / "syn")
    assert synth_main([out, "--cases", "12", "--seed", "3", "--shape", *map(str, SHAPE), "--test-cases", "5",
                       "--test-node-free", "0.4"]) == 0
    splits = json.load(open(os.path.join(out, meply_layout.PRLN_DIR, meply_layout.ANNOTATIONS_JSON)))
    test = splits["test_normal"] + splits["test_both"]
    assert len(test) == 5 and len(splits["train_normal"] + splits["train_both"]) == 7
    assert len(splits["test_normal"]) >= 2  # 40% of 5 made node-free, more if a case drew no node
    for case in splits["test_normal"]:
        assert not meply_layout.read_prln_case(out, case)[2].any()


@pytest.mark.parametrize("args", [["--test-cases", "4"], ["--test-cases", "0"], ["--test-node-free", "1.5"]])
def test_bad_test_split_options_are_refused(tmp_path, args):
    with pytest.raises(SystemExit):
        synth_main([str(tmp_path / "syn"), "--cases", "4", *args])
    assert not os.path.exists(tmp_path / "syn")


def test_benign_nodes_come_with_the_same_image_and_apart_from_the_metastatic_ones():
    """with_benign changes nothing drawn: same image, same metastatic nodes; the benign nodes (3-9 per
    case, unlabelled) touch no metastatic voxel and are smaller than 6 mm across."""
    from cosam_nn.data.synthetic import make_case
    img, instances = make_case(SHAPE, SPACING, np.random.default_rng(5))
    img2, instances2, benign = make_case(SHAPE, SPACING, np.random.default_rng(5), with_benign=True)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(instances, instances2)
    ids = [i for i in np.unique(benign) if i]
    assert 1 <= len(ids) <= 9 and not (benign.astype(bool) & instances.astype(bool)).any()
    for i in ids:
        extent = [s.stop - s.start for s in ndimage.find_objects((benign == i).astype(np.uint8))[0]]
        assert max(e * s for e, s in zip(extent, SPACING)) <= 6.0 + 2 * max(SPACING)

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from cosam_nn.data import meply_layout
from cosam_nn.dataset_conversion.Dataset501_Meply import convert, main as convert_main
from cosam_nn.data.synthetic import generate

SHAPE, SPACING = (16, 48, 48), (1.25, 0.7, 0.7)


def _quiet(*_):
    pass


def _dataset(env, name="Dataset501_Meply"):
    return os.path.join(env["nnUNet_raw"], name)


def _read(path):
    img = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(img), img


def _raw_left_clean(env):
    """After a failed conversion nnUNet_raw holds neither the dataset nor a temporary folder (only the
    hidden lock file of the dataset id, which the next conversion takes)."""
    root = env["nnUNet_raw"]
    return not os.path.exists(root) or [f for f in os.listdir(root) if not f.endswith(".lock")] == []


def test_prln_layout_round_trip(tmp_path, nnunet_env):
    src = str(tmp_path / "syn")
    generate(src, 5, seed=4, shape=SHAPE, spacing=SPACING, log=_quiet)
    out = convert(src, 501, log=_quiet)
    split = json.load(open(os.path.join(out, "split.json")))
    annotations = json.load(open(os.path.join(src, "PRLN", "annotations.json")))
    assert sorted(split["test"]) == sorted(annotations["test_normal"] + annotations["test_both"])
    ds = json.load(open(os.path.join(out, "dataset.json")))
    assert ds["channel_names"] == {"0": "CT"} and ds["labels"] == {"background": 0, "lymph_node": 1}
    assert ds["numTraining"] == len(split["train"]) and ds["file_ending"] == ".nii.gz"
    for case in meply_layout.prln_cases(src):
        img, spacing, label = meply_layout.read_prln_case(src, case)
        part = "Ts" if case in split["test"] else "Tr"
        arr, image = _read(os.path.join(out, f"images{part}", f"{case}_0000.nii.gz"))
        lab, label_image = _read(os.path.join(out, f"labels{part}", f"{case}.nii.gz"))
        assert image.GetPixelID() == sitk.sitkInt16
        np.testing.assert_array_equal(arr, img)
        np.testing.assert_array_equal(lab, label)
        np.testing.assert_allclose(image.GetSpacing(), spacing[::-1], rtol=1e-6)
        assert label_image.GetSpacing() == image.GetSpacing()


def test_slab_layout_round_trip(tmp_path, nnunet_env):
    src = str(tmp_path / "slabs")
    generate(src, 3, seed=5, fmt="slabs", shape=(15, 40, 40), log=_quiet)
    assert convert_main([src, "-d", "502", "-n", "Slabs", "--spacing", "2.5", "0.8", "0.8"]) == 0
    out = _dataset(nnunet_env, "Dataset502_Slabs")
    split = json.load(open(os.path.join(out, "split.json")))
    assert len(split["test"]) == 1 and "seeded" in split["source"]  # round(3 * 55 / 269) -> at least 1
    for case in ("synth0000", "synth0001", "synth0002"):
        img, label = meply_layout.read_slab(os.path.join(src, case + ".npz"))
        part = "Ts" if case in split["test"] else "Tr"
        arr, image = _read(os.path.join(out, f"images{part}", f"{case}_0000.nii.gz"))
        np.testing.assert_array_equal(arr, img)
        np.testing.assert_array_equal(_read(os.path.join(out, f"labels{part}", f"{case}.nii.gz"))[0], label)
        np.testing.assert_allclose(image.GetSpacing(), (0.8, 0.8, 2.5), rtol=1e-6)


def _volume(seed, shape=(8, 20, 24), spacing=(0.8, 0.7, 2.0), origin=(10.0, -5.0, 3.0)):
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 1000, size=shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[2:5, 5:9, 6:10] = 1
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in-plane
    img, label = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(lab)
    for im in (img, label):
        im.SetSpacing(spacing)
        im.SetOrigin(origin)
        im.SetDirection(direction)
    return img, label


def _write_dicom_series(img, folder):
    os.makedirs(folder)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = img.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    for z in range(img.GetDepth()):
        s = img[:, :, z]
        position = img.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series_uid), ("0020|000d", series_uid + ".2"),
                           ("0020|0013", str(z + 1)), ("0028|0030", f"{img.GetSpacing()[1]}\\{img.GetSpacing()[0]}"),
                           ("0020|0037", "\\".join(map(str, direction[0:7:3] + direction[1:8:3]))),
                           ("0020|0032", "\\".join(map(str, position))), ("0018|0050", str(img.GetSpacing()[2])),
                           ("0008|0018", f"{series_uid}.3.{z + 1}")):
            s.SetMetaData(tag, value)
        writer.SetFileName(os.path.join(folder, f"slice{z:03d}.dcm"))
        writer.Execute(s)


def test_image_folders_in_every_format_keep_geometry(tmp_path, nnunet_env):
    src = tmp_path / "pairs"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    cases = {}
    for i, ext in enumerate((".nii.gz", ".nrrd", ".mha", "dicom")):
        img, label = _volume(i)
        name = f"case{i}"
        cases[name] = (img, label)
        if ext == "dicom":
            _write_dicom_series(img, str(src / "images" / name))
            sitk.WriteImage(label, str(src / "labels" / f"{name}.nii.gz"))
        else:
            sitk.WriteImage(img, str(src / "images" / f"{name}{ext}"))
            sitk.WriteImage(label, str(src / "labels" / f"{name}{ext}"))
    out = convert(str(src), 503, name="Pairs", log=_quiet)
    split = json.load(open(os.path.join(out, "split.json")))
    for name, (img, label) in cases.items():
        part = "Ts" if name in split["test"] else "Tr"
        arr, image = _read(os.path.join(out, f"images{part}", f"{name}_0000.nii.gz"))
        np.testing.assert_array_equal(arr, sitk.GetArrayFromImage(img))
        np.testing.assert_allclose(image.GetSpacing(), img.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), img.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), img.GetDirection(), atol=1e-5)
        lab, _ = _read(os.path.join(out, f"labels{part}", f"{name}.nii.gz"))
        np.testing.assert_array_equal(lab, sitk.GetArrayFromImage(label))


def _pair_folder(tmp_path, label_fn=None, image_fn=None, names=("a", "b", "c"), ext=".nii.gz"):
    src = tmp_path / "pairs"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for i, name in enumerate(names):
        img, label = _volume(i)
        if name == "bad":
            img, label = (image_fn or (lambda x: x))(img), (label_fn or (lambda x: x))(label)
        sitk.WriteImage(img, str(src / "images" / f"{name}{ext}"))
        sitk.WriteImage(label, str(src / "labels" / f"{name}{ext}"))
    return src


def _with_nan(img):
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[1, 2, 3] = np.nan
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _values(label, values):
    arr = sitk.GetArrayFromImage(label).astype(np.int16)
    arr[0, 0, :len(values)] = values
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(label)
    return out


def _resized(label):
    return label[:, :-1, :]


def _respaced(label):
    out = sitk.Image(label)
    out.SetSpacing((0.8, 0.7, 3.0))
    return out


@pytest.mark.parametrize("label_fn,image_fn,message", [
    (_resized, None, "size"),
    (_respaced, None, "spacing"),
    (lambda lab: _values(lab, [-1]), None, "negative"),
    (None, _with_nan, "NaN"),
])
def test_bad_case_is_named_and_nothing_is_written(tmp_path, nnunet_env, capsys, label_fn, image_fn, message):
    # MetaImage keeps NaN voxels (ITK's NIfTI reader does not)
    src = _pair_folder(tmp_path, label_fn, image_fn, names=("a", "bad", "c"), ext=".mha")
    assert convert_main([str(src), "-d", "504"]) == 1
    err = capsys.readouterr().err
    assert "case bad" in err and message in err and err.count("\n") == 1
    assert _raw_left_clean(nnunet_env)


def test_instance_map_is_binarised_with_a_warning(tmp_path, nnunet_env, capsys):
    src = _pair_folder(tmp_path, label_fn=lambda lab: _values(lab, [2, 3]), names=("a", "bad", "c"))
    out = convert(str(src), 505, log=_quiet)
    assert "case bad" in capsys.readouterr().err
    split = json.load(open(os.path.join(out, "split.json")))
    part = "Ts" if "bad" in split["test"] else "Tr"
    lab, _ = _read(os.path.join(out, f"labels{part}", "bad.nii.gz"))
    assert set(np.unique(lab)) == {0, 1} and lab[0, 0, :2].tolist() == [1, 1]


def test_empty_unreadable_missing_and_duplicate_inputs(tmp_path, nnunet_env, capsys):
    cases = {}
    src = _pair_folder(tmp_path / "empty")
    open(src / "images" / "b.nii.gz", "w").close()
    cases["empty"] = (src, "empty")
    src = _pair_folder(tmp_path / "garbage")
    (src / "labels" / "c.nii.gz").write_bytes(b"not an image at all")
    cases["garbage"] = (src, "unreadable")
    src = _pair_folder(tmp_path / "nolabel")
    os.remove(src / "labels" / "b.nii.gz")
    cases["nolabel"] = (src, "case b: no label")
    src = _pair_folder(tmp_path / "noimage")
    os.remove(src / "images" / "c.nii.gz")
    cases["noimage"] = (src, "case c: label c.nii.gz has no image")
    src = _pair_folder(tmp_path / "dup")
    sitk.WriteImage(_volume(9)[0], str(src / "images" / "a.mha"))
    cases["dup"] = (src, "case a: duplicate")
    for what, (folder, message) in cases.items():
        assert convert_main([str(folder), "-d", "506"]) == 1, what
        err = capsys.readouterr().err
        assert message in err, (what, err)
        assert _raw_left_clean(nnunet_env), what


def test_prln_missing_label_and_unknown_split_case(tmp_path, nnunet_env, capsys):
    src = str(tmp_path / "syn")
    generate(src, 3, seed=4, shape=SHAPE, spacing=SPACING, log=_quiet)
    os.remove(os.path.join(src, "clean_labels", "synth0001.npz"))
    assert convert_main([src, "-d", "507"]) == 1
    assert "case synth0001: no label file" in capsys.readouterr().err
    generate(src + "2", 3, seed=4, shape=SHAPE, spacing=SPACING, log=_quiet)
    os.remove(os.path.join(src + "2", "npz", "synth0002.npz"))
    assert convert_main([src + "2", "-d", "507"]) == 1
    assert "synth0002" in capsys.readouterr().err
    assert _raw_left_clean(nnunet_env)


def test_existing_output_needs_overwrite(tmp_path, nnunet_env, capsys):
    src = _pair_folder(tmp_path)
    assert convert_main([str(src), "-d", "508"]) == 0
    marker = os.path.join(_dataset(nnunet_env, "Dataset508_Meply"), "marker")
    open(marker, "w").close()
    assert convert_main([str(src), "-d", "508"]) == 1
    assert "--overwrite" in capsys.readouterr().err and os.path.exists(marker)
    assert convert_main([str(src), "-d", "508", "--overwrite"]) == 0
    assert not os.path.exists(marker)
    assert convert_main([str(src), "-d", "508", "-n", "Other"]) == 1
    assert "already used by Dataset508_Meply" in capsys.readouterr().err


def test_missing_nnunet_raw_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert convert_main([str(_pair_folder(tmp_path)), "-d", "509"]) == 1
    assert "nnUNet_raw is not set" in capsys.readouterr().err


def _scaled(img, scale, offset=0.0):
    """A float image with the HU mapped linearly (e.g. normalised to [0, 1])."""
    arr = sitk.GetArrayFromImage(img).astype(np.float32) * scale + offset
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def test_nan_in_nifti_is_caught_although_the_reader_zeroes_it(tmp_path, nnunet_env, capsys):
    src = _pair_folder(tmp_path, image_fn=_with_nan, names=("a", "bad", "c"), ext=".nii.gz")
    assert convert_main([str(src), "-d", "511"]) == 1
    err = capsys.readouterr().err
    assert "bad.nii.gz" in err and "1 NaN" in err and err.count("\n") == 1
    assert _raw_left_clean(nnunet_env)


def test_image_that_cannot_be_hu_is_refused_unless_allowed(tmp_path, nnunet_env, capsys):
    src = _pair_folder(tmp_path, image_fn=lambda im: _scaled(im, 1 / 2000, 0.5), names=("a", "bad", "c"))
    assert convert_main([str(src), "-d", "512"]) == 1
    err = capsys.readouterr().err
    assert "case bad" in err and "Hounsfield" in err and "--allow-non-hu" in err
    assert _raw_left_clean(nnunet_env)
    assert convert_main([str(src), "-d", "512", "--allow-non-hu"]) == 0
    assert "case bad" in capsys.readouterr().err  # converted, with a warning


def test_two_dicom_series_in_one_case_folder_are_listed_not_guessed(tmp_path, nnunet_env, capsys):
    src = tmp_path / "pairs"
    (src / "labels").mkdir(parents=True)
    img, label = _volume(0)
    _write_dicom_series(img, str(src / "images" / "caseA"))
    scout = sitk.Image(img)
    scout.SetOrigin((50.0, 0.0, 0.0))
    other = str(tmp_path / "other")
    _write_dicom_series(scout, other)
    for f in os.listdir(other):  # the same files under another series UID
        path = os.path.join(other, f)
        im = sitk.ReadImage(path)
        for k in im.GetMetaDataKeys():
            if k == "0020|000e":
                im.SetMetaData(k, "1.2.826.0.1.3680043.2.1125.9")
            if k == "0008|0018":
                im.SetMetaData(k, im.GetMetaData(k) + ".9")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(src / "images" / "caseA" / ("scout_" + f)))
        writer.Execute(im)
    sitk.WriteImage(label, str(src / "labels" / "caseA.nii.gz"))
    assert convert_main([str(src), "-d", "513"]) == 1
    err = capsys.readouterr().err
    assert "caseA" in err and "2 DICOM series" in err and "1.2.826.0.1.3680043.2.1125.9" in err and "8 files" in err
    assert _raw_left_clean(nnunet_env)


def test_slab_stored_slices_first_is_refused(tmp_path, nnunet_env, capsys):
    src = tmp_path / "slabs"
    src.mkdir()
    img = np.random.default_rng(0).integers(-1000, 1000, (15, 64, 64)).astype(np.int16)
    np.savez(src / "s0.npz", img=img, label=np.zeros_like(img, np.uint8))  # (D, H, W), not (H, W, D)
    assert convert_main([str(src), "-d", "514"]) == 1
    err = capsys.readouterr().err
    assert "s0.npz" in err and "(15, 64, 64)" in err and err.count("\n") == 1


def test_bool_label_and_float16_image_convert(tmp_path, nnunet_env):
    src = str(tmp_path / "syn")
    generate(src, 2, seed=4, shape=SHAPE, spacing=SPACING, log=_quiet)
    img, spacing, label = meply_layout.read_prln_case(src, "synth0000")
    np.savez(os.path.join(src, "npz", "synth0000.npz"), img=img.astype(np.float16), spacing=spacing)
    np.savez(os.path.join(src, "clean_labels", "synth0000.npz"), label=label > 0)
    assert convert_main([src, "-d", "515"]) == 0
    out = _dataset(nnunet_env, "Dataset515_Meply")
    split = json.load(open(os.path.join(out, "split.json")))
    part = "Ts" if "synth0000" in split["test"] else "Tr"
    lab, _ = _read(os.path.join(out, f"labels{part}", "synth0000.nii.gz"))
    np.testing.assert_array_equal(lab, label > 0)
    arr, _ = _read(os.path.join(out, f"images{part}", "synth0000_0000.nii.gz"))
    np.testing.assert_array_equal(arr, np.round(img.astype(np.float16).astype(np.float32)))


@pytest.mark.parametrize("text,message", [("{not json", "unreadable"), ('{"nothing": 1}', "expected the keys"),
                                          ('{"train_both": "synth0000"}', "must be a list")])
def test_bad_annotations_json_is_one_line(tmp_path, nnunet_env, capsys, text, message):
    src = str(tmp_path / "syn")
    generate(src, 2, seed=4, shape=SHAPE, spacing=SPACING, log=_quiet)
    open(os.path.join(src, "PRLN", "annotations.json"), "w").write(text)
    assert convert_main([src, "-d", "516"]) == 1
    err = capsys.readouterr().err
    assert "annotations.json" in err and message in err and err.count("\n") == 1


def test_a_file_that_is_not_npz_is_named_without_pickle_advice(tmp_path, nnunet_env, capsys):
    src = str(tmp_path / "syn")
    generate(src, 2, seed=4, shape=SHAPE, spacing=SPACING, log=_quiet)
    open(os.path.join(src, "npz", "synth0001.npz"), "wb").write(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    assert convert_main([src, "-d", "517"]) == 1
    err = capsys.readouterr().err
    assert "synth0001.npz" in err and "not a NumPy .npz" in err and "pickle" not in err


def test_stale_temporary_folders_are_removed_and_overwrite_swaps(tmp_path, nnunet_env, capsys):
    src = _pair_folder(tmp_path)
    root = nnunet_env["nnUNet_raw"]
    dead, alive = os.path.join(root, ".Dataset518_Meply.dead"), os.path.join(root, ".Dataset518_Meply.alive")
    for folder, pid in ((dead, 2 ** 22 + 7), (alive, os.getpid())):  # a pid above Linux's maximum is never alive
        os.makedirs(folder)
        open(os.path.join(folder, ".cosam_convert_owner"), "w").write(str(pid))
    assert convert_main([str(src), "-d", "518"]) == 0
    assert "interrupted conversion" in capsys.readouterr().out
    assert not os.path.exists(dead) and os.path.exists(alive)
    os.rename(alive, alive + "x")  # out of the way of the listing below
    assert convert_main([str(src), "-d", "518", "--overwrite"]) == 0
    assert sorted(os.listdir(root)) == [".Dataset518_Meply.alivex", ".cosam_convert_518.lock", "Dataset518_Meply"]


def test_atomic_writes_honour_the_umask(tmp_path):
    from cosam_nn.data.fileio import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(str(tmp_path / "a.txt"), "x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o644


def test_split_file_names_the_test_cases_and_bad_split_files_are_one_line(tmp_path, nnunet_env, capsys):
    src = _pair_folder(tmp_path)  # cases a, b, c
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a", "c"], "test": ["b"]}))
    assert convert_main([str(src), "-d", "509", "--split", str(split)]) == 0
    ds = _dataset(nnunet_env, "Dataset509_Meply")
    assert sorted(os.listdir(os.path.join(ds, "imagesTs"))) == ["b_0000.nii.gz"]
    assert sorted(os.listdir(os.path.join(ds, "labelsTr"))) == ["a.nii.gz", "c.nii.gz"]
    written = json.load(open(os.path.join(ds, "split.json")))
    assert written["test"] == ["b"] and written["source"] == str(split)
    # the split.json a conversion wrote is itself a valid split file
    assert convert_main([str(src), "-d", "509", "--overwrite", "--split", os.path.join(ds, "split.json")]) == 0
    assert sorted(os.listdir(os.path.join(ds, "imagesTs"))) == ["b_0000.nii.gz"]
    for text, message in (("[1, 2]", "a JSON object with a 'test' list"), ('{"test": "b"}', "'test' must be a list"),
                          ('{"test": ["zz"]}', "case zz: listed in"), ("{", "unreadable split file")):
        split.write_text(text)
        assert convert_main([str(src), "-d", "510", "--split", str(split)]) == 1
        err = capsys.readouterr().err
        assert message in err and str(split) in err and err.count("\n") == 1, (text, err)
    assert not os.path.exists(_dataset(nnunet_env, "Dataset510_Meply"))

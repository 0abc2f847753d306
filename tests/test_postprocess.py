import os

import numpy as np
import SimpleITK as sitk

from cosam_nn.evaluation.postprocess import drop_small_components, main


def _write(path, array, spacing):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -5.0, 3.0))
    sitk.WriteImage(image, str(path))
    return image


def _segmentation():
    seg = np.zeros((10, 20, 20), np.uint8)
    seg[2:6, 2:8, 2:8] = 1      # 144 voxels
    seg[8, 15:17, 15:17] = 1    # 4 voxels
    seg[5, 15, 2] = 1           # 1 voxel
    return seg


def test_components_under_the_volume_are_dropped_in_the_images_own_spacing():
    seg = _segmentation()
    kept, dropped = drop_small_components(seg, (1.0, 1.0, 1.0), 5.0)  # 4 mm3 and 1 mm3 go
    assert dropped == 2 and kept.sum() == 144 and kept[2:6, 2:8, 2:8].all()
    kept, dropped = drop_small_components(seg, (2.0, 2.0, 2.0), 5.0)  # 32 mm3 and 8 mm3 stay
    assert dropped == 0 and np.array_equal(kept, seg)
    kept, dropped = drop_small_components(seg, (0.5, 0.5, 0.5), 20.0)  # 144 x 0.125 = 18 mm3: all go
    assert dropped == 3 and kept.sum() == 0
    assert seg.sum() == 149  # the input is not changed


def test_folder_keeps_geometry_and_copies_the_rest_unchanged(tmp_path, capsys):
    pred, out = tmp_path / "pred", tmp_path / "out"
    pred.mkdir()
    image = _write(pred / "case_1.nii.gz", _segmentation(), (1.0, 1.0, 1.0))
    np.savez_compressed(pred / "case_1.npz", probabilities=np.zeros((2, 10, 20, 20), np.float16))
    (pred / "plans.json").write_text('{"x": 1}')
    assert main(["-i", str(pred), "-o", str(out)]) == 0
    assert "2 component(s) dropped" in capsys.readouterr().out
    result = sitk.ReadImage(str(out / "case_1.nii.gz"))
    assert sitk.GetArrayFromImage(result).sum() == 144
    assert result.GetSpacing() == image.GetSpacing() and result.GetOrigin() == image.GetOrigin()
    assert (out / "plans.json").read_text() == '{"x": 1}'
    assert (out / "case_1.npz").read_bytes() == (pred / "case_1.npz").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["out", "pred"]  # no temporary folder left


def test_bad_input_is_one_line_and_leaves_the_output_untouched(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    out = tmp_path / "out"
    cases = [([str(tmp_path / "absent")], "prediction folder not found"),
             ([str(pred)], "no segmentations"),
             ([str(pred), "-o", str(pred)], "must differ")]
    for args, message in cases:
        argv = ["-i", args[0], "-o", args[2] if len(args) > 1 else str(out)]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    _write(pred / "a.nii.gz", _segmentation(), (1.0, 1.0, 1.0))
    (pred / "b.nii.gz").write_bytes(b"not an image")
    assert main(["-i", str(pred), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "b.nii.gz: unreadable" in err and err.count("\n") == 1
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["pred"]

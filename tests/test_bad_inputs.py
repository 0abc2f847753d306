"""The bad-input catalogue (docs/data.md): images, geometry, probabilities, options, paths, model files,
splits and JSON output, each tried as a new user or an attacker would. Each gets one line naming the
file or option, exit 1 (or argparse's 2), and no half-written output; never a silent wrong result.
The DICOM folders are in test_bad_dicom.py."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import run_cli
from cosam_nn.check_model import main as check_main
from cosam_nn.data.ct_image import ImageError, check_ct, read_image
from cosam_nn.evaluation.evaluate import main as evaluate_main
from cosam_nn.evaluation.postprocess import main as postprocess_main
from cosam_nn.evaluation.report import main as report_main


def _image(path, array, spacing=(0.7, 0.7, 1.25), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return str(path)


def _ct(shape=(10, 24, 24), seed=0):
    return np.random.default_rng(seed).integers(-300, 300, shape).astype(np.int16)


def _one_line(err, *fragments):
    err = err.strip()
    assert len(err.splitlines()) == 1 and all(f in err for f in fragments), err


# ---- images ----------------------------------------------------------------------------------------
def _nifti_with_zooms(path, zooms):
    """A NIfTI file whose header holds these voxel sizes as written (nibabel refuses to set some)."""
    import nibabel
    nii = nibabel.Nifti1Image(_ct(), np.diag([0.7, 0.7, 1.25, 1.0]))
    nii.header["pixdim"][1:4] = zooms
    nibabel.save(nii, str(path))
    return str(path)


def _text(path, text):
    path.write_text(text)
    return str(path)


IMAGE_FAULTS = [
    ("zero slice spacing", lambda d: _nifti_with_zooms(d / "a.nii.gz", (0.7, 0.7, 0.0)), "zero, negative"),
    ("negative spacing", lambda d: _nifti_with_zooms(d / "a.nii.gz", (0.7, -0.7, 1.25)), "zero, negative"),
    ("NaN voxels", lambda d: _image(d / "a.nii.gz", np.where(_ct() > 250, np.nan, _ct()).astype(np.float32)),
     "NaN or infinite"),
    ("infinite voxels", lambda d: _image(d / "a.nii.gz", np.where(_ct() > 250, np.inf, _ct()).astype(np.float32)),
     "NaN or infinite"),
    ("empty file", lambda d: (d / "a.nii.gz").write_bytes(b"") or str(d / "a.nii.gz"), "file is empty"),
    ("truncated file", lambda d: _truncated(d), "truncated or corrupt"),
    ("text named .nii.gz", lambda d: _text(d / "a.nii.gz", "hello"), "unreadable image"),
    ("missing file", lambda d: str(d / "absent.nii.gz"), "no such file"),
]


def _truncated(folder):
    path = _image(folder / "full.nii.gz", _ct())
    data = open(path, "rb").read()
    (folder / "a.nii.gz").write_bytes(data[: len(data) // 2])
    return str(folder / "a.nii.gz")


@pytest.mark.parametrize("name, make, message", IMAGE_FAULTS, ids=[f[0] for f in IMAGE_FAULTS])
def test_an_image_that_would_be_read_wrong_is_refused(tmp_path, name, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=message) as caught:
        read_image(path)
    assert path in str(caught.value) and len(str(caught.value).splitlines()) == 1


CT_FAULTS = [
    ("2D image", sitk.GetImageFromArray(np.zeros((24, 24), np.int16)), "3D volume"),
    ("two channels", sitk.GetImageFromArray(np.zeros((4, 24, 24, 2), np.int16), isVector=True), "one channel"),
    ("beyond int16", sitk.GetImageFromArray(np.full((4, 8, 8), 40000.0, np.float32)), "do not fit int16"),
    ("normalised values", sitk.GetImageFromArray(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)),
     "cannot be CT in Hounsfield units"),
    ("a mask, not CT", sitk.GetImageFromArray((np.random.default_rng(0).random((4, 8, 8)) > 0.5).astype(np.uint8)),
     "cannot be CT in Hounsfield units"),
]


@pytest.mark.parametrize("name, image, message", CT_FAULTS, ids=[f[0] for f in CT_FAULTS])
def test_an_image_that_is_not_ct_in_hu_is_refused(name, image, message):
    with pytest.raises(ImageError, match=message):
        check_ct("case x", image, warn=lambda m: None)


# ---- geometry: a grid one slice off, far from the scanner's zero -------------------------------------
FAR = (1200.0, -3400.0, 9000.0)


def _shifted_pair(tmp_path, shift_mm):
    """An image and a prediction 1 voxel apart in z (1.25 mm), both far from the origin."""
    image = _image(tmp_path / "c_0000.nii.gz", _ct(), origin=FAR)
    mask = np.zeros((10, 24, 24), np.uint8)
    mask[3:6, 8:14, 8:14] = 1
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    pred = _image(pred_dir / "c.nii.gz", mask, origin=(FAR[0], FAR[1], FAR[2] + shift_mm))
    return image, pred


@pytest.mark.parametrize("shift, accepted", [(1.25, False), (0.3, False), (0.01, True)])
def test_a_prediction_a_slice_off_far_from_the_origin_is_refused_by_the_report(tmp_path, capsys, shift, accepted):
    image, pred = _shifted_pair(tmp_path, shift)
    code = report_main([image, pred, "-o", str(tmp_path / "r.json")])
    if accepted:
        assert code == 0
    else:
        assert code == 1
        _one_line(capsys.readouterr().err, "does not match the image", "origin")
        assert not (tmp_path / "r.json").exists()


def test_a_prediction_a_slice_off_far_from_the_origin_is_refused_by_the_evaluation(tmp_path, capsys):
    _, pred = _shifted_pair(tmp_path, 1.25)
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    mask = np.zeros((10, 24, 24), np.uint8)
    mask[3:6, 8:14, 8:14] = 1
    _image(ref_dir / "c.nii.gz", mask, origin=FAR)
    assert evaluate_main(["-ref", str(ref_dir), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "ev")]) == 1
    _one_line(capsys.readouterr().err, "origin")
    assert not (tmp_path / "ev").exists()


def test_the_converter_refuses_a_label_a_slice_off_far_from_the_origin(tmp_path, nnunet_env):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "labels").mkdir()
    _image(source / "images" / "p1.nii.gz", _ct(), origin=FAR)
    _image(source / "labels" / "p1.nii.gz", np.zeros((10, 24, 24), np.uint8), origin=(FAR[0], FAR[1], FAR[2] + 1.25))
    proc = run_cli(["cosam_convert_meply", str(source), "-d", "61"], nnunet_env, check=False)
    assert proc.returncode == 1
    _one_line(proc.stderr, "case p1", "origin")


# ---- probabilities ----------------------------------------------------------------------------------
def _case_with_probs(tmp_path, probs):
    image = _image(tmp_path / "c_0000.nii.gz", _ct())
    mask = np.zeros((10, 24, 24), np.uint8)
    mask[3:6, 8:14, 8:14] = 1
    (tmp_path / "pred").mkdir(exist_ok=True)
    pred = _image(tmp_path / "pred" / "c.nii.gz", mask)
    npz = tmp_path / "pred" / "c.npz"
    np.savez(npz, **probs(mask))
    return image, pred, str(npz)


def _stack(foreground):
    return {"probabilities": np.stack([1 - foreground, foreground])}


PROBABILITY_FAULTS = [
    ("NaN", lambda m: _stack(np.where(m > 0, np.nan, 0.1).astype(np.float32)), "NaN or infinite probabilities"),
    ("above 1", lambda m: _stack(np.where(m > 0, 1.7, 0.1).astype(np.float32)), "outside 0..1"),
    ("negative", lambda m: _stack(np.where(m > 0, 0.9, -0.4).astype(np.float32)), "outside 0..1"),
    ("no probabilities key", lambda m: {"softmax": np.zeros((2,) + m.shape)}, "no 'probabilities' array"),
    ("wrong shape", lambda m: _stack(np.zeros((10, 24, 23), np.float32)), "shape"),
    ("one channel", lambda m: {"probabilities": np.zeros((1,) + m.shape, np.float32)}, "expected (classes >= 2"),
    ("text", lambda m: {"probabilities": np.full((2,) + m.shape, "x")}, "expected numbers"),
]


@pytest.mark.parametrize("name, probs, message", PROBABILITY_FAULTS, ids=[f[0] for f in PROBABILITY_FAULTS])
def test_bad_probabilities_are_refused_by_the_report(tmp_path, capsys, name, probs, message):
    image, pred, npz = _case_with_probs(tmp_path, probs)
    assert report_main([image, pred, "--probs", npz, "-o", str(tmp_path / "r.json")]) == 1
    _one_line(capsys.readouterr().err, message, npz)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("name, probs, message", PROBABILITY_FAULTS[:3], ids=[f[0] for f in PROBABILITY_FAULTS[:3]])
def test_bad_probabilities_are_refused_by_the_evaluation(tmp_path, capsys, name, probs, message):
    _case_with_probs(tmp_path, probs)
    (tmp_path / "ref").mkdir()
    mask = np.zeros((10, 24, 24), np.uint8)
    mask[3:6, 8:14, 8:14] = 1
    _image(tmp_path / "ref" / "c.nii.gz", mask)
    assert evaluate_main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "--probs",
                          "-o", str(tmp_path / "ev")]) == 1
    _one_line(capsys.readouterr().err, message)


def test_a_pickled_probability_file_is_not_unpickled(tmp_path, capsys):
    image, pred, npz = _case_with_probs(tmp_path, lambda m: _stack(np.zeros(m.shape, np.float32)))
    with open(npz, "wb") as f:
        pickle.dump({"probabilities": "not an array"}, f)
    assert report_main([image, pred, "--probs", npz]) == 1
    _one_line(capsys.readouterr().err, "not a NumPy .npz archive")


# ---- options ----------------------------------------------------------------------------------------
OPTION_FAULTS = [
    ("cosam_report", ["--threshold", "nan"], "--threshold"),
    ("cosam_report", ["--threshold", "-0.1"], "--threshold"),
    ("cosam_report", ["--threshold", "1.5"], "--threshold"),
    ("cosam_report", ["--threshold", "high"], "--threshold"),
    ("cosam_report", ["--short-axis", "-1"], "--short-axis"),
    ("cosam_report", ["--short-axis", "nan"], "--short-axis"),
    ("cosam_report", ["--min-volume", "-5"], "--min-volume"),
    ("cosam_report", ["--min-volume", "inf"], "--min-volume"),
    ("cosam_postprocess", ["--min-volume", "nan"], "--min-volume"),
    ("cosam_postprocess", ["--min-volume", "-1"], "--min-volume"),
    ("cosam_postprocess", ["--min-volume", "inf"], "--min-volume"),
    ("cosam_make_synthetic", ["--spacing", "0", "0.7", "0.7"], "--spacing"),
    ("cosam_make_synthetic", ["--spacing", "nan", "0.7", "0.7"], "--spacing"),
    ("cosam_make_synthetic", ["--test-node-free", "2"], "--test-node-free"),
    ("cosam_make_synthetic", ["--test-node-free", "nan"], "--test-node-free"),
    ("cosam_convert_meply", ["--spacing", "nan", "1", "1"], "--spacing"),
    ("cosam_convert_meply", ["--spacing", "1", "-1", "1"], "--spacing"),
]


@pytest.mark.parametrize("command, options, named", OPTION_FAULTS,
                         ids=[f"{c} {' '.join(o)}" for c, o, _ in OPTION_FAULTS])
def test_a_nan_negative_or_out_of_range_option_stops_at_the_command_line(tmp_path, command, options, named):
    positional = {"cosam_report": ["image.nii.gz", "pred.nii.gz"], "cosam_postprocess": ["-i", "p", "-o", "o"],
                  "cosam_make_synthetic": [str(tmp_path / "syn")], "cosam_convert_meply": ["in", "-d", "5"]}[command]
    proc = run_cli([command, *positional, *options], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert named in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "syn").exists()


# ---- paths ------------------------------------------------------------------------------------------
def _prediction_folder(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    mask = np.zeros((10, 24, 24), np.uint8)
    mask[3:6, 8:14, 8:14] = 1
    _image(pred / "c.nii.gz", mask)
    return pred


def test_postprocess_refuses_its_own_input_folder_also_through_a_link(tmp_path, capsys):
    pred = _prediction_folder(tmp_path)
    os.symlink(pred, tmp_path / "link")
    for out, fragment in ((pred, "must differ"), (tmp_path / "link", "through a link")):
        assert postprocess_main(["-i", str(pred), "-o", str(out)]) == 1
        _one_line(capsys.readouterr().err, fragment)
    assert sorted(os.listdir(pred)) == ["c.nii.gz"]


def test_postprocess_replaces_a_filled_output_only_when_asked(tmp_path, capsys):
    pred = _prediction_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.nii.gz").write_bytes(b"x")
    assert postprocess_main(["-i", str(pred), "-o", str(out)]) == 1
    _one_line(capsys.readouterr().err, "not empty", "--overwrite")
    assert postprocess_main(["-i", str(pred), "-o", str(out), "--overwrite"]) == 0
    (tmp_path / "afile").write_text("x")
    assert postprocess_main(["-i", str(pred), "-o", str(tmp_path / "afile")]) == 1
    _one_line(capsys.readouterr().err, "not a folder")


@pytest.mark.parametrize("command", ["cosam_report", "cosam_evaluate", "cosam_postprocess"])
def test_an_output_that_cannot_be_written_is_one_line(tmp_path, command):
    pred = _prediction_folder(tmp_path)
    _image(tmp_path / "c_0000.nii.gz", _ct())
    unwritable = "/proc/cosam_out"  # no process, root included, can create anything there
    args = {"cosam_report": [str(tmp_path / "c_0000.nii.gz"), str(pred / "c.nii.gz"), "-o", unwritable + "/r.json"],
            "cosam_evaluate": ["-ref", str(pred), "-pred", str(pred), "-o", unwritable],
            "cosam_postprocess": ["-i", str(pred), "-o", unwritable]}[command]
    proc = run_cli([command, *args], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "/proc" in proc.stderr.strip().splitlines()[-1]


def test_report_json_holds_no_nan(tmp_path):
    image = _image(tmp_path / "c_0000.nii.gz", _ct())
    (tmp_path / "pred").mkdir()
    pred = _image(tmp_path / "pred" / "c.nii.gz", np.zeros((10, 24, 24), np.uint8))
    assert report_main([image, pred, "-o", str(tmp_path / "r.json")]) == 0
    json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the report"))


def test_evaluation_json_holds_null_where_a_metric_is_undefined(tmp_path):
    empty = np.zeros((10, 24, 24), np.uint8)
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        _image(tmp_path / folder / "c.nii.gz", empty)
    assert evaluate_main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert summary["dice_mean"] is None


# ---- model files ------------------------------------------------------------------------------------
class _RunsCode:
    def __reduce__(self):
        return os.getpid, ()


def _model_folder(tmp_path, plans=None):
    model = tmp_path / "model"
    (model / "fold_0").mkdir(parents=True)
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"conv_op": "torch.nn.modules.conv.Conv3d", "nonlin": "torch.nn.LeakyReLU"},
            "_kw_requires_import": ["conv_op", "nonlin"]}
    (model / "plans.json").write_text(json.dumps(plans or {"configurations": {"3d_fullres": {"architecture": arch}}}))
    (model / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lymph_node": 1}}))
    torch.save({"network_weights": {"w": torch.ones(2)}, "trainer_name": "CoSAMTrainerSmall",
                "logging": {"mean_fg_dice": [np.float32(0.5)]}}, model / "fold_0" / "checkpoint_final.pth")
    (model / "fold_0" / "progress.png").write_bytes(b"\x89PNG\r\n")
    (model / "fold_0" / "debug.json").write_text("{}")
    np.savez(model / "fold_0" / "validation.npz", probabilities=np.zeros((2, 3, 3), np.float16))
    return model


def _plans_with(key, value):
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"conv_op": "torch.nn.modules.conv.Conv3d"}, "_kw_requires_import": ["conv_op"]}
    if key == "network_class_name":
        arch["network_class_name"] = value
    else:
        arch["arch_kwargs"]["conv_op"] = value
    return {"configurations": {"3d_fullres": {"architecture": arch}}}


MODEL_FAULTS = [
    ("code in checkpoint.PTH", lambda m: torch.save({"x": _RunsCode()}, m / "fold_0" / "checkpoint_best.PTH"), "getpid"),
    ("code in model.pt", lambda m: torch.save({"x": _RunsCode()}, m / "fold_0" / "model.pt"), "getpid"),
    ("code in checkpoint_extra", lambda m: torch.save({"x": _RunsCode()}, m / "fold_0" / "checkpoint_extra"), "getpid"),
    ("code in a .dat pickle", lambda m: (m / "weights.dat").write_bytes(pickle.dumps(_RunsCode())), "weights.dat"),
    ("code in a .pkl", lambda m: (m / "fold_0" / "props.pkl").write_bytes(pickle.dumps(_RunsCode())), "props.pkl"),
    ("pickled objects in an .npz", lambda m: np.savez(m / "fold_0" / "v.npz", x=np.array([_RunsCode()], object)),
     "pickled objects"),
    ("network class os.system", lambda m: (m / "plans.json").write_text(json.dumps(_plans_with("network_class_name",
                                                                                                 "os.system"))),
     "network_class_name = 'os.system'"),
    ("layer class subprocess.Popen", lambda m: (m / "plans.json").write_text(json.dumps(_plans_with("conv_op",
                                                                                                     "subprocess.Popen"))),
     "arch_kwargs.conv_op = 'subprocess.Popen'"),
    ("trainer name with a path", lambda m: torch.save({"trainer_name": "../../evil"},
                                                      m / "fold_0" / "checkpoint_final.pth"), "trainer_name"),
    ("reader class outside nnU-Net", lambda m: (m / "dataset.json").write_text(
        json.dumps({"overwrite_image_reader_writer": "os.system"})), "overwrite_image_reader_writer"),
    ("python file", lambda m: (m / "fold_0" / "hook.py").write_text("print(1)"), "hook.py"),
    ("shared library", lambda m: (m / "lib.so").write_bytes(b"\x7fELF"), "lib.so"),
    ("shell script", lambda m: (m / "run.sh").write_text("echo"), "run.sh"),
    ("unreadable plans", lambda m: (m / "plans.json").write_text("{not json"), "unreadable JSON"),
]


@pytest.mark.parametrize("name, plant, message", MODEL_FAULTS, ids=[f[0] for f in MODEL_FAULTS])
def test_a_model_that_would_run_code_is_flagged_in_a_folder_and_in_a_zip(tmp_path, capsys, name, plant, message):
    model = _model_folder(tmp_path)
    assert check_main([str(model)]) == 0, capsys.readouterr().out  # the clean model passes
    capsys.readouterr()
    plant(model)
    assert check_main([str(model)]) == 1
    out = capsys.readouterr().out
    assert "UNSAFE" in out and message in out, out
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for root, _, files in os.walk(model):
            for f in files:
                zf.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), tmp_path))
    assert check_main([str(archive)]) == 1
    assert message in capsys.readouterr().out


# ---- splits and conversions -------------------------------------------------------------------------
def _source(tmp_path, cases=("p1", "p2")):
    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    (source / "labels").mkdir()
    for i, case in enumerate(cases):
        _image(source / "images" / f"{case}.nii.gz", _ct(seed=i))
        _image(source / "labels" / f"{case}.nii.gz", np.zeros((10, 24, 24), np.uint8))
    return source


def test_a_split_without_training_cases_is_refused(tmp_path, nnunet_env):
    source = _source(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "test": ["p1", "p2"]}))
    proc = run_cli(["cosam_convert_meply", str(source), "-d", "62", "--split", str(split)], nnunet_env, check=False)
    assert proc.returncode == 1
    _one_line(proc.stderr, "leaves no training case")
    assert not [d for d in os.listdir(nnunet_env["nnUNet_raw"]) if d.startswith("Dataset062")]


def test_a_dataset_id_used_in_nnunet_preprocessed_under_another_name_is_refused(tmp_path, nnunet_env):
    os.makedirs(os.path.join(nnunet_env["nnUNet_preprocessed"], "Dataset063_Other"))
    proc = run_cli(["cosam_convert_meply", str(_source(tmp_path)), "-d", "63"], nnunet_env, check=False)
    assert proc.returncode == 1
    _one_line(proc.stderr, "dataset id 63 is already used by Dataset063_Other")


def test_a_second_conversion_into_the_same_id_is_refused_while_the_first_runs(tmp_path, nnunet_env):
    import fcntl
    os.makedirs(nnunet_env["nnUNet_raw"])
    with open(os.path.join(nnunet_env["nnUNet_raw"], ".cosam_convert_064.lock"), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242")
        held.flush()
        proc = run_cli(["cosam_convert_meply", str(_source(tmp_path)), "-d", "64"], nnunet_env, check=False)
    assert proc.returncode == 1
    _one_line(proc.stderr, "another conversion into dataset id 64 is running (pid 4242)")
    assert not [d for d in os.listdir(nnunet_env["nnUNet_raw"]) if d.startswith("Dataset064")]
    run_cli(["cosam_convert_meply", str(_source(tmp_path / "again")), "-d", "64"], nnunet_env)  # lock released


def test_report_and_evaluation_replace_an_earlier_result_only_when_asked(tmp_path, capsys):
    image = _image(tmp_path / "c_0000.nii.gz", _ct())
    pred = _prediction_folder(tmp_path)
    out = str(tmp_path / "r.json")
    assert report_main([image, str(pred / "c.nii.gz"), "-o", out]) == 0
    capsys.readouterr()
    assert report_main([image, str(pred / "c.nii.gz"), "-o", out]) == 1
    _one_line(capsys.readouterr().err, "exists (use --overwrite")
    assert report_main([image, str(pred / "c.nii.gz"), "-o", out, "--overwrite"]) == 0
    ev = str(tmp_path / "ev")
    assert evaluate_main(["-ref", str(pred), "-pred", str(pred), "-o", ev]) == 0
    capsys.readouterr()
    assert evaluate_main(["-ref", str(pred), "-pred", str(pred), "-o", ev]) == 1
    _one_line(capsys.readouterr().err, "summary.json exists (use --overwrite")
    assert evaluate_main(["-ref", str(pred), "-pred", str(pred), "-o", ev, "--overwrite"]) == 0

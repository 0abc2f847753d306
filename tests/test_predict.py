"""cosam_predict and cosam_segment on a tiny trained CoSAM: one command gives what the three-command path
gives, from DICOM and from NIfTI, from a model folder and from an exported zip; a reader's box comes
back as a node."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import make_planned_dataset, run_cli
from cosam_nn.trainer_dir import trainer_dir

pydicom = pytest.importorskip("pydicom", reason="the test extra (pydicom) is not installed")
from dicom_files import write_ct_series  # noqa: E402

TRAINER = "CoSAMTrainerSmall"
DATASET = "Dataset541_Meply"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CoSAMTrainerSmall trained for 80 iterations (enough to find nodes on this data), its nnU-Net
    folders and its model folder."""
    root = tmp_path_factory.mktemp("trained")
    env = {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "results")}
    make_planned_dataset(root, env, 541, cases=6, shape=(12, 48, 48))
    run_cli(["nnUNetv2_train", "541", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
            dict(env, nnUNet_n_proc_DA="0", nnUNet_extTrainer=trainer_dir(), COSAM_EPOCHS="2", COSAM_ITERS="40",
                 COSAM_VAL_ITERS="1", COSAM_SEED="0"))
    return env, os.path.join(env["nnUNet_results"], DATASET, f"{TRAINER}__nnUNetPlans__3d_fullres")


def _calibration(model):
    """The threshold and operating point the training saved with the weights."""
    weights = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                         weights_only=False)["network_weights"]  # made by this test
    return float(weights["score_threshold"]), [float(v) for v in weights["operating_point"]]


def _exe(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def _three_commands(env, images, out):
    run_cli(["nnUNetv2_predict", "-i", images, "-o", out, "-d", "541", "-c", "3d_fullres", "-f", "0", "-tr", TRAINER,
             "-device", "cpu", "-npp", "1", "-nps", "1", "--save_probabilities", "--disable_tta"],
            dict(env, nnUNet_extTrainer=trainer_dir()))


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def _series_of(env, tmp_path):
    """A synthetic test image written as a DICOM series (orientation turned and tilted)."""
    images = os.path.join(env["nnUNet_raw"], DATASET, "imagesTs")
    first = sorted(os.listdir(images))[0]
    volume = _array(os.path.join(images, first)).astype(np.int16)
    series = str(tmp_path / "studies" / "patient7")
    write_ct_series(series, volume)
    return series, os.path.join(images, first)


def test_one_command_gives_the_three_command_result_from_dicom_and_nifti(trained, tmp_path):
    env, model = trained
    clean = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}  # no nnU-Net folders set
    series, nifti = _series_of(env, tmp_path)
    # the three commands: DICOM -> nnU-Net input, nnUNetv2_predict, cosam_export_dicom
    run_cli(["cosam_dicom_input", "--series", series, "-o", str(tmp_path / "inputs"), "--case", "patient7"])
    shutil.copy(nifti, tmp_path / "inputs" / "synthcase_0000.nii.gz")
    _three_commands(env, str(tmp_path / "inputs"), str(tmp_path / "three"))
    # one command over a folder holding the series folder, the NIfTI file and a series with a missing slice
    studies = tmp_path / "studies"
    shutil.copy(nifti, studies / "synthcase.nii.gz")
    broken = _array(nifti).astype(np.int16)
    write_ct_series(str(studies / "broken"), broken, skip=(4,))
    proc = subprocess.run([_exe("cosam_predict"), "-m", model, "-i", str(studies), "-o", str(tmp_path / "one"),
                           "--device", "cpu", "--save_probabilities", "--fast"], env=clean, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the broken series failed, the others did not
    assert "broken" in proc.stdout and "uneven slice spacing" in proc.stdout
    summary = {r["case"]: r for r in json.load(open(tmp_path / "one" / "summary.json"))}
    assert summary["broken"]["status"] == "failed" and summary["patient7"]["status"] == "ok"
    for case in ("patient7", "synthcase"):
        one, three = tmp_path / "one" / f"{case}.nii.gz", tmp_path / "three" / f"{case}.nii.gz"
        assert np.array_equal(_array(one), _array(three)), case
        a, b = sitk.ReadImage(str(one)), sitk.ReadImage(str(three))
        assert a.GetSpacing() == pytest.approx(b.GetSpacing()) and a.GetOrigin() == pytest.approx(b.GetOrigin())
        np.testing.assert_allclose(np.load(tmp_path / "one" / f"{case}.npz")["probabilities"],
                                   np.load(tmp_path / "three" / f"{case}.npz")["probabilities"], atol=1e-3)
        report = json.load(open(tmp_path / "one" / case / "report.json"))
        threshold, (sensitivity, false_per_case, cases) = _calibration(model)
        assert report["threshold_source"] == "the model's calibrated threshold"
        assert report["confidence_threshold"] == pytest.approx(threshold)
        assert report["operating_point"] == pytest.approx({"threshold": threshold, "node_sensitivity": sensitivity,
                                                           "false_candidates_per_case": false_per_case,
                                                           "validation_cases": cases}, abs=1e-3)
        assert _array(one).any(), "the comparison needs a prediction with nodes"
        assert report["nodes"] and report["confidence_source"].startswith("final detection score")
        assert os.path.isfile(tmp_path / "one" / case / f"{case}_detections.json")
    assert sorted(os.listdir(tmp_path / "one" / "patient7" / "dicom")) == ["seg.dcm", "sr.dcm"]
    assert not os.path.exists(tmp_path / "one" / "synthcase" / "dicom")


def test_node_confidences_are_the_detection_scores(trained, tmp_path):
    """A node's confidence is the final score of the detection that made it: within the score range,
    and not the mean probability (which the 0.62 floor of the mask cap would hide)."""
    env, model = trained
    _, nifti = _series_of(env, tmp_path)
    run_cli(["cosam_predict", "-m", model, "-i", nifti, "-o", str(tmp_path / "out"), "--device", "cpu", "--fast",
             "--save_probabilities"])
    case = os.path.basename(nifti).replace("_0000.nii.gz", "")
    report = json.load(open(tmp_path / "out" / case / "report.json"))
    probabilities = np.load(tmp_path / "out" / f"{case}.npz")["probabilities"][1]
    seg = _array(str(tmp_path / "out" / f"{case}.nii.gz"))
    from cosam_nn.node_geometry import label_nodes
    instances, _ = label_nodes(seg > 0)
    confidences = [n["confidence"] for n in report["nodes"]]
    assert confidences and all(0 < c <= 1 for c in confidences)
    means = [float(probabilities[instances == n["node"]].mean()) for n in report["nodes"]]
    assert any(abs(c - m) > 0.01 for c, m in zip(confidences, means))


def test_a_shared_zip_predicts_on_a_machine_without_the_model_folders(trained, tmp_path):
    env, model = trained
    archive = str(tmp_path / "model.zip")
    run_cli(["nnUNetv2_export_model_to_zip", "-d", "541", "-o", archive, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0"],
            dict(env, nnUNet_extTrainer=trainer_dir()))
    assert run_cli(["cosam_check_model", archive]).returncode == 0
    _, nifti = _series_of(env, tmp_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    subprocess.run([_exe("cosam_predict"), "-m", archive, "-i", nifti, "-o", str(tmp_path / "from_zip"), "--device",
                    "cpu", "--fast"], env=clean, check=True, capture_output=True)
    subprocess.run([_exe("cosam_predict"), "-m", model, "-i", nifti, "-o", str(tmp_path / "from_folder"), "--device",
                    "cpu", "--fast"], env=clean, check=True, capture_output=True)
    case = os.path.basename(nifti).replace("_0000.nii.gz", ".nii.gz")
    assert np.array_equal(_array(str(tmp_path / "from_zip" / case)), _array(str(tmp_path / "from_folder" / case)))
    # a zip whose plans make nnU-Net import something else is refused before anything is loaded
    bad = str(tmp_path / "bad.zip")
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(bad, "w") as dst:
        for member in src.namelist():
            data = src.read(member)
            if member.endswith("plans.json"):
                plans = json.loads(data)
                plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"
                data = json.dumps(plans).encode()
            dst.writestr(member, data)
    proc = subprocess.run([_exe("cosam_predict"), "-m", bad, "-i", nifti, "-o", str(tmp_path / "bad_out")], env=clean,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "not safe to load" in proc.stderr and "os.system" in proc.stderr


def test_a_readers_box_comes_back_as_a_node_inside_it_and_joins_the_result(trained, tmp_path):
    env, model = trained
    _, nifti = _series_of(env, tmp_path)
    case = os.path.basename(nifti).replace("_0000.nii.gz", "")
    shutil.copy(nifti, tmp_path / f"{case}.nii.gz")
    image = str(tmp_path / f"{case}.nii.gz")
    run_cli(["cosam_predict", "-m", model, "-i", image, "-o", str(tmp_path / "pred"), "--device", "cpu", "--fast"])
    before = json.load(open(tmp_path / "pred" / case / "report.json"))
    lo, hi = [3, 30, 30], [7, 42, 40]  # a box where no node was predicted? measured below
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"detections": [{"box_voxel_zyx": {"lo": lo, "hi": hi}}]}))
    run_cli(["cosam_segment", "-m", model, "-i", image, "--boxes", str(boxes), "-o", str(tmp_path / "boxed"),
             "--device", "cpu"])
    mask = _array(str(tmp_path / "boxed" / f"{case}.nii.gz")) > 0
    inside = np.zeros_like(mask)
    inside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    assert mask.any() and not (mask & ~inside).any()  # a mask, and all of it inside the box
    report = json.load(open(tmp_path / "boxed" / case / "report.json"))
    assert [n["confidence"] for n in report["nodes"]] == [1.0] * len(report["nodes"])
    # joined to the earlier prediction: the box's node is added, the earlier nodes keep their scores
    run_cli(["cosam_segment", "-m", model, "-i", image, "--boxes", str(boxes), "-o", str(tmp_path / "joined"),
             "--device", "cpu", "--add-to", str(tmp_path / "pred" / f"{case}.nii.gz")])
    joined = _array(str(tmp_path / "joined" / f"{case}.nii.gz")) > 0
    earlier = _array(str(tmp_path / "pred" / f"{case}.nii.gz")) > 0
    assert np.array_equal(joined, earlier | mask)
    report = json.load(open(tmp_path / "joined" / case / "report.json"))
    detections = json.load(open(tmp_path / "joined" / case / f"{case}_detections.json"))["detections"]
    assert len(detections) == len(report["nodes"]) >= 1
    scores = sorted({n["confidence"] for n in report["nodes"]})
    assert scores[-1] == 1.0 and (len(before["nodes"]) == 0 or min(scores) <= 1.0)
    # a box outside the image is one line
    boxes.write_text(json.dumps([{"box_voxel_zyx": {"lo": [0, 500, 500], "hi": [2, 510, 510]}}]))
    proc = run_cli(["cosam_segment", "-m", model, "-i", image, "--boxes", str(boxes), "-o", str(tmp_path / "x")],
                   check=False)
    assert proc.returncode == 1 and "outside the image" in proc.stderr.strip().splitlines()[-1]


def test_the_dicom_objects_pass_an_independent_validator(trained, tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (apt-get install dicom3tools)")
    env, model = trained
    series, _ = _series_of(env, tmp_path)
    run_cli(["cosam_predict", "-m", model, "-i", series, "-o", str(tmp_path / "out"), "--device", "cpu", "--fast"])
    folder = tmp_path / "out" / "patient7" / "dicom"
    for name in ("seg.dcm", "sr.dcm"):
        proc = subprocess.run([dciodvfy, str(folder / name)], capture_output=True, text=True)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], (name, errors)
    sr = pydicom.dcmread(str(folder / "sr.dcm"))
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99COSAM"

"""Real CT through the whole path: real HU, real headers (mixed spacings, real origins) -> convert ->
plan -> train CoSAM a step -> predict. Reads crops of LIDC-IDRI lung nodules (CC BY 3.0) from the
images/ + labels/ folder named by $COSAM_REAL_CT; skipped when it is unset or lacks the cases."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli
from cosam_nn.trainer_dir import trainer_dir

REAL_CT = os.environ.get("COSAM_REAL_CT", "")
TRAIN = ["LIDC-IDRI-0164_R_5", "LIDC-IDRI-0181_R_2", "LIDC-IDRI-0195_R_2", "LIDC-IDRI-0276_R_1", "LIDC-IDRI-0298_R_5"]
TEST = ["LIDC-IDRI-0402_R_4"]

pytestmark = pytest.mark.skipif(
    not REAL_CT or not all(os.path.isfile(os.path.join(REAL_CT, "images", c + ".nii.gz")) for c in TRAIN + TEST),
    reason=f"real CT crops {', '.join(TRAIN + TEST)} not found (set COSAM_REAL_CT to the images/ + labels/ "
           f"folder of the LIDC-IDRI crops; now {REAL_CT!r})")


def test_real_ct_converts_trains_and_predicts_in_its_own_geometry(tmp_path, nnunet_env):
    src = tmp_path / "real"
    for sub in ("images", "labels"):
        (src / sub).mkdir(parents=True)
        for case in TRAIN + TEST:
            shutil.copy(os.path.join(REAL_CT, sub, case + ".nii.gz"), src / sub / (case + ".nii.gz"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": TRAIN, "test": TEST}))
    run_cli(["cosam_convert_meply", str(src), "-d", "520", "--format", "images", "--split", str(split)], nnunet_env)
    raw = os.path.join(nnunet_env["nnUNet_raw"], "Dataset520_Meply")
    # HU and headers survive the conversion unchanged
    for case in TRAIN:
        original = sitk.ReadImage(str(src / "images" / (case + ".nii.gz")))
        converted = sitk.ReadImage(os.path.join(raw, "imagesTr", case + "_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), sitk.GetArrayFromImage(original))
        np.testing.assert_allclose(converted.GetSpacing(), original.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(converted.GetOrigin(), original.GetOrigin(), atol=1e-4)
    assert os.listdir(os.path.join(raw, "imagesTs")) == [TEST[0] + "_0000.nii.gz"]

    run_cli(["nnUNetv2_plan_and_preprocess", "-d", "520", "-c", "3d_fullres", "-np", "1", "-npfp", "1",
             "--verify_dataset_integrity", "--no_pbar"], nnunet_env)
    env = dict(nnunet_env, nnUNet_n_proc_DA="0", nnUNet_extTrainer=trainer_dir(),
               COSAM_EPOCHS="1", COSAM_ITERS="2", COSAM_VAL_ITERS="1", COSAM_SEED="0")
    run_cli(["nnUNetv2_train", "520", "3d_fullres", "0", "-tr", "CoSAMTrainerSmall", "-device", "cpu"], env)
    pred = tmp_path / "pred"
    run_cli(["nnUNetv2_predict", "-i", os.path.join(raw, "imagesTs"), "-o", str(pred), "-d", "520", "-c", "3d_fullres",
             "-f", "0", "-tr", "CoSAMTrainerSmall", "-device", "cpu", "--disable_tta", "--save_probabilities",
             "-npp", "1", "-nps", "1"], env)
    image = sitk.ReadImage(os.path.join(raw, "imagesTs", TEST[0] + "_0000.nii.gz"))
    seg = sitk.ReadImage(str(pred / (TEST[0] + ".nii.gz")))
    assert seg.GetSize() == image.GetSize()
    np.testing.assert_allclose(seg.GetSpacing(), image.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(seg.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1}
    probs = np.load(pred / (TEST[0] + ".npz"))["probabilities"]
    assert probs.shape[1:] == sitk.GetArrayFromImage(image).shape and np.isfinite(probs).all()
    out = tmp_path / "eval"
    run_cli(["cosam_evaluate", "-ref", os.path.join(raw, "labelsTs"), "-pred", str(pred), "-o", str(out)])
    summary = json.load(open(out / "summary.json"))
    assert summary["cases"] == 1 and summary["reference_nodes"] == 1

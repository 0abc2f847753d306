"""The path so far through nnU-Net's own commands: generate -> convert -> plan/preprocess -> train -> predict."""
import json
import os

import numpy as np
import SimpleITK as sitk
import torch

from conftest import make_planned_dataset, run_cli
from cosam_nn.trainer_dir import trainer_dir


def test_generate_convert_plan_train_predict(tmp_path, nnunet_env):
    proc = make_planned_dataset(tmp_path, nnunet_env, 511)
    assert "verify_dataset_integrity Done" in proc.stdout
    pp = os.path.join(nnunet_env["nnUNet_preprocessed"], "Dataset511_Meply")
    plans = json.load(open(os.path.join(pp, "nnUNetPlans.json")))
    conf = plans["configurations"]["3d_fullres"]
    assert conf["normalization_schemes"] == ["CTNormalization"]
    np.testing.assert_allclose(conf["spacing"], [1.25, 0.7, 0.7], rtol=1e-5)
    n_train = json.load(open(os.path.join(nnunet_env["nnUNet_raw"], "Dataset511_Meply", "dataset.json")))["numTraining"]
    assert len(os.listdir(os.path.join(pp, "nnUNetPlans_3d_fullres"))) >= n_train

    train_env = dict(nnunet_env, nnUNet_n_proc_DA="0", nnUNet_extTrainer=trainer_dir(),
                     COSAM_EPOCHS="1", COSAM_ITERS="2", COSAM_VAL_ITERS="1", COSAM_SEED="3", COSAM_SNAPSHOTS="1")
    proc = run_cli(["nnUNetv2_train", "511", "3d_fullres", "0", "-tr", "nnUNetTrainerBudget", "-device", "cpu"], train_env)
    out = os.path.join(nnunet_env["nnUNet_results"], "Dataset511_Meply", "nnUNetTrainerBudget__nnUNetPlans__3d_fullres")
    assert os.path.isfile(os.path.join(out, "fold_0", "checkpoint_final.pth"))
    # our own checkpoints, just written; nnU-Net's format holds numpy objects, so not weights_only
    final = torch.load(os.path.join(out, "fold_0", "checkpoint_final.pth"), weights_only=False)
    snapshot = torch.load(os.path.join(out, "fold_0", "checkpoint_epoch1.pth"), weights_only=False)
    assert snapshot["current_epoch"] == 1
    # the same seed trains the same weights; another seed other weights
    for seed, same in (("3", True), ("4", False)):
        other = str(tmp_path / f"results_seed{seed}")
        run_cli(["nnUNetv2_train", "511", "3d_fullres", "0", "-tr", "nnUNetTrainerBudget", "-device", "cpu"],
                dict(train_env, nnUNet_results=other, COSAM_SEED=seed, COSAM_SNAPSHOTS=""))
        again = torch.load(os.path.join(other, "Dataset511_Meply", "nnUNetTrainerBudget__nnUNetPlans__3d_fullres",
                                        "fold_0", "checkpoint_final.pth"), weights_only=False)
        equal = all(torch.equal(v, again["network_weights"][k]) for k, v in final["network_weights"].items())
        assert equal == same, f"seed {seed}"
    log = open([os.path.join(out, "fold_0", f) for f in os.listdir(os.path.join(out, "fold_0"))
                if f.startswith("training_log")][0]).read()
    assert "Epoch 0" in log and "Epoch 1" not in log  # COSAM_EPOCHS=1 was honoured

    images_ts = os.path.join(nnunet_env["nnUNet_raw"], "Dataset511_Meply", "imagesTs")
    pred = str(tmp_path / "pred")
    run_cli(["nnUNetv2_predict", "-i", images_ts, "-o", pred, "-d", "511", "-c", "3d_fullres", "-f", "0",
             "-tr", "nnUNetTrainerBudget", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], train_env)
    for f in os.listdir(images_ts):
        ref = sitk.ReadImage(os.path.join(images_ts, f))
        out_img = sitk.ReadImage(os.path.join(pred, f.replace("_0000", "")))
        assert out_img.GetSize() == ref.GetSize()
        np.testing.assert_allclose(out_img.GetSpacing(), ref.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(out_img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
        assert set(np.unique(sitk.GetArrayFromImage(out_img))) <= {0, 1}

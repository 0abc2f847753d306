"""CoSAM through nnU-Net's commands: train (with resume), predict with and without TTA, probabilities."""
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import make_planned_dataset, run_cli
from cosam_nn.trainer_dir import trainer_dir
from cosam_nn.training.recipe import forced_foreground_share, voxel_matched_batch

TRAINER = "CoSAMTrainerSmall"


def _log(fold_dir):
    return "".join(open(f).read() for f in sorted(glob.glob(os.path.join(fold_dir, "training_log*"))))


def _same_geometry(a, b):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_cosam_small_trains_resumes_and_predicts(tmp_path, nnunet_env):
    make_planned_dataset(tmp_path, nnunet_env, 512)
    env = dict(nnunet_env, nnUNet_n_proc_DA="0", nnUNet_extTrainer=trainer_dir(),
               COSAM_EPOCHS="1", COSAM_ITERS="2", COSAM_VAL_ITERS="1", COSAM_SNAPSHOTS="1")
    run_cli(["nnUNetv2_train", "512", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env)
    out = os.path.join(nnunet_env["nnUNet_results"], "Dataset512_Meply", f"{TRAINER}__nnUNetPlans__3d_fullres")
    fold = os.path.join(out, "fold_0")
    log = _log(fold)
    assert "phase: pretrain" in log and "phase: joint" not in log and "Epoch 1" not in log
    # each loss part's epoch mean is logged, the pretrain phase's parts (no CCM gradient, but its loss)
    parts = dict(re.findall(r"(\w+) (\d+\.\d+)", log.split("train loss parts: ")[1].splitlines()[0]))
    assert {"rpn_objectness", "rpn_box_giou", "rpn_dense", "det_class", "usam_mask", "ccm"} <= set(parts)
    # the batch of windows holds about the voxels of the plans' batch of 3D patches
    plans = json.load(open(os.path.join(nnunet_env["nnUNet_preprocessed"], "Dataset512_Meply", "nnUNetPlans.json")))
    planned = plans["configurations"]["3d_fullres"]
    used = re.search(r"'batch_size': (\d+), 'patch_size': \[([0-9, ]+)\]", log)
    patch = [int(v) for v in used.group(2).split(",")]
    assert patch[0] == 9 and int(used.group(1)) == voxel_matched_batch(planned["batch_size"], planned["patch_size"], patch, 16)
    # windows are drawn onto a node by chance only where nnU-Net's rounding would force fewer than 66%
    debug = json.load(open(os.path.join(fold, "debug.json")))
    batch = int(used.group(1))
    assert debug["probabilistic_oversampling"] == str(forced_foreground_share(batch, 0.66) < 0.66)
    assert os.path.isfile(os.path.join(fold, "validation", "summary.json"))
    # a snapshot is a usable model: its score threshold was calibrated before it was saved
    assert _log(fold).count("score threshold") == 2  # the snapshot's and the final model's
    snapshot = torch.load(os.path.join(fold, "checkpoint_epoch1.pth"), map_location="cpu", weights_only=False)
    first_pick = re.search(r"score threshold ([0-9.]+), picked", _log(fold))
    assert snapshot["current_epoch"] == 1
    assert float(snapshot["network_weights"]["score_threshold"]) == pytest.approx(float(first_pick.group(1)))

    # a run killed after its last checkpoint resumes with --c where it stopped, in the right phase
    os.replace(os.path.join(fold, "checkpoint_final.pth"), os.path.join(fold, "checkpoint_latest.pth"))
    for f in glob.glob(os.path.join(fold, "training_log*")):
        os.remove(f)
    run_cli(["nnUNetv2_train", "512", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", "--c"],
            dict(env, COSAM_EPOCHS="2"))
    log = _log(fold)
    assert "Epoch 1" in log and "Epoch 0" not in log and "phase: joint" in log
    assert os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))
    # the score threshold picked on the validation cases is the one saved with the weights
    picked = re.search(r"score threshold ([0-9.]+), picked on (\d+) validation cases", log)
    assert picked and int(picked.group(2)) >= 1
    # our own checkpoint, just written; nnU-Net's format holds numpy objects, so not weights_only
    weights = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)["network_weights"]
    assert float(weights["score_threshold"]) == pytest.approx(float(picked.group(1)))

    # --val reruns only the validation from checkpoint_final.pth; --npz keeps its probabilities
    validation = os.path.join(fold, "validation")
    shutil.rmtree(validation)
    epochs_logged = _log(fold).count("Epoch ")
    run_cli(["nnUNetv2_train", "512", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", "--val", "--npz"], env)
    assert _log(fold).count("Epoch ") == epochs_logged  # nothing trained
    cases = [f[: -len(".nii.gz")] for f in os.listdir(validation) if f.endswith(".nii.gz")]
    assert cases and all(os.path.isfile(os.path.join(validation, c + ".npz")) for c in cases)
    assert os.path.isfile(os.path.join(validation, "summary.json"))

    images_ts = os.path.join(nnunet_env["nnUNet_raw"], "Dataset512_Meply", "imagesTs")
    # a volume with fewer slices than the window (9)
    short_dir = str(tmp_path / "short")
    os.makedirs(short_dir)
    first = sorted(os.listdir(images_ts))[0]
    sitk.WriteImage(sitk.ReadImage(os.path.join(images_ts, first))[:, :, :5], os.path.join(short_dir, "short_0000.nii.gz"))
    for src, extra in ((images_ts, ["--save_probabilities"]), (short_dir, ["--disable_tta"])):
        pred = str(tmp_path / ("pred_" + os.path.basename(src)))
        run_cli(["nnUNetv2_predict", "-i", src, "-o", pred, "-d", "512", "-c", "3d_fullres", "-f", "0",
                 "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1"] + extra, env)
        for f in os.listdir(src):
            ref = sitk.ReadImage(os.path.join(src, f))
            seg = sitk.ReadImage(os.path.join(pred, f.replace("_0000", "")))
            _same_geometry(seg, ref)
            assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1}
            if "--save_probabilities" in extra:
                probs = np.load(os.path.join(pred, f.replace("_0000.nii.gz", ".npz")))["probabilities"]
                assert probs.shape == (2,) + sitk.GetArrayFromImage(ref).shape
                np.testing.assert_allclose(probs.sum(0), 1, atol=1e-3)

    # nnU-Net's model sharing and configuration selection work for the trainer as for its own
    proc = run_cli(["nnUNetv2_find_best_configuration", "512", "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
                    "-np", "1"], env)
    assert TRAINER in proc.stdout
    archive = str(tmp_path / "model.zip")
    run_cli(["nnUNetv2_export_model_to_zip", "-d", "512", "-o", archive, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0"], env)
    shutil.rmtree(out)
    run_cli(["nnUNetv2_install_pretrained_model_from_zip", archive], env)
    assert os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))
    pred = str(tmp_path / "pred_installed")
    run_cli(["nnUNetv2_predict", "-i", short_dir, "-o", pred, "-d", "512", "-c", "3d_fullres", "-f", "0",
             "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env)
    assert os.path.isfile(os.path.join(pred, "short.nii.gz"))


def test_user_mistakes_stop_in_one_line_before_any_folder_is_made(tmp_path, nnunet_env):
    from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainerSmall

    with pytest.raises(SystemExit, match="3D configuration"):
        CoSAMTrainerSmall({"configurations": {"2d": {"patch_size": [96, 96], "batch_size": 12}}}, "2d", 0, {})
    make_planned_dataset(tmp_path, nnunet_env, 514, cases=4)
    env = dict(nnunet_env, nnUNet_n_proc_DA="0", nnUNet_extTrainer=trainer_dir(), COSAM_EPOCHS="abc")
    proc = run_cli(["nnUNetv2_train", "514", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "COSAM_EPOCHS='abc'" in proc.stderr.strip().splitlines()[-1]
    assert not os.path.exists(os.path.join(nnunet_env["nnUNet_results"], "Dataset514_Meply"))


def test_paper_size_needs_the_sam_checkpoint_or_an_explicit_none():
    from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainer
    from cosam_nn.trainers.CoSAMTrainer import CoSAMTrainerSmall

    with pytest.raises(SystemExit, match="COSAM_SAM_CHECKPOINT=none to train U-SAM from scratch on purpose"):
        CoSAMTrainer.read_sam_checkpoint_setting({})
    assert CoSAMTrainer.read_sam_checkpoint_setting({"COSAM_SAM_CHECKPOINT": "none"}) is None
    assert CoSAMTrainer.read_sam_checkpoint_setting({"COSAM_SAM_CHECKPOINT": "/m/sam.pth"}) == "/m/sam.pth"
    assert CoSAMTrainerSmall.read_sam_checkpoint_setting({}) is None  # the small U-SAM takes no SAM weights


def test_killed_run_resumes_from_its_last_saved_epoch(tmp_path, nnunet_env):
    """SIGKILL mid-run, then --c: the run goes on from checkpoint_latest.pth, not from the start."""
    import signal
    import subprocess
    import sys
    import time

    make_planned_dataset(tmp_path, nnunet_env, 515)
    env = dict(os.environ, **nnunet_env, nnUNet_n_proc_DA="0", nnUNet_extTrainer=trainer_dir(),
               COSAM_EPOCHS="30", COSAM_ITERS="2", COSAM_VAL_ITERS="1")
    fold = os.path.join(nnunet_env["nnUNet_results"], "Dataset515_Meply", f"{TRAINER}__nnUNetPlans__3d_fullres", "fold_0")
    exe = os.path.join(os.path.dirname(sys.executable), "nnUNetv2_train")
    proc = subprocess.Popen([exe, "515", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not re.search(r": Epoch 4\s*$", _log(fold) if os.path.isdir(fold) else "", re.M):
        assert proc.poll() is None, "training ended before epoch 4:\n" + (_log(fold) if os.path.isdir(fold) else "")[-2000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "checkpoint every 3 epoch(s)" in _log(fold)  # 30 epochs: at least every tenth
    assert not os.path.exists(os.path.join(fold, "checkpoint_final.pth"))
    run_cli(["nnUNetv2_train", "515", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu", "--c"],
            dict(env, COSAM_EPOCHS="5"))
    resumed = re.search(r"resuming from (\S+): (\d+) epoch\(s\) done", _log(fold))
    assert resumed and resumed.group(1).endswith("checkpoint_latest.pth") and int(resumed.group(2)) >= 3
    assert os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))

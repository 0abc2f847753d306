"""`cosam_demo`: the whole path on built-in synthetic data, through the same commands a user runs.

synthetic Meply-like CT -> cosam_convert_meply -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train
-> nnUNetv2_predict on the held-out test cases -> a Dice line per test case.

Everything lands in one work folder (default ./demo_work) with its own nnUNet_raw,
nnUNet_preprocessed and nnUNet_results, so a user's own nnU-Net folders are never touched.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import SimpleITK as sitk

from cosam_nn.trainer_dir import trainer_dir

DATASET_ID = 501


def _run(step, total, title, args, env):
    print(f"\n=== [{step}/{total}] {title}\n$ {' '.join(args)}", flush=True)
    start = time.time()
    exe = shutil.which(args[0], path=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    proc = subprocess.run([exe or args[0]] + args[1:], env=env)
    if proc.returncode != 0:
        sys.exit(f"cosam_demo: step '{title}' failed (exit {proc.returncode}); see the output above")
    print(f"--- {title}: {time.time() - start:.0f} s", flush=True)


def _dice_lines(images_ts, labels_ts, pred):
    lines = []
    for f in sorted(os.listdir(labels_ts)):
        ref = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(labels_ts, f))) > 0
        out = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(pred, f))) > 0
        total = ref.sum() + out.sum()
        dice = 2 * (ref & out).sum() / total if total else float("nan")
        lines.append(f"{f[:-7]:<12} nodes voxels ref {int(ref.sum()):>6}  pred {int(out.sum()):>6}  Dice {dice:.3f}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_demo", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="demo_work", help="work folder (default ./demo_work; replaced)")
    p.add_argument("--cases", type=int, default=12, help="synthetic cases (default 12)")
    p.add_argument("--shape", type=int, nargs=3, default=(32, 96, 96), metavar=("Z", "Y", "X"))
    p.add_argument("-tr", default="nnUNetTrainerBudget", dest="trainer", help="trainer class")
    p.add_argument("--epochs", default="2", help="COSAM_EPOCHS (default 2)")
    p.add_argument("--iters", default="10", help="COSAM_ITERS (default 10)")
    a = p.parse_args(argv)
    work = os.path.abspath(a.work)
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    env = dict(os.environ, nnUNet_raw=os.path.join(work, "nnUNet_raw"),
               nnUNet_preprocessed=os.path.join(work, "nnUNet_preprocessed"),
               nnUNet_results=os.path.join(work, "nnUNet_results"), nnUNet_extTrainer=trainer_dir(),
               nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"),
               COSAM_EPOCHS=a.epochs, COSAM_ITERS=a.iters, COSAM_VAL_ITERS="2")
    train_env = dict(env, nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "0"))
    raw = os.path.join(env["nnUNet_raw"], f"Dataset{DATASET_ID}_Meply")
    pred = os.path.join(work, "predictions")
    did = str(DATASET_ID)
    start = time.time()
    _run(1, 5, "synthetic Meply-like CT", ["cosam_make_synthetic", os.path.join(work, "synthetic"),
                                           "--cases", str(a.cases), "--seed", "0", "--shape", *map(str, a.shape)], env)
    _run(2, 5, "convert to nnU-Net raw", ["cosam_convert_meply", os.path.join(work, "synthetic"), "-d", did], env)
    _run(3, 5, "plan and preprocess", ["nnUNetv2_plan_and_preprocess", "-d", did, "-c", "3d_fullres",
                                       "--verify_dataset_integrity", "-np", "1", "-npfp", "1", "--no_pbar"], env)
    _run(4, 5, f"train {a.trainer} (fold 0)", ["nnUNetv2_train", did, "3d_fullres", "0", "-tr", a.trainer,
                                                 "-device", "cpu"], train_env)
    _run(5, 5, "predict the test cases", ["nnUNetv2_predict", "-i", os.path.join(raw, "imagesTs"), "-o", pred,
                                          "-d", did, "-c", "3d_fullres", "-f", "0", "-tr", a.trainer,
                                          "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], train_env)
    print("\n=== test cases")
    print("\n".join(_dice_lines(os.path.join(raw, "imagesTs"), os.path.join(raw, "labelsTs"), pred)))
    print(f"\npredictions in {pred}; whole demo {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

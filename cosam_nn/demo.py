"""`cosam_demo`: the whole path on built-in synthetic data, through the same commands a user runs.

synthetic Meply-like CT -> cosam_convert_meply -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train
-tr CoSAMTrainerSmall -> nnUNetv2_predict on the held-out test cases -> cosam_evaluate (headline
table, pictures) -> cosam_report of one case (node table, N category, pictures).

Everything lands in one work folder (default ./demo_work) with its own nnUNet_raw,
nnUNet_preprocessed and nnUNet_results, so a user's own nnU-Net folders are never touched.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from cosam_nn.data.meply_layout import dataset_folder_name
from cosam_nn.trainer_dir import trainer_dir

DATASET_ID = 501


class Pipeline:
    """The demo's steps, each one nnU-Net or cosam command run in a work folder of its own."""

    def __init__(self, work, dataset_id=DATASET_ID, log=print):
        self.work, self.did, self.log = os.path.abspath(work), str(dataset_id), log
        self.env = dict(os.environ, nnUNet_raw=os.path.join(self.work, "nnUNet_raw"),
                        nnUNet_preprocessed=os.path.join(self.work, "nnUNet_preprocessed"),
                        nnUNet_results=os.path.join(self.work, "nnUNet_results"), nnUNet_extTrainer=trainer_dir(),
                        nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"))
        self.raw = os.path.join(self.env["nnUNet_raw"], dataset_folder_name(dataset_id))

    def run(self, title, args, env=None):
        self.log(f"\n=== {title}\n$ {' '.join(args)}")
        sys.stdout.flush()
        start = time.time()
        env = env or self.env
        exe = shutil.which(args[0], path=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
        proc = subprocess.Popen([exe or args[0]] + list(args[1:]), env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"cosam_demo: step '{title}' failed (exit {proc.returncode}); see the output above")
        seconds = time.time() - start
        self.last_peak_mib = usage.ru_maxrss / 1024  # the step's largest process, in MiB (Linux: kB)
        self.log(f"--- {title}: {seconds:.0f} s")
        return seconds

    def prepare(self, cases, shape, seed=0, configurations=("3d_fullres",), synthetic_options=()):
        """A fresh work folder with synthetic cases, converted and planned."""
        self.reset()
        syn = os.path.join(self.work, "synthetic")
        self.run("synthetic Meply-like CT", ["cosam_make_synthetic", syn, "--cases", str(cases), "--seed", str(seed),
                                             "--shape", *map(str, shape), *synthetic_options])
        self.convert_and_plan(syn, configurations)

    def reset(self):
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)

    def convert_and_plan(self, source, configurations=("3d_fullres",), convert_options=()):
        self.run("convert to nnU-Net raw", ["cosam_convert_meply", source, "-d", self.did, *convert_options])
        self.run("plan and preprocess", ["nnUNetv2_plan_and_preprocess", "-d", self.did, "-c", *configurations,
                                         "--verify_dataset_integrity", "-np", "1", "-npfp", "1", "--no_pbar"])

    def train(self, trainer, epochs, iters, val_iters=2, fold=0, configuration="3d_fullres", seed=None, snapshots=(),
              plans="nnUNetPlans", resume=False):
        """seed: COSAM_SEED; snapshots: epoch counts after which a checkpoint_epochN.pth is kept;
        resume: continue an interrupted training from its last checkpoint (nnU-Net's --c)."""
        env = dict(self.env, nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "0"),
                   COSAM_EPOCHS=str(epochs), COSAM_ITERS=str(iters), COSAM_VAL_ITERS=str(val_iters),
                   COSAM_SNAPSHOTS=",".join(map(str, snapshots)))
        if seed is not None:
            env["COSAM_SEED"] = str(seed)
        args = ["nnUNetv2_train", self.did, configuration, str(fold), "-tr", trainer, "-p", plans, "-device", "cpu"]
        return self.run(f"train {trainer} (fold {fold}, {epochs} x {iters} iterations{', resumed' if resume else ''})",
                        args + (["--c"] if resume else []), env)

    def predict(self, trainer, out, tta=False, fold=0, probabilities=False, images=None, configuration="3d_fullres",
                checkpoint=None, plans="nnUNetPlans"):
        args = ["nnUNetv2_predict", "-i", images or os.path.join(self.raw, "imagesTs"), "-o", out, "-d", self.did,
                "-c", configuration, "-f", str(fold), "-tr", trainer, "-p", plans, "-device", "cpu", "-npp", "1",
                "-nps", "1"]
        args += ["-chk", checkpoint] if checkpoint else []
        args += ([] if tta else ["--disable_tta"]) + (["--save_probabilities"] if probabilities else [])
        return self.run(f"predict {'the test cases' if images is None else images} with {trainer}", args)


def dice_table(per_case):
    """The test cases' Dice from cosam_evaluate's summary.json `per_case`; the mean leaves out cases
    without reference or predicted nodes (Dice null), as the evaluation does."""
    lines = [f"{case:<12} reference voxels {c['reference_voxels']:>6}  predicted {c['predicted_voxels']:>6}  Dice "
             + ("-" if c["dice"] is None else f"{c['dice']:.3f}") for case, c in per_case.items()]
    values = [c["dice"] for c in per_case.values() if c["dice"] is not None]
    lines.append(f"{'mean':<12} Dice {np.mean(values):.3f} over {len(values)} case(s)" if values else "no case with nodes")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_demo", description=__doc__.splitlines()[0])
    p.add_argument("--work", default="demo_work", help="work folder (default ./demo_work; replaced)")
    p.add_argument("--cases", type=int, default=20, help="synthetic cases (default 20)")
    p.add_argument("--shape", type=int, nargs=3, default=(32, 96, 96), metavar=("Z", "Y", "X"))
    p.add_argument("-tr", default="CoSAMTrainerSmall", dest="trainer", help="trainer class (default CoSAMTrainerSmall)")
    p.add_argument("--epochs", type=int, default=8, help="COSAM_EPOCHS (default 8)")
    p.add_argument("--iters", type=int, default=50, help="COSAM_ITERS, iterations per epoch (default 50)")
    p.add_argument("--seed", type=int, default=0,
                   help="COSAM_SEED of the training (default 0): a rerun on the same machine trains the same model")
    a = p.parse_args(argv)
    start = time.time()
    pipe = Pipeline(a.work)
    pipe.prepare(a.cases, a.shape)
    pipe.train(a.trainer, a.epochs, a.iters, seed=a.seed)
    pred = os.path.join(pipe.work, "predictions")
    pipe.predict(a.trainer, pred, probabilities=True)
    pictures = os.path.join(pipe.work, "pictures")
    evaluation = os.path.join(pipe.work, "evaluation")
    pipe.run("evaluate", ["cosam_evaluate", "-ref", os.path.join(pipe.raw, "labelsTs"), "-pred", pred,
                          "-o", evaluation, "--probs", "--plots", pictures])
    with open(os.path.join(evaluation, "summary.json")) as f:
        per_case = json.load(f)["per_case"]
    case = max(per_case, key=lambda k: per_case[k]["predicted_voxels"])  # the case with most predicted voxels
    report = os.path.join(pipe.work, "report", case + ".json")
    instances = os.path.join(pipe.work, "report", "instances")
    pipe.run(f"node report of {case}", ["cosam_report", os.path.join(pipe.raw, "imagesTs", case + "_0000.nii.gz"),
                                        os.path.join(pred, case + ".nii.gz"), "--probs", os.path.join(pred, case + ".npz"),
                                        "-o", report, "--plots", pictures, "--instances", instances])
    print("\n=== test cases\n" + dice_table(per_case))
    print(f"\npredictions in {pred}\nevaluation in {evaluation} (summary.md, summary.json)"
          f"\nnode report in {report} (and .csv)\ninstance map and detections (nnDetection's boxes) in {instances}"
          f"\npictures in {pictures}\nwhole demo {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

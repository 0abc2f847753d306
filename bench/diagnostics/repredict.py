"""Re-predict finished compare.py runs with an inference-only variant trainer (the same weights), into a
new folder whose runs.json pair_runs.py pairs with the original.

    python bench/diagnostics/repredict.py WORK VARIANT RUN_ID [RUN_ID ...] --out DEST [--threshold calibrate|keep|T] [--tta]

WORK is compare.py's work folder. Each run's checkpoint_final.pth is copied under the variant's name
(DEST/results/RUN_ID/<dataset>/VARIANT__nnUNetPlans__3d_fullres/fold_0; VARIANT may be the run's own
trainer, to predict with the code as it is now), its score threshold set, the test cases predicted
into DEST/predictions/RUN_ID and scored as compare.py scores them; DEST/runs.json keeps the runs of
earlier calls into the same DEST from a work folder of the same settings (a run predicted again
replaces its entry). The threshold:
`calibrate` (default) picks it with the variant's inference settings on the fold's validation cases, as
the trainer does after training, so that the comparison is the one a user would see; `keep` keeps the
run's own (calibrated with the trainer's settings); a number sets it. `--tta` predicts with nnU-Net's
mirroring (what `nnUNetv2_predict` does without `--disable_tta`) along the variant's
`inference_mirror_axes`; the threshold is calibrated without it, as after training. Then:
`python bench/pair_runs.py WORK DEST --after-tr VARIANT`.
Only for checkpoints you trained: nnU-Net's checkpoints need torch.load(weights_only=False).
"""
import argparse
import json
import os
import shutil
import sys
from itertools import islice

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from cosam_nn.benchmark.trained import load_model, validation_cases
from cosam_nn.benchmark.workfolder import earlier_runs, scored_point
from cosam_nn.training.calibration import calibrate
from cosam_nn.data.fileio import write_text_atomic
from cosam_nn.demo import Pipeline
from cosam_nn.trainer_dir import trainer_dir
from cosam_nn.training.recipe import window_patch


def variant_copy(model_folder, checkpoint, target_root, variant, threshold, mirror_axes):
    """Copy a run's model folder (plans, dataset, and `checkpoint`, its loaded checkpoint_final.pth) into
    target_root/<dataset>/ under the variant's trainer name, with the given score threshold and test-time
    flips (set in `checkpoint`); the run's own folder is not touched."""
    trainer = os.path.basename(model_folder).split("__")[0]
    target = os.path.join(target_root, os.path.basename(os.path.dirname(model_folder)),
                          os.path.basename(model_folder).replace(trainer, variant, 1))
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(os.path.join(target, "fold_0"))
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy(os.path.join(model_folder, name), target)
    checkpoint["trainer_name"] = variant
    checkpoint["inference_allowed_mirroring_axes"] = mirror_axes
    checkpoint["network_weights"]["score_threshold"] = torch.tensor(float(threshold))
    torch.save(checkpoint, os.path.join(target, "fold_0", "checkpoint_final.pth"))


def calibrated_threshold(fold_folder, trainer):
    """The threshold the variant's trainer (class) would pick after training, on the fold's validation
    cases (the weights of fold_folder, the inference settings of the variant)."""
    model = load_model(fold_folder, trainer.__name__)
    plans = load_json(os.path.join(os.path.dirname(fold_folder), "plans.json"))
    patch = window_patch(plans["configurations"]["3d_fullres"]["patch_size"], trainer.window, trainer.max_inplane)
    cases = [(torch.from_numpy(image[None]), torch.from_numpy(label))
             for _, image, label, _ in islice(validation_cases(fold_folder), trainer.calibration_cases)]
    with torch.no_grad():
        return calibrate(model, cases, patch, trainer.calibration_thresholds, trainer.calibration_recall_weight)[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work")
    p.add_argument("variant")
    p.add_argument("runs", nargs="+", metavar="RUN_ID")
    p.add_argument("--out", required=True, help="folder for the predictions and runs.json")
    p.add_argument("--threshold", default="calibrate", help="calibrate (default), keep, or a number")
    p.add_argument("--tta", action="store_true", help="predict with nnU-Net's mirroring (default: --disable_tta)")
    a = p.parse_args()
    trainer = recursive_find_python_class(trainer_dir(), a.variant, "cosam_nn.trainers")
    if not hasattr(trainer, "cosam_config"):
        sys.exit(f"repredict: {a.variant} is not a CoSAM trainer of this project ({trainer_dir()})")
    runs_path = os.path.join(a.work, "runs.json")
    if not os.path.isfile(runs_path):
        sys.exit(f"repredict: {runs_path} not found: WORK must be a compare.py work folder")
    saved = load_json(runs_path)
    pipe = Pipeline(a.work, log=lambda *_: None)
    os.environ["nnUNet_preprocessed"] = pipe.env["nnUNet_preprocessed"]
    dataset = os.path.basename(pipe.raw)
    out_path = os.path.join(a.out, "runs.json")
    done = earlier_runs(out_path, saved.get("settings")) or {}  # runs of earlier calls on the same benchmark
    for run_id in a.runs:
        run = saved["runs"].get(run_id)
        if run is None or "points" not in run:
            sys.exit(f"repredict: {runs_path} holds no finished run {run_id!r}")
        model_folder = os.path.join(a.work, "results", run_id, dataset, f"{run['row']}__nnUNetPlans__3d_fullres")
        checkpoint = torch.load(os.path.join(model_folder, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                                weights_only=False)
        own = float(checkpoint["network_weights"]["score_threshold"])
        if a.threshold == "calibrate":
            threshold = calibrated_threshold(os.path.join(model_folder, "fold_0"), trainer)
        else:
            threshold = own if a.threshold == "keep" else float(a.threshold)
        pipe.env["nnUNet_results"] = os.path.join(a.out, "results", run_id)
        variant_copy(model_folder, checkpoint, pipe.env["nnUNet_results"], a.variant, threshold,
                     trainer.inference_mirror_axes)
        pred = os.path.join(a.out, "predictions", run_id)
        shutil.rmtree(pred, ignore_errors=True)
        seconds = pipe.predict(a.variant, pred, tta=a.tta, probabilities=True)
        point = scored_point(os.path.join(pipe.raw, "labelsTs"), pred, seconds)
        run["points"][-1] = dict(run["points"][-1], **point)
        run["row"], run["threshold"] = a.variant, threshold
        print(f"{run_id} with {a.variant}{' and TTA' if a.tta else ''}, threshold {threshold:g} (its own {own:g}): "
              + ", ".join(f"{k} {v:.3f}" for k, v in point["summary"].items() if v is not None), flush=True)
        done[run_id] = run  # saved after each run, beside the runs of earlier calls into the same DEST
        write_text_atomic(out_path, json.dumps({"settings": saved.get("settings"), "runs": done}, indent=1))


if __name__ == "__main__":
    main()

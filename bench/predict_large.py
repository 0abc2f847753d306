"""Prediction time and memory of one full-size CT volume on the CPU, per trained model.

    python bench/predict_large.py --work bench_work/compare [-tr nnUNetTrainerBudget CoSAMTrainerSmall]
                                  [--shape 300 512 512] [--run RUN_ID] [-chk CHECKPOINT] [--tta]

Uses the models that `bench/compare.py` trained in its work folder (fold 0, 3d_fullres): with --run,
the run of that id (compare.py keeps each run in results/RUN_ID), and -chk picks its checkpoint. Writes one
synthetic volume of --shape (1.25 x 0.7 x 0.7 mm, fixed seed), predicts it with each trainer through
`nnUNetv2_predict --disable_tta` (with --tta: with the test-time flips the checkpoint allows, as
`nnUNetv2_predict` runs by default), and prints wall seconds and the peak resident memory of the largest
process. Writes large_predict_ZxYxX.json in the work folder.
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import SimpleITK as sitk

from cosam_nn.demo import Pipeline
from cosam_nn.data.fileio import write_text_atomic
from cosam_nn.data.synthetic import make_case


def write_volume(folder, shape):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "large_0000.nii.gz")
    if not os.path.exists(path):
        img, _ = make_case(tuple(shape), (1.25, 0.7, 0.7), np.random.default_rng(2026))
        image = sitk.GetImageFromArray(img)
        image.SetSpacing((0.7, 0.7, 1.25))
        tmp = os.path.join(os.path.dirname(folder), ".large_partial.nii.gz")  # outside the input folder
        sitk.WriteImage(image, tmp)
        os.replace(tmp, path)
    return folder


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="bench_work/compare", help="bench/compare.py's work folder")
    p.add_argument("-tr", nargs="+", default=["CoSAMTrainerSmall", "nnUNetTrainerBudget"], dest="trainers")
    p.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--run", default=None, help="a compare.py run id (its models are in WORK/results/RUN_ID)")
    p.add_argument("-chk", default=None, dest="checkpoint", help="checkpoint file (default checkpoint_final.pth)")
    p.add_argument("--tta", action="store_true", help="predict with test-time flips (default: --disable_tta)")
    a = p.parse_args()
    pipe = Pipeline(a.work, log=lambda *_: None)
    if a.run:
        pipe.env["nnUNet_results"] = os.path.join(pipe.work, "results", a.run)
    images = write_volume(os.path.join(pipe.work, "large_" + "x".join(map(str, a.shape))), a.shape)
    rows = {}
    for trainer in a.trainers:
        out = os.path.join(pipe.work, f"large_pred_{trainer}")
        seconds = pipe.predict(trainer, out, tta=a.tta, images=images, checkpoint=a.checkpoint)
        rows[trainer] = {"seconds": seconds, "peak_mib": pipe.last_peak_mib}
        print(f"{trainer}: {seconds:.0f} s, peak {pipe.last_peak_mib:.0f} MiB", flush=True)
    header = (f"{time.strftime('%Y-%m-%d')}, {platform.node()} ({os.cpu_count()} CPUs): one synthetic "
              f"{' x '.join(map(str, a.shape))} volume, nnUNetv2_predict{'' if a.tta else ' --disable_tta'}, fold 0 of {a.work}")
    name = f"large_predict_{'x'.join(map(str, a.shape))}{'_' + a.run if a.run else ''}{'_tta' if a.tta else ''}.json"
    write_text_atomic(os.path.join(pipe.work, name), json.dumps({"header": header, "rows": rows}, indent=2))
    print(header)


if __name__ == "__main__":
    main()

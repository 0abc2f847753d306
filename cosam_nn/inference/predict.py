"""`cosam_predict`: from a CT study to a reviewed result in one command.

    cosam_predict -m MODEL -i INPUT -o OUT [--fast] [--device cpu|cuda] [--folds 0 1 ...]
                  [--save_probabilities] [--threshold T] [--min-volume 10] [--allow-non-hu] [--overwrite]

MODEL: a trained model folder (`$nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION`) or a zip
made by `nnUNetv2_export_model_to_zip`; it is checked as `cosam_check_model` checks it and its weights
are read as data only. INPUT: a DICOM series folder, a folder of series folders, an image file
(NIfTI, NRRD, MHA) or a folder of them. No nnU-Net folder variables are needed: nnU-Net's predictor
runs in this process (on the GPU when there is one), with nnU-Net's test-time flips unless --fast.

Per case (CASE: the series folder's or the file's name) OUT gets:
- `CASE.nii.gz`, the segmentation in the input's geometry (`nnUNetv2_predict`'s), and with
  --save_probabilities `CASE.npz`;
- `CASE/report.json` and `report.csv`: every node with its size, world position and confidence, the
  number counted and the N category they imply (cosam_report's); `CASE/CASE_instances.nii.gz` and
  `CASE/CASE_detections.json` (cosam_report --instances); for DICOM input `CASE/dicom/seg.dcm` and `sr.dcm`
  (cosam_export_dicom's, nodes under --min-volume left out).
A CoSAM node's confidence is its final detection score and a node counts from the model's calibrated
threshold (--threshold overrides), the operating point the model was calibrated to, which the DICOM
report records. A case whose input is refused (a series with a missing slice, say) is reported and
skipped; the others are predicted. The exit code is 1 when any case failed.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import SimpleITK as sitk

from cosam_nn.cli_types import non_negative, probability
from cosam_nn.data.ct_image import IMAGE_SUFFIXES, ImageError
from cosam_nn.data.fileio import json_text, save_npz, write_text_atomic
from cosam_nn.evaluation.detections import write_instances_and_detections
from cosam_nn.evaluation.report import N_CATEGORY_NOTE, report_case, to_csv
from cosam_nn.inference.model import ModelError, count_threshold, load_predictor, open_model, pick_device
from cosam_nn.inference.predictor import CoSAMPredictor
from cosam_nn.inference.study import Study
from cosam_nn.node_geometry import label_nodes


def _is_dicom_file(path):
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _holds_dicom(folder):
    return any(_is_dicom_file(os.path.join(folder, f)) for f in os.listdir(folder)
               if os.path.isfile(os.path.join(folder, f)))


def _case_of_file(name):
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            base = name[: -len(suffix)]
            return base[: -len("_0000")] if base.endswith("_0000") else base
    return None


def find_cases(path):
    """[(case, 'dicom' or 'file', path)] of an input: a series folder, a folder of series or of image
    files, or one image file."""
    if os.path.isfile(path):
        case = _case_of_file(os.path.basename(path))
        if case is None:
            raise ImageError(f"{path}: not an image file ({', '.join(IMAGE_SUFFIXES)}) or a DICOM series folder")
        return [(case, "file", path)]
    if not os.path.isdir(path):
        raise ImageError(f"{path}: no such file or folder")
    if _holds_dicom(path):
        return [(os.path.basename(os.path.normpath(path)), "dicom", path)]
    cases = []
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and _holds_dicom(full):
            cases.append((entry, "dicom", full))
        elif os.path.isfile(full) and _case_of_file(entry):
            cases.append((_case_of_file(entry), "file", full))
    if not cases:
        raise ImageError(f"{path}: holds no DICOM series and no image file ({', '.join(IMAGE_SUFFIXES)})")
    names = [c for c, _, _ in cases]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ImageError(f"{path}: case {repeated[0]} appears twice (a series and a file of one name?)")
    return cases


def _outputs(out, case, study, segmentation, probabilities, scores, predictor, a):
    """Write one case's segmentation, report, instances and DICOM objects; returns its report."""
    rw = predictor.plans_manager.image_reader_writer_class()
    seg_path = os.path.join(out, case + predictor.dataset_json["file_ending"])
    tmp = seg_path + ".tmp" + predictor.dataset_json["file_ending"]
    rw.write_seg(segmentation, tmp, study.properties)
    os.replace(tmp, seg_path)
    if a.save_probabilities:
        save_npz(os.path.join(out, case + ".npz"), probabilities=probabilities)
    folder = os.path.join(out, case)
    os.makedirs(folder, exist_ok=True)
    threshold, source = count_threshold(predictor, a.threshold)
    prediction = sitk.ReadImage(seg_path)
    seg = sitk.GetArrayFromImage(prediction) > 0
    report = report_case(prediction, seg, probabilities[1].astype(np.float64), threshold, 5.0, case, a.min_volume,
                         scores=scores, threshold_source=source)
    report["operating_point"] = _operating_point(predictor)
    write_text_atomic(os.path.join(folder, "report.json"), json_text(report))
    write_text_atomic(os.path.join(folder, "report.csv"), to_csv([report]))
    write_instances_and_detections(folder, prediction, label_nodes(seg)[0], report)
    if study.kind == "dicom":
        from cosam_nn.evaluation.dicom_export import export
        export(study.source, seg_path, os.path.join(folder, "dicom"), overwrite=True, report=report,
               min_volume_mm3=a.min_volume, operating_point=_operating_point_values(predictor))
    return report


def _operating_point_values(predictor):
    point = getattr(predictor.network, "operating_point", None)
    return None if point is None else [float(v) for v in point]


def _operating_point(predictor):
    values = _operating_point_values(predictor)
    if values is None or not np.isfinite(values[0]):
        return None
    return {"threshold": round(float(predictor.network.score_threshold), 4), "node_sensitivity": round(values[0], 4),
            "false_candidates_per_case": round(values[1], 3), "validation_cases": int(values[2])}


def predict_case(predictor, study, out, a, log):
    image = study.read(predictor)
    window = getattr(getattr(predictor.network, "cfg", None), "detector", None)
    if window is not None and study.slices() < window.window:
        log(f"  warning: {study.source} has {study.slices()} slices, fewer than the model's window of "
            f"{window.window}: it is predicted on windows padded with empty slices")
    start = time.time()
    segmentation, probabilities, scores = predictor.predict_case(image, study.properties)
    log(f"  predicted in {time.time() - start:.0f} s")
    return _outputs(out, study.case, study, segmentation, probabilities, scores, predictor, a)


def _summary(rows):
    lines = [f"{'case':<24} {'status':<8} {'nodes':>5} {'counted':>7} {'N':<4} {'seconds':>7}"]
    for r in rows:
        lines.append(f"{r['case']:<24} {r['status']:<8} {r.get('nodes', ''):>5} {r.get('counted', ''):>7} "
                     f"{r.get('n_category', ''):<4} {r['seconds']:>7.0f}" + (f"  {r['error']}" if "error" in r else ""))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_predict", description=__doc__.splitlines()[0])
    p.add_argument("-m", required=True, dest="model", help="trained model folder or exported model zip")
    p.add_argument("-i", required=True, dest="input", help="DICOM series folder, folder of series or images, or image file")
    p.add_argument("-o", required=True, dest="out", help="output folder")
    p.add_argument("--fast", action="store_true", help="no test-time flips (nnU-Net's --disable_tta): several times faster")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: the GPU if there is one")
    p.add_argument("--folds", nargs="+", default=None, help="folds of the model to use (default: every trained one)")
    p.add_argument("--save_probabilities", action="store_true", help="also write CASE.npz, as nnUNetv2_predict does")
    p.add_argument("--threshold", type=probability, default=None,
                   help="confidence a node needs to be counted (default: the model's calibrated threshold)")
    p.add_argument("--min-volume", type=non_negative, default=10.0, dest="min_volume",
                   help="nodes under this many mm^3 are listed, not counted, and not exported to DICOM (default 10)")
    p.add_argument("--allow-non-hu", action="store_true", dest="allow_non_hu",
                   help="predict images whose values do not look like Hounsfield units, with a warning")
    p.add_argument("--overwrite", action="store_true", help="write into an output folder that holds results")
    a = p.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        raise SystemExit(f"cosam_predict: -o {a.out}: exists and is not a folder")
    if os.path.isdir(a.out) and os.listdir(a.out) and not a.overwrite:
        raise SystemExit(f"cosam_predict: -o {a.out}: holds files (use --overwrite to write into it)")
    try:
        cases = find_cases(a.input)
        os.makedirs(a.out, exist_ok=True)
    except (ImageError, OSError) as e:
        raise SystemExit(f"cosam_predict: {e}") from None
    work = tempfile.mkdtemp(prefix=".cosam_predict_", dir=a.out)
    rows = []
    try:
        try:
            folder = open_model(a.model, os.path.join(work, "model"))
            predictor = load_predictor(folder, a.folds, pick_device(a.device, "cosam_predict"), tta=not a.fast,
                                       predictor_class=CoSAMPredictor)
        except ModelError as e:
            raise SystemExit(f"cosam_predict: {e}") from None
        log(f"model {folder} (trainer {predictor.trainer_name}, folds {a.folds or 'all'}, "
            f"{'no test-time flips' if a.fast else 'test-time flips'}, {predictor.device})")
        for i, (case, kind, source) in enumerate(cases, start=1):
            log(f"[{i}/{len(cases)}] {case}: {kind} {source}")
            start = time.time()
            try:
                study = Study(case, kind, source, work, a.allow_non_hu, warn=lambda m: log(f"  warning: {m}"))
                report = predict_case(predictor, study, a.out, a, log)
            except (ValueError, OSError) as e:  # a refused input: this case only
                log(f"  skipped: {e}")
                rows.append({"case": case, "status": "failed", "error": str(e), "seconds": time.time() - start})
                continue
            log(f"  {len(report['nodes'])} node(s), {report['nodes_at_or_above_threshold']} counted "
                f"(confidence >= {report['confidence_threshold']:g}, volume >= {a.min_volume:g} mm3): "
                f"{report['n_category']} ({N_CATEGORY_NOTE})")
            rows.append({"case": case, "status": "ok", "nodes": len(report["nodes"]),
                         "counted": report["nodes_at_or_above_threshold"], "n_category": report["n_category"],
                         "seconds": time.time() - start})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_text_atomic(os.path.join(a.out, "summary.json"), json_text(rows))
    log("\n" + _summary(rows) + f"\n\nresults in {a.out}")
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""`cosam_segment`: a node the model missed, segmented from a reader's box by the model's own U-SAM.

    cosam_segment -m MODEL -i IMAGE --boxes BOXES.json -o OUT [--add-to PREDICTION] [--grow 0]
                  [--device cpu|cuda] [--allow-non-hu] [--overwrite]

MODEL as for cosam_predict (a CoSAM model folder or exported zip); IMAGE an image file or a DICOM
series folder. BOXES.json is the detections format that `cosam_report --instances` and cosam_predict
write (`CASE_detections.json`), so a reader can edit that file, move, resize or add a box, and run
this again: `{"detections": [...]}` or a plain list, each entry with `box_voxel_zyx` (`lo` and `hi`
voxel indices of the image array, hi exclusive) or `box_world_mm` (`min_xyz`, `max_xyz` in ITK's
physical frame); other keys are ignored. 3D Slicer's ROI markups map onto `box_world_mm` once their
centre and size are turned from Slicer's RAS into the LPS frame (negate x and y) — docs/commands.md.

Each box is segmented as detected boxes are at inference: on each slice of its z range, the image is
cropped around the box (grown by --grow voxels on each side in-plane), resampled to U-SAM's input,
and U-SAM prompted with the box segments it; the mask is kept inside the box. The result is written
as OUT/CASE.nii.gz with the report, instance map and detections in OUT/CASE/ (as cosam_predict writes
them). With --add-to an earlier segmentation of this image, the new nodes join it; the earlier nodes
keep the confidence of the detections file beside it (cosam_predict's OUT/CASE/CASE_detections.json),
a node from a box has confidence 1.0 (a reader's box).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import SimpleITK as sitk
import torch
from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

from cosam_nn.cli_types import non_negative
from cosam_nn.data.ct_image import ImageError, read_image
from cosam_nn.data.fileio import json_text, write_image_atomic, write_text_atomic
from cosam_nn.data.image_geometry import geometry_mismatch
from cosam_nn.evaluation.detections import write_instances_and_detections
from cosam_nn.evaluation.report import report_case, to_csv
from cosam_nn.inference.model import ModelError, count_threshold, load_predictor, open_model, pick_device
from cosam_nn.inference.predict import find_cases
from cosam_nn.inference.study import Study
from cosam_nn.modeling.common import LOGIT_BOUND
from cosam_nn.modeling.cosam import BACKGROUND_LOGIT
from cosam_nn.modeling.crops import paste_crop
from cosam_nn.node_geometry import label_nodes


class BoxError(ValueError):
    """A boxes file that cannot be read; the message names it and the entry."""


def read_boxes(path, image):
    """[(lo, hi)] voxel boxes (z, y, x; hi exclusive, clipped to the image) of a boxes file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise BoxError(f"{path}: unreadable boxes file ({e})") from None
    entries = data.get("detections") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise BoxError(f"{path}: no boxes (expected {{'detections': [...]}} or a list of boxes)")
    shape = np.array(image.GetSize()[::-1])
    boxes = []
    for i, entry in enumerate(entries):
        try:
            if "box_voxel_zyx" in entry:
                lo = np.array(entry["box_voxel_zyx"]["lo"], float)
                hi = np.array(entry["box_voxel_zyx"]["hi"], float)
            else:
                lo, hi = _voxel_box(image, entry["box_world_mm"]["min_xyz"], entry["box_world_mm"]["max_xyz"])
        except (KeyError, TypeError, ValueError):
            raise BoxError(f"{path}: entry {i}: needs box_voxel_zyx {{lo, hi}} or box_world_mm {{min_xyz, max_xyz}}") \
                from None
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(np.r_[lo, hi])):
            raise BoxError(f"{path}: entry {i}: a box has three finite numbers per corner")
        lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
        if np.any(hi - lo < 1):
            raise BoxError(f"{path}: entry {i}: the box lies outside the image or is thinner than a voxel")
        boxes.append((lo, hi))
    return boxes


def _voxel_box(image, min_xyz, max_xyz):
    """The voxel box (z, y, x, hi exclusive) that holds a world box (its 8 corners)."""
    corners = [image.TransformPhysicalPointToContinuousIndex((x, y, z)) for x in (min_xyz[0], max_xyz[0])
               for y in (min_xyz[1], max_xyz[1]) for z in (min_xyz[2], max_xyz[2])]
    corners = np.array(corners)[:, ::-1]  # (x, y, z) index -> (z, y, x)
    return np.floor(corners.min(0) + 0.5), np.floor(corners.max(0) + 0.5)


def _to_preprocessed(lo, hi, properties, plans_manager, shape):
    """A voxel box of the image into the preprocessed volume's coordinates (transposed, cropped,
    resampled), as edges (continuous)."""
    order = plans_manager.transpose_forward
    lo, hi = np.asarray(lo, float)[order], np.asarray(hi, float)[order]
    crop = np.array([b[0] for b in properties["bbox_used_for_cropping"]], float)
    scale = np.asarray(shape, float) / np.asarray(properties["shape_after_cropping_and_before_resampling"], float)
    return (lo - crop) * scale, (hi - crop) * scale


@torch.no_grad()
def segment_boxes(network, data, boxes):
    """Foreground logits (Z, Y, X) of the preprocessed volume data (1, Z, Y, X): each box (lo, hi edges)
    segmented by U-SAM slice by slice, kept inside the box; -inf where no box lies."""
    volume = data[None].float()  # (1, 1, Z, Y, X): one "window" of every slice
    canvas = torch.full(data.shape[1:], -float("inf"))
    for lo, hi in boxes:
        z_range = range(max(0, int(np.floor(lo[0]))), min(data.shape[1], int(np.ceil(hi[0]))))
        box = torch.tensor([[lo[2], lo[1], hi[2], hi[1]]], dtype=torch.float32).repeat(len(z_range), 1)
        masks, _, _, regions = network.segment_boxes(volume, torch.tensor(list(z_range)), box)
        inside = torch.full(data.shape[2:], -float("inf"))
        y0, x0 = max(0, int(np.floor(lo[1]))), max(0, int(np.floor(lo[2])))
        inside[y0:int(np.ceil(hi[1])), x0:int(np.ceil(hi[2]))] = LOGIT_BOUND
        for m, z in enumerate(z_range):
            layer = torch.full(data.shape[2:], -float("inf"))
            paste_crop(layer, masks[m, 0].clamp(-LOGIT_BOUND, LOGIT_BOUND), regions[m])
            torch.maximum(canvas[z], torch.minimum(layer, inside), out=canvas[z])
    return canvas


class BoxSegmenter:
    """One image, preprocessed once as the model's plans preprocess it, whose boxes the model's U-SAM
    segments; `mask(boxes)` gives the result on the image's own grid."""

    def __init__(self, predictor, image, properties):
        adapter = PreprocessAdapterFromNpy([image], [None], [properties], [None], predictor.plans_manager,
                                           predictor.dataset_json, predictor.configuration_manager,
                                           num_threads_in_multithreaded=1)
        case = next(adapter)
        self.data, self.properties, self.predictor = case["data"], case["data_properties"], predictor
        self.network = predictor.network
        self.network.load_state_dict(predictor.list_of_parameters[0])
        self.network.eval()

    def mask(self, boxes, grow=0.0):
        """(Z, Y, X) bool of the image: the boxes (voxel lo, hi of the image array, hi exclusive), grown
        in-plane by `grow` voxels, segmented by U-SAM and kept inside the (grown) boxes."""
        growth = np.array([0.0, grow, grow])
        p = self.predictor
        mapped = [_to_preprocessed(np.asarray(lo) - growth, np.asarray(hi) + growth, self.properties, p.plans_manager,
                                   self.data.shape[1:]) for lo, hi in boxes]
        foreground = segment_boxes(self.network, self.data, mapped)
        foreground = torch.where(torch.isfinite(foreground), foreground, torch.full_like(foreground, BACKGROUND_LOGIT))
        logits = torch.stack([torch.zeros_like(foreground), foreground])
        return convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, p.label_manager, self.properties) > 0


def earlier_scores(pred_path, case, shape):
    """A confidence volume of an earlier cosam_predict result (its instance map painted with its
    detections' scores), or None when the files are not beside it."""
    folder = os.path.join(os.path.dirname(os.path.abspath(pred_path)), case)
    instances_path = os.path.join(folder, f"{case}_instances.nii.gz")
    detections_path = os.path.join(folder, f"{case}_detections.json")
    if not (os.path.isfile(instances_path) and os.path.isfile(detections_path)):
        return None
    instances = sitk.GetArrayFromImage(sitk.ReadImage(instances_path))
    with open(detections_path) as f:
        scores = {d["node"]: float(d["score"]) for d in json.load(f)["detections"] if d.get("score") is not None}
    volume = np.zeros(shape, np.float64)
    if instances.shape == tuple(shape):
        for node, score in scores.items():
            volume[instances == node] = score
    return volume


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_segment", description=__doc__.splitlines()[0])
    p.add_argument("-m", required=True, dest="model", help="trained CoSAM model folder or exported model zip")
    p.add_argument("-i", required=True, dest="input", help="image file or DICOM series folder")
    p.add_argument("--boxes", required=True, help="boxes JSON (the detections format of cosam_report --instances)")
    p.add_argument("-o", required=True, dest="out", help="output folder")
    p.add_argument("--add-to", default=None, dest="add_to", help="an earlier segmentation of this image to join")
    p.add_argument("--grow", type=non_negative, default=0.0, help="voxels added to each box in-plane (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--allow-non-hu", action="store_true", dest="allow_non_hu")
    p.add_argument("--overwrite", action="store_true", help="replace this case's earlier result in OUT")
    a = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix=".cosam_segment_")
    try:
        (case, kind, source), *rest = find_cases(a.input)
        if rest:
            raise ImageError(f"{a.input}: holds several cases; give one image or series")
        study = Study(case, kind, source, work, a.allow_non_hu, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
        target = os.path.join(a.out, case + ".nii.gz")
        if os.path.exists(target) and not a.overwrite:
            raise ImageError(f"{target} exists (use --overwrite to replace it)")
        folder = open_model(a.model, os.path.join(work, "model"))
        predictor = load_predictor(folder, None, pick_device(a.device, "cosam_segment"), tta=False)
        if not hasattr(predictor.network, "segment_boxes"):
            raise ModelError(f"{a.model}: trainer {predictor.trainer_name} has no box-prompted U-SAM (a CoSAM model is needed)")
        reference = sitk.ReadImage(study.path)
        boxes = read_boxes(a.boxes, reference)
        mask = BoxSegmenter(predictor, study.read(predictor), study.properties).mask(boxes, a.grow)
        confidence = mask.astype(np.float64)
        if a.add_to:
            earlier = read_image(a.add_to)
            fault = geometry_mismatch(reference, earlier, "image", "--add-to segmentation")
            if fault:
                raise ImageError(f"{a.add_to}: {fault}")
            previous = sitk.GetArrayFromImage(earlier) > 0
            scores = earlier_scores(a.add_to, case, mask.shape)
            confidence = np.maximum(confidence, scores if scores is not None else previous.astype(np.float64))
            mask = mask | previous
        os.makedirs(os.path.join(a.out, case), exist_ok=True)
        result = sitk.GetImageFromArray(mask.astype(np.uint8))
        result.CopyInformation(reference)
        write_image_atomic(result, target)
        threshold, source = count_threshold(predictor)
        report = report_case(result, mask, None, threshold, 5.0, case, 0.0, scores=confidence, threshold_source=source)
        report["confidence_source"] = ("1.0 for a node from a reader's box; an earlier node keeps its detection score"
                                       if a.add_to else "1.0: a node from a reader's box")
        write_text_atomic(os.path.join(a.out, case, "report.json"), json_text(report))
        write_text_atomic(os.path.join(a.out, case, "report.csv"), to_csv([report]))
        write_instances_and_detections(os.path.join(a.out, case), result, label_nodes(mask)[0], report)
    except (ValueError, OSError) as e:  # ImageError, BoxError, ModelError and unwritable outputs
        print(f"cosam_segment: error: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{case}: {len(boxes)} box(es) segmented; {len(report['nodes'])} node(s) in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

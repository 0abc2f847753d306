"""Per-node outputs for other tools: an instance map and a detections file per case.

`CASE_instances.nii.gz`: node k (the report's numbering: 26-connected components of the prediction,
in scan order) has value k, background 0; the geometry (size, spacing, origin, direction) is the
input image's.

`CASE_detections.json`, one entry per node, with its box in three conventions:
- `box_voxel_zyx`: `lo` and `hi` voxel indices along the axes of the image array (z, y, x, as NumPy
  and SimpleITK's GetArrayFromImage order them), `hi` exclusive: the node occupies lo <= i < hi.
- `box_nndetection`: the box as nnDetection's `instances_to_boxes_np` derives it from an instance
  map, (x1, y1, x2, y2, z1, z2) where its x, y, z are the array axes 0, 1, 2 (here z, y, x of the
  image) and each side lies one voxel outside the node (x1 = lowest index - 1, x2 = highest index + 1).
  Give these boxes with the scores to nnDetection's evaluation.
- `box_world_mm`: the axis-aligned box in world millimetres (ITK's physical frame: origin, spacing,
  direction) that holds every voxel of the node, voxel extents included; `min_xyz`, `max_xyz`.
Beside them: score (the node's confidence), volume in mm^3, long and short axis in mm, centroid.
"""
import itertools
import os

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cosam_nn.data.fileio import json_text, write_image_atomic, write_text_atomic

BOX_CONVENTION = __doc__[__doc__.index("`box_voxel_zyx`"):__doc__.index("Beside them")].replace("\n", " ")


def world_box(image, lo_zyx, hi_zyx):
    """(min xyz, max xyz) in mm of the voxel block lo <= i < hi (z, y, x), voxel extents included."""
    corners = []
    for z, y, x in itertools.product(*[(lo - 0.5, hi - 0.5) for lo, hi in zip(lo_zyx, hi_zyx)]):
        corners.append(image.TransformContinuousIndexToPhysicalPoint((x, y, z)))
    corners = np.asarray(corners)
    return corners.min(0), corners.max(0)


def detections(image, instances, report):
    """The detections list of one case: `instances` (Z, Y, X) numbered as `report['nodes']`."""
    out = []
    objects = ndimage.find_objects(instances)
    for node in report["nodes"]:
        sl = objects[node["node"] - 1]
        lo = [s.start for s in sl]
        hi = [s.stop for s in sl]
        wmin, wmax = world_box(image, lo, hi)
        out.append({"node": node["node"], "score": node["confidence"],
                    "box_voxel_zyx": {"lo": lo, "hi": hi},
                    "box_nndetection": [lo[0] - 1, lo[1] - 1, hi[0], hi[1], lo[2] - 1, hi[2]],
                    "box_world_mm": {"min_xyz": [round(float(v), 3) for v in wmin],
                                     "max_xyz": [round(float(v), 3) for v in wmax]},
                    "volume_mm3": node["volume_mm3"], "long_axis_mm": node["long_axis_mm"],
                    "short_axis_mm": node["short_axis_mm"], "centroid_world_mm_xyz": node["centroid_world_mm_xyz"]})
    return out


def write_instances_and_detections(folder, image, instances, report):
    """CASE_instances.nii.gz and CASE_detections.json in `folder`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    case = report["case"]
    instance_path = os.path.join(folder, f"{case}_instances.nii.gz")
    dtype = np.uint8 if instances.max(initial=0) < 256 else np.uint16
    out = sitk.GetImageFromArray(instances.astype(dtype))
    out.CopyInformation(image)
    write_image_atomic(out, instance_path)
    detections_path = os.path.join(folder, f"{case}_detections.json")
    write_text_atomic(detections_path, json_text({"case": case, "box_convention": BOX_CONVENTION,
                                                  "confidence_source": report["confidence_source"],
                                                  "detections": detections(image, instances, report)}))
    return instance_path, detections_path

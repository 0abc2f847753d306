"""`cosam_export_dicom`: a prediction as DICOM, for viewers and PACS (OHIF, 3D Slicer, ...).

    cosam_export_dicom --series DICOM_DIR --pred PRED.nii.gz [--probs PRED.npz] -o OUT_DIR
                       [--threshold 0.5] [--min-volume 0] [--overwrite]

DICOM_DIR holds the CT series the prediction was made from (cosam_dicom_input, then nnUNetv2_predict;
cosam_predict does all of it in one command). Writes into OUT_DIR:
- `seg.dcm`, a DICOM Segmentation (binary) that references the source series: one segment per
  node of at least --min-volume mm^3 (smaller specks do not become segments), each a "Lymph node"
  of category "Morphologically abnormal structure" in the pelvis (SNOMED CT), with a display colour,
  a tracking ID "node K" (K as cosam_report numbers the nodes) and the algorithm identified as CoSAM
  with the package version;
- `sr.dcm`, a Comprehensive 3D Structured Report (TID 1500 measurement report) with, per exported
  node, a volumetric ROI group that references its segment and holds short axis, long axis (mm),
  volume (mm^3) and the confidence (cosam_report's); and a case group with the number of nodes
  counted (confidence at or above the threshold and volume at or above the minimum, both named in
  the count's label and given as values beside it) and, where the model's calibration is known
  (cosam_predict), its node sensitivity and false candidates per case on the validation cases. Its
  private codes (scheme 99COSAM) are declared in the report's Coding Scheme Identification.
Needs the optional extra: pip install "cosam-nn[dicom]" (highdicom, pydicom).

The prediction must have the series' geometry (size, spacing, origin, orientation) as
SimpleITK reads the series; a mismatch, a series with missing or repeated slices, more than one
series or a modality other than CT is refused with one line, and nothing is written.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

import cosam_nn
from cosam_nn.cli_types import non_negative, probability
from cosam_nn.data.dicom_series import SeriesError, Slice, check_slices
from cosam_nn.node_geometry import label_nodes
from cosam_nn.evaluation.report import ReportError, load_prediction, report_case

ALGORITHM_NAME = "CoSAM (cosam-nn)"
ORIGIN_TOLERANCE = 0.1  # of the smallest voxel side: the prediction's grid is the series' or it is not


# no standard code says these: private ones (99 = a private scheme, declared in the report)
PRIVATE_SCHEME = "99COSAM"
THRESHOLD = ("THRESHOLD", PRIVATE_SCHEME, "Confidence threshold of the node count")
MIN_VOLUME = ("MINVOLUME", PRIVATE_SCHEME, "Minimum node volume of the node count")
SENSITIVITY = ("VALSENS", PRIVATE_SCHEME, "Validation node sensitivity at the threshold")
FALSE_PER_CASE = ("VALFPPC", PRIVATE_SCHEME, "Validation false candidates per case at the threshold")
COUNT = ("{count}", "UCUM", "count")
DISPLAY_LAB = (60.0, 70.0, 45.0)  # CIELab of an orange-red that stands out on grey CT


def node_count_code(threshold, min_volume_mm3):
    """The count's code, its label naming every rule it applies (a code meaning holds 64 characters)."""
    return ("NODECOUNT", PRIVATE_SCHEME, f"Lymph nodes with confidence >= {threshold:.3g} and volume >= "
                                         f"{min_volume_mm3:.3g} mm3")


class ExportError(ValueError):
    """A fault in the inputs; the message names the file or folder."""


def _highdicom():
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise ExportError('DICOM export needs highdicom and pydicom: pip install "cosam-nn[dicom]"') from None
    return highdicom, pydicom


def read_ct_series(folder):
    """The CT slices of the one series in `folder` (pydicom headers), sorted along the slice normal and
    checked as every DICOM reader of this project checks them (`cosam_nn.data.dicom_series`)."""
    _, pydicom = _highdicom()
    if not os.path.isdir(folder):
        raise ExportError(f"{folder}: not a folder of DICOM files")
    slices = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        if "SOPInstanceUID" not in ds or "Rows" not in ds:
            continue  # not an image (a DICOMDIR, a report)
        slices.append(Slice(path, str(ds.get("SeriesInstanceUID", "")), str(ds.get("Modality", "")),
                            "\\".join(ds.get("ImageType", [])).upper(), _values(ds, "ImageOrientationPatient", 6),
                            _values(ds, "ImagePositionPatient", 3), str(ds.get("InstanceNumber", "")), ds))
    try:
        ordered, _ = check_slices(folder, slices)
    except SeriesError as e:
        raise ExportError(str(e)) from None
    return [s.header for s in ordered]


def _values(ds, keyword, count):
    try:
        values = tuple(float(v) for v in ds.get(keyword) or ())
    except (TypeError, ValueError):
        return None
    return values if len(values) == count and np.all(np.isfinite(values)) else None


def series_geometry(slices):
    """(size xyz, spacing xyz, origin, direction as SimpleITK orders it) of sorted CT slices."""
    first = slices[0]
    row, col = np.asarray(first.ImageOrientationPatient[:3], float), np.asarray(first.ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    if len(slices) > 1:
        step = np.dot(normal, np.asarray(slices[-1].ImagePositionPatient, float)
                      - np.asarray(first.ImagePositionPatient, float)) / (len(slices) - 1)
    else:
        step = float(first.get("SliceThickness", 1.0))
    spacing = (float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), float(step))
    size = (int(first.Columns), int(first.Rows), len(slices))
    direction = np.stack([row, col, normal], axis=1).ravel()
    return size, spacing, np.asarray(first.ImagePositionPatient, float), direction


def check_geometry(pred, slices, pred_path):
    size, spacing, origin, direction = series_geometry(slices)
    faults = []
    if tuple(pred.GetSize()) != size:
        faults.append(f"size {pred.GetSize()} against the series' {size}")
    elif not np.allclose(pred.GetSpacing(), spacing, rtol=1e-3, atol=1e-3):
        faults.append(f"spacing {tuple(round(s, 4) for s in pred.GetSpacing())} against {tuple(round(s, 4) for s in spacing)}")
    elif not np.allclose(pred.GetDirection(), direction, atol=1e-3):
        faults.append("orientation differs from the series'")
    elif not np.allclose(pred.GetOrigin(), origin, rtol=0, atol=ORIGIN_TOLERANCE * min(spacing)):
        faults.append(f"origin {tuple(round(o, 2) for o in pred.GetOrigin())} against the first slice's "
                      f"{tuple(round(o, 2) for o in origin)}")
    if faults:
        raise ExportError(f"{pred_path}: does not match the DICOM series: {faults[0]}")


def _read_prediction(pred_path, probs_path):
    try:
        return load_prediction(pred_path, probs_path)
    except ReportError as e:
        raise ExportError(str(e)) from None


def _algorithm(hd):
    from pydicom.sr.codedict import codes
    return hd.AlgorithmIdentificationSequence(name=ALGORITHM_NAME, version=cosam_nn.__version__,
                                              family=codes.cid7162.ArtificialIntelligence)


def segmentation(hd, slices, instances, nodes):
    """The DICOM Segmentation of `nodes` (report entries): segment i = the i-th of them, its voxels those
    of node['node'] in `instances` (Z, Y, X); frames = the slices."""
    from pydicom.sr.codedict import codes
    algorithm = _algorithm(hd)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i, segment_label=f"node {node['node']}",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.LymphNode, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=f"node {node['node']}",
        anatomic_regions=[codes.SCT.Pelvis], display_color=hd.color.CIELabColor(*DISPLAY_LAB))
        for i, node in enumerate(nodes, start=1)]
    labels = np.zeros(instances.shape, np.uint8 if len(nodes) < 256 else np.uint16)
    for i, node in enumerate(nodes, start=1):
        labels[instances == node["node"]] = i
    return hd.seg.Segmentation(
        source_images=slices, pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=int(slices[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="cosam-nn",
        manufacturer_model_name=ALGORITHM_NAME, software_versions=cosam_nn.__version__, device_serial_number="0",
        series_description="CoSAM lymph nodes")


def structured_report(hd, slices, seg, report, nodes, operating_point=None):
    """TID 1500 measurement report: one volumetric ROI group per exported node (segment i = nodes[i - 1]
    of `seg`, None when there is none), and the case's node count with its rules and, when known, the
    model's operating point (sensitivity, false candidates per case)."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name=ALGORITHM_NAME))
    groups = []
    for segment_number, node in enumerate(nodes, start=1):
        k = node["node"]
        measurements = [
            hd.sr.Measurement(name=codes.SCT.ShortAxis, value=node["short_axis_mm"], unit=codes.UCUM.Millimeter),
            hd.sr.Measurement(name=codes.SCT.LongAxis, value=node["long_axis_mm"], unit=codes.UCUM.Millimeter),
            hd.sr.Measurement(name=codes.SCT.Volume, value=node["volume_mm3"], unit=codes.UCUM.CubicMillimeter),
            hd.sr.Measurement(name=codes.DCM.Probability, value=node["confidence"], unit=codes.UCUM.NoUnits),
        ]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"node {k}"),
            referenced_segment=hd.sr.ReferencedSegment(  # (from_segmentation fails on a one-frame segment)
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=segment_number,
                source_series=hd.sr.SourceSeriesForSegmentation(slices[0].SeriesInstanceUID)),
            finding_type=codes.SCT.LymphNode, measurements=measurements))
    case = [hd.sr.Measurement(name=Code(*node_count_code(report["confidence_threshold"], report["min_volume_mm3"])),
                              value=report["nodes_at_or_above_threshold"], unit=Code(*COUNT)),
            hd.sr.Measurement(name=Code(*THRESHOLD), value=report["confidence_threshold"], unit=codes.UCUM.NoUnits),
            hd.sr.Measurement(name=Code(*MIN_VOLUME), value=report["min_volume_mm3"], unit=codes.UCUM.CubicMillimeter)]
    if operating_point is not None and np.isfinite(operating_point[0]):
        case += [hd.sr.Measurement(name=Code(*SENSITIVITY), value=float(operating_point[0]), unit=codes.UCUM.NoUnits),
                 hd.sr.Measurement(name=Code(*FALSE_PER_CASE), value=float(operating_point[1]), unit=Code(*COUNT))]
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(  # the case as a whole, also when no node was found
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="case"), measurements=case))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(slices) + ([seg] if seg is not None else []), content=content, series_instance_uid=hd.UID(),
        series_number=int(slices[0].get("SeriesNumber", 0) or 0) + 1001, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="cosam-nn", series_description="CoSAM lymph node measurements")
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    return sr


def _private_scheme():
    from pydicom.dataset import Dataset
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "cosam-nn private codes"
    item.CodingSchemeResponsibleOrganization = "cosam-nn"
    return item


EXPORT_FILES = ("seg.dcm", "sr.dcm")


def export(series_dir, pred_path, out_dir, probs_path=None, overwrite=False, threshold=0.5, min_volume_mm3=0.0,
           report=None, operating_point=None):
    """Write seg.dcm and sr.dcm (only sr.dcm when no node of at least min_volume_mm3 was found) into
    out_dir, replacing an earlier export as a whole (with `overwrite`); returns (their paths, the
    report). `report`: cosam_report's for this prediction (cosam_predict's, with detection scores);
    made from the prediction and probabilities when None."""
    earlier = [f for f in EXPORT_FILES if os.path.exists(os.path.join(out_dir, f))]
    if earlier and not overwrite:
        raise ExportError(f"{out_dir}: holds an earlier export ({', '.join(earlier)}); use --overwrite to replace it")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir}: exists and is not a folder")
    hd, _ = _highdicom()
    slices = read_ct_series(series_dir)
    pred, seg, probs = _read_prediction(pred_path, probs_path)
    check_geometry(pred, slices, pred_path)
    if report is None:
        case = os.path.basename(pred_path).split(".")[0]
        report = report_case(pred, seg, probs, threshold=threshold, case=case, min_volume_mm3=min_volume_mm3)
    instances, _ = label_nodes(seg)
    nodes = [n for n in report["nodes"] if n["volume_mm3"] >= min_volume_mm3]
    seg_ds = segmentation(hd, slices, instances, nodes) if nodes else None
    objects = [("seg.dcm", seg_ds)] if seg_ds is not None else []
    objects.append(("sr.dcm", structured_report(hd, slices, seg_ds, report, nodes, operating_point)))
    return _write_all(out_dir, objects), report


def _write_all(out_dir, objects):
    """Write every object to a temporary folder beside out_dir, then move them in: all or nothing. An
    earlier export's file that this one does not write (seg.dcm, when no node was found) is removed, so
    that the folder never pairs a new report with an old segmentation."""
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".cosam_export_", dir=out_dir)
    try:
        for name, ds in objects:
            ds.save_as(os.path.join(tmp, name), enforce_file_format=True)
        written = [name for name, _ in objects]
        for stale in set(EXPORT_FILES) - set(written):
            if os.path.exists(os.path.join(out_dir, stale)):
                os.remove(os.path.join(out_dir, stale))
        paths = []
        for name in written:
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
            paths.append(os.path.join(out_dir, name))
        return paths
    finally:
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_export_dicom", description=__doc__.splitlines()[0])
    p.add_argument("--series", required=True, help="folder of the CT series the prediction was made from")
    p.add_argument("--pred", required=True, help="predicted mask (.nii.gz, nnUNetv2_predict's output)")
    p.add_argument("--probs", default=None, help="nnU-Net .npz probabilities of this case (node confidences)")
    p.add_argument("-o", required=True, dest="out", help="output folder for seg.dcm and sr.dcm")
    p.add_argument("--threshold", type=probability, default=0.5,
                   help="confidence a node needs to be counted (default 0.5)")
    p.add_argument("--min-volume", type=non_negative, default=0.0, dest="min_volume",
                   help="nodes under this many mm^3 become no segment and are not counted (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in the output folder")
    a = p.parse_args(argv)
    try:
        paths, report = export(a.series, a.pred, a.out, a.probs, overwrite=a.overwrite, threshold=a.threshold,
                               min_volume_mm3=a.min_volume)
    except ExportError as e:
        print(f"cosam_export_dicom: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an output folder that cannot be made or written
        print(f"cosam_export_dicom: error: cannot write {e.filename or a.out}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"{report['case']}: {len(report['nodes'])} node(s); wrote {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk

hd = pytest.importorskip("highdicom", reason="the dicom extra (highdicom) is not installed")
pydicom = pytest.importorskip("pydicom")

from cosam_nn.dataset_conversion.readers import read_image  # noqa: E402
from cosam_nn.evaluation.dicom_export import main  # noqa: E402
from cosam_nn.data.dicom_input import main as input_main  # noqa: E402
from cosam_nn.evaluation.report import report_case  # noqa: E402

from dicom_files import COL, ROW, write_ct_series  # noqa: E402


def _case(tmp_path, **kwargs):
    volume = np.random.default_rng(1).integers(-200, 200, (12, 40, 48)).astype(np.int16)
    series = str(tmp_path / "series")
    write_ct_series(series, volume, **kwargs)
    return series, volume


def _prediction(series, tmp_path, probs=True):
    """A prediction with the series' geometry as SimpleITK (hence the converter) reads it: two nodes."""
    image = read_image(series)
    mask = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    mask[3:6, 10:16, 12:19] = 1
    mask[8:10, 30:33, 30:34] = 1
    pred = sitk.GetImageFromArray(mask)
    pred.CopyInformation(image)
    path = str(tmp_path / "case1.nii.gz")
    sitk.WriteImage(pred, path)
    prob_path = None
    if probs:
        prob = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
        prob[8:10] = np.where(mask[8:10] > 0, 0.6, 0.1)
        prob_path = str(tmp_path / "case1.npz")
        np.savez(prob_path, probabilities=np.stack([1 - prob, prob]))
    return image, mask, path, prob_path


def test_segmentation_frames_land_on_their_source_slices_and_the_report_matches(tmp_path):
    series, volume = _case(tmp_path)
    image, mask, pred, probs = _prediction(series, tmp_path)
    out = tmp_path / "dicom"
    assert main(["--series", series, "--pred", pred, "--probs", probs, "-o", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["seg.dcm", "sr.dcm"]

    sources = {}
    for f in os.listdir(series):
        ds = pydicom.dcmread(os.path.join(series, f))
        sources[ds.SOPInstanceUID] = ds
    normal = np.cross(ROW, COL)
    by_position = sorted(sources.values(), key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient)))
    seg = hd.seg.segread(str(out / "seg.dcm"))
    assert seg.FrameOfReferenceUID == by_position[0].FrameOfReferenceUID
    assert seg.number_of_segments == 2
    assert np.allclose(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing, [0.7, 0.8])
    for z, src in enumerate(by_position):
        for k in (1, 2):
            got = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[k],
                                                    skip_overlap_checks=True, assert_missing_frames_are_empty=True)
            node = _node_mask(mask, k)
            assert np.array_equal(got[0, :, :, 0] > 0, node[z] > 0), (z, k)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, sources[uid].ImagePositionPatient)
    # the image read back equals the prediction (volume voxels in the series' order)
    assert np.array_equal(sitk.GetArrayFromImage(image), np.stack([s.pixel_array for s in by_position]))

    report = report_case(sitk.ReadImage(pred), mask > 0, np.load(probs)["probabilities"][1].astype(float), case="case1")
    sr = hd.sr.srread(str(out / "sr.dcm"))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    names = {"Short axis": "short_axis_mm", "Long axis": "long_axis_mm", "Volume": "volume_mm3",
             "Probability": "confidence"}
    for group in groups:
        k = int(group.tracking_identifier.split()[-1])
        node = report["nodes"][k - 1]
        segment = group.referenced_segment
        assert segment[0].referenced_segment_numbers == [k]
        assert segment[0].referenced_sop_instance_uid == seg.SOPInstanceUID
        for m in group.get_measurements():
            assert m.value == pytest.approx(node[names[m.name.meaning]], abs=1e-6)
    assert {round(n["confidence"], 1) for n in report["nodes"]} == {0.9, 0.6}
    case = {m.name.meaning: m.value for g in sr.content.get_image_measurement_groups() for m in g.get_measurements()}
    assert case == {"Lymph nodes with confidence >= 0.5 and volume >= 0 mm3": 2,
                    "Confidence threshold of the node count": 0.5, "Minimum node volume of the node count": 0}
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99COSAM"


def test_without_the_dicom_extra_the_message_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    assert main(["--series", str(tmp_path), "--pred", str(tmp_path / "p.nii.gz"), "-o", str(tmp_path / "o")]) == 1
    assert 'pip install "cosam-nn[dicom]"' in capsys.readouterr().err


def _node_mask(mask, k):
    from cosam_nn.node_geometry import label_nodes
    return label_nodes(mask)[0] == k


@pytest.mark.parametrize("fault, message", [
    ("modality", "modality MR, expected CT"),
    ("gap", "uneven slice spacing"),
    ("size", "does not match the DICOM series: size"),
    ("two_series", "2 DICOM series in one folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, fault, message):
    volume = np.zeros((12, 40, 48), np.int16)
    series = str(tmp_path / "series")
    write_ct_series(series, volume, modality="MR" if fault == "modality" else "CT", skip=(5,) if fault == "gap" else ())
    if fault == "two_series":
        write_ct_series(str(tmp_path / "other"), volume)
        for f in os.listdir(tmp_path / "other"):
            os.replace(tmp_path / "other" / f, os.path.join(series, "b" + f))
    pred = str(tmp_path / "case1.nii.gz")
    shape = (12, 40, 40) if fault == "size" else (12, 40, 48)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.uint8)), pred)  # the series is checked first
    out = tmp_path / "dicom"
    assert main(["--series", series, "--pred", pred, "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() or not os.listdir(out)


def test_a_case_without_nodes_gets_a_report_without_measurements(tmp_path):
    series, _ = _case(tmp_path, shuffle=False)
    image = read_image(series)
    pred = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8))
    pred.CopyInformation(image)
    path = str(tmp_path / "case2.nii.gz")
    sitk.WriteImage(pred, path)
    assert main(["--series", series, "--pred", path, "-o", str(tmp_path / "out")]) == 0
    assert os.listdir(tmp_path / "out") == ["sr.dcm"]
    sr = hd.sr.srread(str(tmp_path / "out" / "sr.dcm"))
    assert sr.content.get_volumetric_roi_measurement_groups() == []
    case = sr.content.get_planar_roi_measurement_groups() + sr.content.get_volumetric_roi_measurement_groups()
    assert case == []
    counts = [m.value for g in sr.content.get_image_measurement_groups() for m in g.get_measurements()
              if m.name.meaning.startswith("Lymph nodes")]
    assert counts == [0]


def test_round_trip_series_to_nnunet_input_to_dicom(tmp_path, capsys):
    """cosam_dicom_input writes what nnUNetv2_predict reads; a prediction on that file's grid exports
    onto the right slices of the series."""
    series, volume = _case(tmp_path)
    volume[:, 0, 0] = np.arange(len(volume)) * 50 - 300  # a distinct value on each slice
    write_ct_series(series + "2", volume)
    assert input_main(["--series", series + "2", "-o", str(tmp_path / "imagesTs"), "--case", "c7"]) == 0
    image = sitk.ReadImage(str(tmp_path / "imagesTs" / "c7_0000.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(image), volume)  # slices in the order of the world positions
    mask = np.zeros(volume.shape, np.uint8)
    mask[7, 20:24, 20:24] = 1
    pred = sitk.GetImageFromArray(mask)
    pred.CopyInformation(image)
    sitk.WriteImage(pred, str(tmp_path / "c7.nii.gz"))
    assert main(["--series", series + "2", "--pred", str(tmp_path / "c7.nii.gz"), "-o", str(tmp_path / "out")]) == 0
    seg = hd.seg.segread(str(tmp_path / "out" / "seg.dcm"))
    (frame,) = seg.PerFrameFunctionalGroupsSequence
    uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    (source,) = [pydicom.dcmread(os.path.join(series + "2", f)) for f in os.listdir(series + "2")
                 if pydicom.dcmread(os.path.join(series + "2", f), stop_before_pixels=True).SOPInstanceUID == uid]
    assert source.InstanceNumber == 8 and source.pixel_array[0, 0] == 7 * 50 - 300


def test_dicom_input_refuses_a_folder_of_two_series(tmp_path, capsys):
    volume = np.zeros((6, 20, 20), np.int16)
    write_ct_series(str(tmp_path / "s"), volume)
    write_ct_series(str(tmp_path / "t"), volume)
    for f in os.listdir(tmp_path / "t"):
        os.replace(tmp_path / "t" / f, tmp_path / "s" / ("b" + f))
    assert input_main(["--series", str(tmp_path / "s"), "-o", str(tmp_path / "in")]) == 1
    err = capsys.readouterr().err
    assert "2 DICOM series" in err and not (tmp_path / "in").exists()


def test_specks_become_no_segment_and_an_earlier_export_is_replaced_whole(tmp_path, capsys):
    series, _ = _case(tmp_path)
    image, mask, pred, probs = _prediction(series, tmp_path)  # nodes of 176 and 34 mm3
    out = tmp_path / "dicom"
    assert main(["--series", series, "--pred", pred, "-o", str(out), "--min-volume", "50"]) == 0
    seg = hd.seg.segread(str(out / "seg.dcm"))
    assert seg.number_of_segments == 1 and seg.SegmentSequence[0].SegmentLabel == "node 1"
    assert seg.SegmentSequence[0].AnatomicRegionSequence[0].CodeMeaning == "Pelvis"
    assert "RecommendedDisplayCIELabValue" in seg.SegmentSequence[0]
    # an earlier export stays unless replaced; replaced by a case without nodes, no seg.dcm is left behind
    empty = sitk.GetImageFromArray(np.zeros(mask.shape, np.uint8))
    empty.CopyInformation(image)
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    capsys.readouterr()
    assert main(["--series", series, "--pred", str(tmp_path / "empty.nii.gz"), "-o", str(out)]) == 1
    assert "earlier export" in capsys.readouterr().err and sorted(os.listdir(out)) == ["seg.dcm", "sr.dcm"]
    assert main(["--series", series, "--pred", str(tmp_path / "empty.nii.gz"), "-o", str(out), "--overwrite"]) == 0
    assert os.listdir(out) == ["sr.dcm"]

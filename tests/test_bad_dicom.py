"""Bad DICOM input, as a hospital folder can hold it: every fault is one line naming the folder, and
nothing is written. Part of the bad-input catalogue of docs/data.md."""
import os

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom", reason="the test extra (pydicom) is not installed")

from cosam_nn.data.dicom_input import main as input_main  # noqa: E402
from dicom_files import COL, ROW, SPACING, ct_volume, write_ct_series  # noqa: E402

SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]


def _no_position(z, ds):
    if z == 4:
        del ds.ImagePositionPatient


def _no_orientation(z, ds):
    if z == 4:
        del ds.ImageOrientationPatient


def _short_position(z, ds):
    if z == 4:
        ds.ImagePositionPatient = [1.0, 2.0]


def _turned(z, ds):
    if z == 6:
        ds.ImageOrientationPatient = SAGITTAL


def _localiser(z, ds):
    if z == 0:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]


def _tilted(z, ds):
    shift = np.asarray(ds.ImagePositionPatient, float) + z * 0.4 * COL  # each slice 0.4 mm further along the column
    ds.ImagePositionPatient = [float(v) for v in shift]


def _displaced(z, ds):
    if z == 7:
        normal = np.cross(ROW, COL)
        ds.ImagePositionPatient = [float(v) for v in np.asarray(ds.ImagePositionPatient, float) + 0.6 * normal]


def _no_modality(z, ds):
    del ds.Modality


def _other_size(z, ds):
    if z == 3:
        ds.Rows, ds.Columns = 20, 24
        ds.PixelData = np.zeros((20, 24), np.int16).tobytes()


def _write(folder, fault):
    volume = ct_volume()
    if fault == "single slice":
        write_ct_series(folder, volume[:1])
    elif fault == "missing slice":
        write_ct_series(folder, volume, skip=(5,))
    elif fault == "repeated slice":
        write_ct_series(folder, volume)
        write_ct_series(folder + "_copy", volume, edit=lambda z, ds: None)
        first = sorted(os.listdir(folder + "_copy"))[0]
        ds = pydicom.dcmread(os.path.join(folder + "_copy", first))
        reference = pydicom.dcmread(os.path.join(folder, sorted(os.listdir(folder))[0]))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = reference.SeriesInstanceUID, pydicom.uid.generate_uid()
        ds.ImagePositionPatient = reference.ImagePositionPatient
        ds.save_as(os.path.join(folder, "zz_repeat.dcm"), enforce_file_format=True)
    elif fault == "two series":
        write_ct_series(folder, volume)
        write_ct_series(folder, volume[:5])
    elif fault == "MR":
        write_ct_series(folder, volume, modality="MR")
    elif fault == "empty folder":
        os.makedirs(folder)
    elif fault == "no DICOM files":
        os.makedirs(folder)
        for name in ("notes.txt", "thumb.png"):
            with open(os.path.join(folder, name), "w") as f:
                f.write("not an image")
    elif fault == "not HU":
        write_ct_series(folder, (np.arange(np.prod(volume.shape)).reshape(volume.shape) % 40).astype(np.int16))
    else:
        edit = {"no position": _no_position, "no orientation": _no_orientation, "short position": _short_position,
                "other orientation": _turned, "localiser": _localiser, "gantry tilt": _tilted,
                "uneven spacing": _displaced, "no modality": _no_modality, "other slice size": _other_size}[fault]
        write_ct_series(folder, volume, edit=edit)


FAULTS = [
    ("missing slice", "uneven slice spacing"),
    ("uneven spacing", "uneven slice spacing"),
    ("repeated slice", "repeated position"),
    ("no position", "without a usable ImagePositionPatient"),
    ("short position", "without a usable ImagePositionPatient"),
    ("no orientation", "without a usable ImageOrientationPatient"),
    ("other orientation", "of another orientation"),
    ("localiser", "localiser image"),
    ("gantry tilt", "gantry tilt"),
    ("single slice", "a single slice"),
    ("two series", "2 DICOM series in one folder"),
    ("MR", "modality MR, expected CT"),
    ("no modality", "modality none, expected CT"),
    ("empty folder", "no DICOM image files"),
    ("no DICOM files", "no DICOM image files"),
    ("not HU", "cannot be CT in Hounsfield units"),
    ("other slice size", "series"),
]


@pytest.mark.parametrize("fault, message", FAULTS)
def test_cosam_dicom_input_refuses_a_series_that_is_not_one_volume(tmp_path, capsys, fault, message):
    series = str(tmp_path / "series")
    _write(series, fault)
    out = tmp_path / "inputs"
    assert input_main(["--series", series, "-o", str(out), "--case", "c1"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and series in err, err
    assert not out.exists() or not os.listdir(out)


@pytest.mark.parametrize("fault, message", [("missing slice", "uneven slice spacing"), ("localiser", "localiser"),
                                            ("gantry tilt", "gantry tilt")])
def test_the_converter_reads_dicom_folders_through_the_same_checks(tmp_path, capsys, monkeypatch, fault, message):
    from cosam_nn.dataset_conversion.Dataset501_Meply import main as convert_main
    source = tmp_path / "source"
    _write(str(source / "images" / "p1"), fault)
    (source / "labels").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((12, 40, 48), np.uint8)), str(source / "labels" / "p1.nii.gz"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert convert_main([str(source), "-d", "77"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not any(d.startswith("Dataset077") for d in os.listdir(tmp_path / "raw"))


@pytest.mark.parametrize("fault, message", [("no position", "ImagePositionPatient"), ("localiser", "localiser"),
                                            ("gantry tilt", "gantry tilt"), ("other orientation", "another orientation")])
def test_the_export_checks_its_series_alike(tmp_path, capsys, fault, message):
    pytest.importorskip("highdicom", reason="the dicom extra (highdicom) is not installed")
    from cosam_nn.evaluation.dicom_export import main as export_main
    series = str(tmp_path / "series")
    _write(series, fault)
    pred = str(tmp_path / "c1.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((12, 40, 48), np.uint8)), pred)
    assert export_main(["--series", series, "--pred", pred, "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["../escape", "/tmp/abs", "a/b", ".hidden", "a\\b", ""])
def test_a_case_name_cannot_leave_the_output_folder(tmp_path, capsys, case):
    series = str(tmp_path / "series")
    write_ct_series(series, ct_volume())
    out = tmp_path / "inputs"
    assert input_main(["--series", series, "-o", str(out), "--case", case]) == 1
    err = capsys.readouterr().err.strip()
    assert "not a plain file name" in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "escape_0000.nii.gz").exists()


def test_an_existing_input_is_replaced_only_when_asked_and_bad_outputs_are_one_line(tmp_path, capsys):
    series = str(tmp_path / "series")
    write_ct_series(series, ct_volume())
    out = tmp_path / "inputs"
    assert input_main(["--series", series, "-o", str(out), "--case", "c1"]) == 0
    written = (out / "c1_0000.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert input_main(["--series", series, "-o", str(out), "--case", "c1"]) == 1
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert (out / "c1_0000.nii.gz").stat().st_mtime_ns == written
    assert input_main(["--series", series, "-o", str(out), "--case", "c1", "--overwrite"]) == 0
    (tmp_path / "a_file").write_text("x")
    assert input_main(["--series", series, "-o", str(tmp_path / "a_file"), "--case", "c1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "a_file" in err and len(err.splitlines()) == 1, err
    for missing in (str(tmp_path / "nowhere"), str(tmp_path / "a_file")):
        assert input_main(["--series", missing, "-o", str(out)]) == 1
        assert "not a folder holding a DICOM series" in capsys.readouterr().err


def test_a_good_series_reads_at_the_positions_of_its_headers(tmp_path):
    """The checked reader stacks the slices in the order of their positions along the normal, with
    the spacing and origin of the headers (the files are written in shuffled order)."""
    from cosam_nn.data.dicom_series import read_series
    volume = ct_volume()
    series = str(tmp_path / "series")
    write_ct_series(series, volume)
    image = read_series(series)
    assert np.array_equal(sitk.GetArrayFromImage(image), volume)
    assert image.GetSpacing() == pytest.approx((SPACING[0], SPACING[1], SPACING[2]))
    assert image.GetOrigin() == pytest.approx((-40.0, 10.0, 100.0))

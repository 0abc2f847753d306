"""CT series written as DICOM files for the tests, with every fault a real folder can hold."""
import os

import numpy as np
import pydicom

# rows and columns of each slice turned 30 degrees about z and tilted: nothing is axis-aligned
_A = np.deg2rad(30)
ROW = np.array([np.cos(_A), np.sin(_A), 0.0])
COL = np.array([-np.sin(_A) * np.cos(0.2), np.cos(_A) * np.cos(0.2), np.sin(0.2)])
SPACING = (0.8, 0.7, 2.5)  # column (x), row (y), slice


def write_ct_series(folder, volume, shuffle=True, modality="CT", skip=(), series_uid=None, edit=None):
    """volume (Z, Y, X) int16 as a CT series with the orientation above; file names in shuffled order.
    edit(z, ds): a last change to slice z's dataset before it is written (a fault to plant)."""
    os.makedirs(folder, exist_ok=True)
    normal = np.cross(ROW, COL)
    study, series, frame = pydicom.uid.generate_uid(), series_uid or pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    order = np.random.default_rng(0).permutation(len(volume)) if shuffle else np.arange(len(volume))
    for k, z in enumerate(order):
        if z in skip:
            continue
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.SOPClassUID = pydicom.uid.CTImageStorage
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P1", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "A1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = modality, 3, int(z) + 1, "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in np.r_[ROW, COL]]
        ds.ImagePositionPatient = [float(v) for v in np.array([-40.0, 10.0, 100.0]) + z * SPACING[2] * normal]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = volume[z].astype(np.int16).tobytes()
        if edit is not None:
            edit(int(z), ds)
        ds.save_as(os.path.join(folder, f"file{k:03d}.dcm"), enforce_file_format=True)


def ct_volume(shape=(12, 40, 48), seed=1):
    """Random int16 values over a CT-like range (enough distinct values to pass as HU)."""
    return np.random.default_rng(seed).integers(-200, 200, shape).astype(np.int16)

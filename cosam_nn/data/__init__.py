"""The data path in: Meply layouts, synthetic Meply-like CT, DICOM series, splits and file helpers."""

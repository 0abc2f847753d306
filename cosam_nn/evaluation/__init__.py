"""The data path out: metrics, per-case evaluation, node reports, pictures, DICOM SEG/SR export and the
benchmark's bootstrap statistics."""

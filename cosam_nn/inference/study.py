"""One case's input for a model: read, checked, and given to nnU-Net as its image reader reads files."""
import os

from cosam_nn.data.ct_image import check_ct, read_image
from cosam_nn.data.fileio import safe_name, write_image_atomic


class Study:
    """One case's input, checked, as the model's image reader gives it to nnU-Net."""

    def __init__(self, case, kind, source, workdir, allow_non_hu, warn):
        self.case, self.kind, self.source = safe_name(case, "case name"), kind, source
        image = read_image(source)
        checked = check_ct(f"{kind} {source}", image, warn, allow_non_hu)
        if kind == "dicom":  # as cosam_dicom_input writes it for nnUNetv2_predict
            self.path = write_image_atomic(checked, os.path.join(workdir, f"{self.case}_0000.nii.gz"))
        else:
            self.path = source
        self.size, self.properties = image.GetSize(), None

    def slices(self):
        return self.size[2]

    def read(self, predictor):
        """The image (C, Z, Y, X) as the model's plans read it, as nnUNetv2_predict would; keeps its
        properties (geometry) for writing the result back."""
        reader = predictor.plans_manager.image_reader_writer_class()
        image, self.properties = reader.read_images([self.path])
        return image



"""nnU-Net's predictor, run in this process, that also keeps CoSAM's detection scores.

The prediction is nnU-Net's own (preprocessing, sliding window with Gaussian tile weights, test-time
flips, resampling back to the image), so it equals `nnUNetv2_predict`'s. What the exported
probabilities cannot say is each node's final detection score: a mask's probability is capped at its
score but never below 0.62, and tiles average. So while nnU-Net runs its windows, the score
(sqrt(detector x CCM)) of every detection a window kept, in the unflipped pass, is painted over that
detection's boxes into a score volume of the preprocessed image (the highest where boxes overlap);
with several folds their volumes are averaged, like their logits. The volume is then brought back to
the image's grid as nnU-Net brings the logits back, and a node's confidence is the highest score
inside it.
"""
import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor


def to_image_grid(volume, properties, plans_manager, configuration_manager):
    """A float volume of the preprocessed image (Z', Y', X') on the image's own grid, as nnU-Net's
    export brings its logits back: resampled to the cropped shape, put into the crop's box, transposed."""
    spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    current = configuration_manager.spacing if len(configuration_manager.spacing) == \
        len(properties["shape_after_cropping_and_before_resampling"]) else [spacing[0], *configuration_manager.spacing]
    resampled = configuration_manager.resampling_fn_probabilities(
        volume[None].float(), properties["shape_after_cropping_and_before_resampling"], current, spacing)[0]
    resampled = resampled.cpu().numpy() if isinstance(resampled, torch.Tensor) else np.asarray(resampled)
    full = insert_crop_into_image(np.zeros(properties["shape_before_cropping"], np.float32),
                                  resampled.astype(np.float32), properties["bbox_used_for_cropping"])
    return full.transpose(plans_manager.transpose_backward)


def paint_detections(scores, corner, detections):
    """Write each detection's score over its boxes (on the slices where it is present) into `scores`
    (Z, Y, X), keeping the highest; corner (z, y, x) is the window's first voxel."""
    z0, y0, x0 = corner
    for boxes, present, score in zip(detections.boxes, detections.present, detections.scores.tolist()):
        for slice_index in torch.nonzero(present).flatten().tolist():
            bx0, by0, bx1, by1 = boxes[slice_index].tolist()
            ys = slice(y0 + max(0, int(np.floor(by0))), y0 + max(0, int(np.ceil(by1))))
            xs = slice(x0 + max(0, int(np.floor(bx0))), x0 + max(0, int(np.ceil(bx1))))
            region = scores[z0 + slice_index, ys, xs]
            torch.maximum(region, torch.tensor(score, dtype=scores.dtype), out=region)


class CoSAMPredictor(nnUNetPredictor):
    """`predict_case` returns nnU-Net's segmentation and probabilities on the image's grid and, for a
    CoSAM network, the detection score volume on the same grid (None for other networks)."""

    def _records(self):
        return hasattr(self.network, "recorded")

    def _internal_maybe_mirror_and_predict(self, x):
        if not self._records():
            return super()._internal_maybe_mirror_and_predict(x)
        start = len(self.network.recorded)
        prediction = super()._internal_maybe_mirror_and_predict(x)
        self._tile_detections.append(self.network.recorded[start][0])  # nnU-Net's first call is unflipped
        del self.network.recorded[start:]
        return prediction

    def _internal_predict_sliding_window_return_logits(self, data, slicers, do_on_device=True):
        self._tile_detections = []
        logits = super()._internal_predict_sliding_window_return_logits(data, slicers, do_on_device)
        if self._records():
            scores = torch.zeros(data.shape[1:], dtype=torch.float32)
            for sl, detections in zip(slicers, self._tile_detections):  # nnU-Net runs the tiles in this order
                paint_detections(scores, [s.start for s in sl[1:]], detections)
            self._padded_scores = scores
        return logits

    def predict_sliding_window_return_logits(self, input_image):
        logits = super().predict_sliding_window_return_logits(input_image)
        if self._records():
            _, revert = pad_nd_image(input_image, self.configuration_manager.patch_size, "constant", {"value": 0},
                                     True, None)
            self._fold_scores.append(self._padded_scores[tuple(revert[1:])])
        return logits

    def predict_case(self, image, properties):
        """image (C, Z, Y, X) as the plans' reader gives it, with its properties -> (segmentation (Z, Y, X),
        probabilities (classes, Z, Y, X), detection scores (Z, Y, X) or None), on the image's grid."""
        adapter = PreprocessAdapterFromNpy([image], [None], [properties], [None], self.plans_manager, self.dataset_json,
                                           self.configuration_manager, num_threads_in_multithreaded=1)
        case = next(adapter)
        self._fold_scores = []
        if self._records():
            self.network.recorded = []
        try:
            logits = self.predict_logits_from_preprocessed_data(case["data"]).cpu()
        finally:
            if self._records():
                self.network.recorded = None
        segmentation, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, self.plans_manager, self.configuration_manager, self.label_manager, case["data_properties"],
            return_probabilities=True)
        scores = None
        if self._fold_scores:
            scores = to_image_grid(torch.stack(self._fold_scores).mean(0), case["data_properties"], self.plans_manager,
                                   self.configuration_manager)
        return segmentation, probabilities, scores

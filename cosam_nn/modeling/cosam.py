"""CoSAM: the detector, U-SAM and the CCM composed, from a window to boxes and segmentation logits.

Inference, fully automatic (no prompts from a person):
window (B, 1, L, H, W) -> sequence detector -> per proposal, its boxes on the slices where it is
present -> each box cropped (a square of at least `crop_size` slice pixels around it, resampled to
U-SAM's input) and segmented by U-SAM prompted with that box -> CCM on (mean mask token of the
proposal, its sequence feature) -> score = sqrt(detector score x CCM probability) -> threshold and
NMS on the proposals' union boxes -> the kept masks pasted (max) into the window's logits
(B, 2, L, H, W) as [0, foreground logit]. The foreground logit lies in [-LOGIT_BOUND, LOGIT_BOUND]
(nnU-Net sums tiles in float16); outside every kept mask's crop it is BACKGROUND_LOGIT.
"""
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import nms

from cosam_nn.modeling.crops import boxes_in_crops, crop_regions, crop_slices, paste_crop
from cosam_nn.modeling.ccm import CollaborativeClassifier, mean_token_per_proposal
from cosam_nn.modeling.common import LOGIT_BOUND, window_slices
from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.sequence_detector import SequenceDetector
from cosam_nn.modeling.usam import USAM
from cosam_nn.node_geometry import union_boxes
from cosam_nn.modeling.training_step import training_losses

# Foreground logit where no kept box lies: below 0 (background), but weak. nnU-Net averages the
# logits of overlapping tiles with Gaussian weights, and a kept mask's logit can be as low as
# MIN_FG_LOGIT: at -4 a window that missed a node (or saw it cut at its edge) outvoted the window
# that found it on every slice between two window centres (bench/RESULTS.md has the measurement).
# The exported probability is therefore sigmoid(-0.25) = 0.44 wherever no box was kept: read the
# segmentation and the nodes' mean probabilities, not the background level.
BACKGROUND_LOGIT = -0.25
MIN_FG_LOGIT = 0.5


def score_logit_cap(scores):
    """Highest foreground logit of each detection's mask: the logit of its score (>= MIN_FG_LOGIT).

    A mask pixel keeps U-SAM's decision (logit > 0 is node) but its probability is at most the
    detection's score, so a node's mean probability ranks it by how sure CoSAM is that it is a
    metastatic node (what FROC and AP need), not by how sharp its outline is.
    """
    return torch.logit(scores.float(), eps=1e-6).clamp(MIN_FG_LOGIT, LOGIT_BOUND)


def finite_input(window):
    """The window with non-finite voxels set to 0 (the normalised image's mean), with a warning: a few
    NaN voxels would otherwise turn every proposal of the window into NaN and blank it."""
    bad = ~torch.isfinite(window)
    if not bad.any():
        return window
    warnings.warn(f"CoSAM input holds {int(bad.sum())} NaN or infinite voxel(s); set to 0 (the image's mean "
                  f"after normalisation). Check the image: cosam_convert_meply refuses such images.", RuntimeWarning)
    return torch.where(bad, torch.zeros_like(window), window)


@dataclass
class Detections:
    """Kept detections of one window: boxes (N, L, 4), present (N, L) bool, scores (N,)."""
    boxes: torch.Tensor
    present: torch.Tensor
    scores: torch.Tensor


@dataclass
class Candidates:
    """Segmented proposals of one window before the threshold: boxes (N, L, 4), present (N, L),
    scores (N,); one U-SAM mask per (proposal, present slice): masks (M, S, S) logits (None if
    N = 0), owner (M,) proposal index, slice_id (M,), crop regions (M, 4)."""
    boxes: torch.Tensor
    present: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor
    owner: torch.Tensor
    slice_id: torch.Tensor
    regions: torch.Tensor


class CoSAM(nn.Module):
    """forward(window (B, 1, L, H, W)) -> logits (B, 2, L, H, W); `detect` also returns the boxes."""

    def __init__(self, cfg: CoSAMConfig):
        super().__init__()
        self.cfg = cfg
        self.detector = SequenceDetector(cfg.detector)
        self.usam = USAM(cfg.usam)
        self.ccm = CollaborativeClassifier(cfg.usam.prompt_dim, cfg.detector.token_dim,
                                           cfg.ccm_hidden) if cfg.use_ccm else None
        self.register_buffer("score_threshold", torch.tensor(float(cfg.score_threshold)))
        # the calibration's result at that threshold on the validation cases: node sensitivity, false
        # candidates per case, number of cases (NaN until calibrated); saved with the weights, so that
        # the operating point travels with the model
        self.register_buffer("operating_point", torch.full((3,), float("nan")))
        self.recorded = None  # a list to collect each inference call's Detections in (cosam_predict)

    def segment_boxes(self, window, slice_index, boxes):
        """U-SAM on boxes (M, 4) of slices slice_index (M,) (= b * L + l) of window.

        Returns mask logits (M, 1, S, S), IoU predictions (M, 1), mask tokens (M, P) and the crop
        regions (M, 4) in slice pixels.
        """
        slices = window_slices(window)
        regions = crop_regions(boxes, self.cfg.crop_size)
        size = self.cfg.usam.img_size
        crops = crop_slices(slices, slice_index, regions, size)
        prompts = boxes_in_crops(boxes, regions, size)
        masks, iou, tokens = self.usam(crops, list(prompts.unsqueeze(1)))
        return masks, iou, tokens, regions

    def ccm_logits(self, tokens, owner, seq_features):
        """CCM logits (N, 2) of N proposals: the U-SAM mask tokens (M, P) of their boxes averaged per
        proposal (owner (M,) the proposal of each box) beside their sequence features (N, D)."""
        return self.ccm(mean_token_per_proposal(tokens, owner, len(seq_features)), seq_features)

    @property
    def threshold(self):
        """The final score a detection needs: the `score_threshold` buffer (saved with the weights,
        so a threshold calibrated after training travels with the checkpoint)."""
        return float(self.score_threshold)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, *args, **kwargs)
        key = prefix + "score_threshold"
        if key in missing_keys:  # checkpoints from before the threshold was a buffer: the configured default
            missing_keys.remove(key)
            self.score_threshold.fill_(float(self.cfg.score_threshold))
        key = prefix + "operating_point"
        if key in missing_keys:  # checkpoints from before it was kept: not known
            missing_keys.remove(key)
            self.operating_point.fill_(float("nan"))

    def _proposals_to_segment(self, det, b, threshold):
        """(indices, present (N, L)) of the proposals of window b worth segmenting, best first.

        The final score is sqrt(detector score x CCM probability), so a proposal whose detector
        score is below threshold^2 can never be kept: it is not segmented at all. With
        `segment_nms_iou` < 1, a proposal whose union box overlaps a better-scored one's by more is
        not segmented either: a low threshold otherwise sends U-SAM many near-copies of one
        candidate, of which the final NMS keeps one.
        """
        scores = det["scores"][b].sigmoid()
        order = scores.argsort(descending=True)[: self.cfg.max_boxes]
        floor = threshold ** 2 if self.ccm is not None else threshold
        order = order[scores[order] >= floor]
        present = det["presence"][b][order].sigmoid() > self.cfg.presence_threshold
        seen = present.any(1)
        order, present = order[seen], present[seen]
        if self.cfg.segment_nms_iou < 1 and len(order) > 1:
            kept = nms(union_boxes(det["boxes"][b][order], present), scores[order], self.cfg.segment_nms_iou)
            order, present = order[kept], present[kept]
        return order, present

    def _window_candidates(self, window, det, i, threshold):
        """`Candidates` of window i: its proposals that may reach threshold, segmented and scored."""
        length = window.shape[2]
        cand, present = self._proposals_to_segment(det, i, threshold)
        boxes = det["boxes"][i][cand]
        scores = det["scores"][i][cand].sigmoid()
        owner, slice_id = torch.nonzero(present, as_tuple=True)
        if len(cand) == 0:
            return Candidates(boxes, present, scores, None, owner, slice_id, None)
        index = i * length + slice_id
        masks, _, tokens, regions = self.segment_boxes(window, index, boxes[owner, slice_id])
        if self.ccm is not None:
            logits = self.ccm_logits(tokens, owner, det["seq_features"][i][cand])
            ccm_prob = logits.softmax(-1)[:, 1]
            scores = torch.sqrt(scores * ccm_prob)  # both must agree; stays on the probability scale
        return Candidates(boxes, present, scores, masks[:, 0], owner, slice_id, regions)

    @torch.no_grad()
    def candidates(self, window, threshold=None):
        """One detector pass and U-SAM on every proposal that may reach `threshold` (default: the
        model's): a list of B `Candidates`, before the threshold and NMS."""
        threshold = self.threshold if threshold is None else threshold
        window = finite_input(window)
        det = self.detector(window)
        return [self._window_candidates(window, det, i, threshold) for i in range(window.shape[0])]

    def keep(self, cand, threshold=None):
        """Indices of the candidates kept: score >= threshold, then NMS on their union boxes."""
        threshold = self.threshold if threshold is None else threshold
        kept = torch.nonzero(cand.scores >= threshold).squeeze(1)
        return kept[nms(union_boxes(cand.boxes[kept], cand.present[kept]), cand.scores[kept], self.cfg.nms_iou)]

    def paste(self, fg, cand, kept):
        """Write the kept candidates' masks into the window's background fg (L, H, W): inside their crops
        the largest mask logit, each capped at its score's logit; elsewhere fg stays as it is.

        The mask's background side is floored at BACKGROUND_LOGIT, or with `symmetric_masks` at minus
        the cap, which keeps the outline where U-SAM put it when nnU-Net resamples and averages logits.
        """
        cap = score_logit_cap(cand.scores)
        canvas = torch.full_like(fg, -float("inf"))
        for m in torch.nonzero(torch.isin(cand.owner, kept)).squeeze(1).tolist():
            top = float(cap[cand.owner[m]])
            floor = -top if self.cfg.symmetric_masks else BACKGROUND_LOGIT
            paste_crop(canvas[cand.slice_id[m]], cand.masks[m].clamp(floor, top), cand.regions[m])
        covered = torch.isfinite(canvas)
        fg[covered] = canvas[covered]

    @torch.no_grad()
    def detect(self, window):
        """(logits (B, 2, L, H, W), list of B `Detections`)."""
        b, _, length, h, w = window.shape
        fg = torch.full((b, length, h, w), BACKGROUND_LOGIT, device=window.device, dtype=window.dtype)
        results = []
        for i, cand in enumerate(self.candidates(window)):
            kept = self.keep(cand)
            self.paste(fg[i], cand, kept)
            results.append(Detections(cand.boxes[kept], cand.present[kept], cand.scores[kept]))
        logits = torch.stack([torch.zeros_like(fg), fg], dim=1)
        return logits, results

    def forward(self, window, labels=None, phase="joint"):
        """Logits (B, 2, L, H, W); with labels (B, L, H, W), the training losses of `phase` instead.

        One entry point for both, so that DistributedDataParallel sees every training step.
        """
        if labels is None:
            logits, detections = self.detect(window)
            if self.recorded is not None:
                self.recorded.append(detections)
            return logits
        return training_losses(self, window, labels, phase)


"""CoSAM: the detector, U-SAM and the CCM composed, from a window to boxes and segmentation logits.

Inference, fully automatic (no prompts from a person):
window (B, 1, L, H, W) -> sequence detector -> per proposal, its boxes on the slices where it is
present -> each box cropped (a square of at least `crop_size` slice pixels around it, resampled to
U-SAM's input) and segmented by U-SAM prompted with that box -> CCM on (mean mask token of the
proposal, its sequence feature) -> score = sqrt(detector score x CCM probability) -> threshold and
NMS on the proposals' union boxes -> the kept masks pasted (max) into the window's logits
(B, 2, L, H, W) as [0, foreground logit]. The foreground logit lies in [BACKGROUND_LOGIT, LOGIT_BOUND]
(nnU-Net sums tiles in float16); a window without a kept box is BACKGROUND_LOGIT everywhere.
"""
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import nms

from cosam_nn.crops import boxes_in_crops, crop_regions, crop_slices, paste_crop
from cosam_nn.modeling.ccm import CollaborativeClassifier, mean_token_per_proposal
from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.sequence_detector import SequenceDetector
from cosam_nn.modeling.usam import USAM
from cosam_nn.node_geometry import union_boxes
from cosam_nn.training import training_losses

LOGIT_BOUND = 12.0
# Foreground logit where no kept box lies. Weak on purpose: nnU-Net averages the logits of
# overlapping tiles, and a window that missed a node (or held only part of it) must not outvote the
# window that found it.
BACKGROUND_LOGIT = -4.0
MIN_FG_LOGIT = 0.5


def score_logit_cap(scores):
    """Highest foreground logit of each detection's mask: the logit of its score (>= MIN_FG_LOGIT).

    A mask pixel keeps U-SAM's decision (logit > 0 is node) but its probability is at most the
    detection's score, so a node's mean probability ranks it by how sure CoSAM is that it is a
    metastatic node (what FROC and AP need), not by how sharp its outline is.
    """
    return torch.logit(scores.float(), eps=1e-6).clamp(MIN_FG_LOGIT, LOGIT_BOUND)


@dataclass
class Detections:
    """Kept detections of one window: boxes (N, L, 4), present (N, L) bool, scores (N,)."""
    boxes: torch.Tensor
    present: torch.Tensor
    scores: torch.Tensor


class CoSAM(nn.Module):
    """forward(window (B, 1, L, H, W)) -> logits (B, 2, L, H, W); `detect` also returns the boxes."""

    def __init__(self, cfg: CoSAMConfig):
        super().__init__()
        self.cfg = cfg
        self.detector = SequenceDetector(cfg.detector)
        self.usam = USAM(cfg.usam)
        self.ccm = CollaborativeClassifier(cfg.usam.prompt_dim, cfg.detector.token_dim, cfg.ccm_hidden) \
            if cfg.use_ccm else None

    def segment_boxes(self, window, slice_index, boxes):
        """U-SAM on boxes (M, 4) of slices slice_index (M,) (= b * L + l) of window.

        Returns mask logits (M, 1, S, S), IoU predictions (M, 1), mask tokens (M, P) and the crop
        regions (M, 4) in slice pixels.
        """
        b, _, length, h, w = window.shape
        slices = window.permute(0, 2, 1, 3, 4).reshape(b * length, 1, h, w)
        regions = crop_regions(boxes, self.cfg.crop_size)
        size = self.cfg.usam.img_size
        crops = crop_slices(slices, slice_index, regions, size)
        prompts = boxes_in_crops(boxes, regions, size)
        masks, iou, tokens = self.usam(crops, list(prompts.unsqueeze(1)))
        return masks, iou, tokens, regions

    def _candidates(self, det, b):
        """Indices of the proposals of window b worth segmenting, best first.

        The final score is sqrt(detector score x CCM probability), so a proposal whose detector
        score is below threshold^2 can never be kept: it is not segmented at all.
        """
        scores = det["scores"][b].sigmoid()
        order = scores.argsort(descending=True)[: self.cfg.max_boxes]
        floor = self.cfg.score_threshold ** 2 if self.ccm is not None else self.cfg.score_threshold
        return order[scores[order] >= floor]

    @torch.no_grad()
    def detect(self, window):
        """(logits (B, 2, L, H, W), list of B `Detections`)."""
        b, _, length, h, w = window.shape
        det = self.detector(window)
        fg = torch.full((b, length, h, w), BACKGROUND_LOGIT, device=window.device, dtype=window.dtype)
        results = []
        for i in range(b):
            cand = self._candidates(det, i)
            present = det["presence"][i][cand].sigmoid() > self.cfg.presence_threshold
            boxes = det["boxes"][i][cand]
            keep = present.any(1)
            cand, present, boxes = cand[keep], present[keep], boxes[keep]
            if len(cand) == 0:
                results.append(Detections(boxes, present, det["scores"][i][cand].sigmoid()))
                continue
            owner, slice_id = torch.nonzero(present, as_tuple=True)
            masks, _, tokens, regions = self.segment_boxes(window, i * length + slice_id, boxes[owner, slice_id])
            scores = det["scores"][i][cand].sigmoid()
            if self.ccm is not None:
                mean_tokens = mean_token_per_proposal(tokens, owner, len(cand))
                ccm_prob = self.ccm(mean_tokens, det["seq_features"][i][cand]).softmax(-1)[:, 1]
                scores = torch.sqrt(scores * ccm_prob)  # both must agree; stays on the probability scale
            kept = torch.nonzero(scores >= self.cfg.score_threshold).squeeze(1)
            kept = kept[nms(union_boxes(boxes[kept], present[kept]), scores[kept], self.cfg.nms_iou)]
            cap = score_logit_cap(scores)
            for m in torch.nonzero(torch.isin(owner, kept)).squeeze(1).tolist():
                paste_crop(fg[i, slice_id[m]], masks[m, 0].clamp(BACKGROUND_LOGIT, float(cap[owner[m]])), regions[m])
            results.append(Detections(boxes[kept], present[kept], scores[kept]))
        logits = torch.stack([torch.zeros_like(fg), fg], dim=1)
        return logits, results

    def forward(self, window, labels=None, phase="joint"):
        """Logits (B, 2, L, H, W); with labels (B, L, H, W), the training losses of `phase` instead.

        One entry point for both, so that DistributedDataParallel sees every training step.
        """
        if labels is None:
            return self.detect(window)[0]
        return training_losses(self, window, labels, phase)


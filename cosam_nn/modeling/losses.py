"""Losses of the segmenter (the detector's own losses live with it in modeling/sequence_detector.py)."""
import torch
from torch.nn import functional as F


def soft_dice_loss(logits, target, eps=1.0):
    """1 - soft Dice per mask, averaged; logits and target (K, 1, H, W)."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return (1 - (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)).mean()


def mask_loss(logits, target):
    """U-SAM's loss: 0.4 cross-entropy + 0.6 Dice (paper / released U-SAM).

    Cross-entropy over all masks; Dice only over the masks whose target holds the node. Boxes
    without a node (unmatched proposals) have empty targets, and a per-mask Dice on those would
    only push every pixel to background, which on small nodes collapses U-SAM to empty masks.
    """
    ce = F.binary_cross_entropy_with_logits(logits, target)
    has_node = target.flatten(1).amax(1) > 0
    if not has_node.any():
        return ce
    return 0.4 * ce + 0.6 * soft_dice_loss(logits[has_node], target[has_node])


def mask_iou(logits, target):
    """IoU of thresholded masks with their targets, (K,): the U-SAM IoU head's regression target."""
    pred = logits.detach() > 0
    t = target > 0.5
    inter = (pred & t).flatten(1).sum(1).float()
    union = (pred | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))

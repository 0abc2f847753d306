"""U-SAM alone, without prompts: the paper's "U-SAM" baseline row, segmenting whole slices.

Each slice of the window is resized to U-SAM's input, segmented with no prompt (SAM's prompt
encoder then gives only its no-mask embedding) and resized back.
"""
import torch
from torch import nn
from torch.nn import functional as F

from cosam_nn.modeling.losses import mask_iou, mask_loss
from cosam_nn.modeling.common import LOGIT_BOUND, window_slices
from cosam_nn.modeling.config import USAMConfig
from cosam_nn.modeling.usam import USAM



class USAMSegmenter(nn.Module):
    """window (B, 1, L, H, W) -> logits (B, 2, L, H, W); with labels (B, L, H, W) -> losses dict."""

    def __init__(self, cfg: USAMConfig):
        super().__init__()
        self.usam = USAM(cfg)
        for embedding in self.usam.prompt_encoder.point_embeddings[2:]:  # box corners: unused without boxes
            embedding.requires_grad_(False)

    def _slice_logits(self, window):
        b, _, length, h, w = window.shape
        s = self.usam.cfg.img_size
        slices = F.interpolate(window_slices(window), size=(s, s),
                               mode="bilinear", align_corners=False)
        embeddings, skips = self.usam.encode(slices)
        pe = self.usam.prompt_encoder
        sparse = torch.zeros(b * length, 0, pe.embed_dim, device=window.device, dtype=embeddings.dtype)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b * length, -1, *pe.image_embedding_size)
        masks, iou, _ = self.usam.mask_decoder(embeddings, skips, pe.get_dense_pe(), sparse, dense, [1] * (b * length))
        return masks, iou

    def forward(self, window, labels=None, phase=None):
        b, _, length, h, w = window.shape
        masks, iou = self._slice_logits(window)
        if labels is None:
            fg = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
            fg = fg.clamp(-LOGIT_BOUND, LOGIT_BOUND).view(b, length, h, w)
            return torch.stack([torch.zeros_like(fg), fg], dim=1)
        s = masks.shape[-1]
        target = F.interpolate(labels.reshape(b * length, 1, h, w).float(), size=(s, s), mode="nearest")
        losses = {"usam_mask": mask_loss(masks, target), "usam_iou": F.mse_loss(iou[:, 0], mask_iou(masks, target))}
        losses["loss"] = losses["usam_mask"] + losses["usam_iou"]
        return losses

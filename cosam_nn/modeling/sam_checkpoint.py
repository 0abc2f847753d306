"""Initialise U-SAM from an official Segment Anything checkpoint (e.g. `sam_vit_b_01ec64.pth`).

The official file is a state dict with `image_encoder.`, `prompt_encoder.` and `mask_decoder.` keys.
What fits is loaded as it is; SAM's 64 x 64 position embedding and the relative position tables
of its global-attention blocks are interpolated to U-SAM's token grid; the single mask token and
IoU head row take the first of SAM's four; the rest (the patch embedding, the upscaling that U-SAM
replaces, the other mask tokens' MLPs) is skipped and named in the report, as is every U-SAM
parameter the checkpoint does not hold (the U-Net encoder and up-blocks).
"""
import os
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from cosam_nn.modeling.config import USAMConfig
from cosam_nn.modeling.usam import USAM

SAM_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
USAM_ONLY = ("mask_decoder.up_blocks.",)  # U-SAM's own decoder path: in no SAM checkpoint
MIN_COVERAGE = 0.9  # an official ViT-B file fills every SAM-named U-SAM tensor


@dataclass
class LoadReport:
    loaded: list = field(default_factory=list)        # copied as they are
    adapted: list = field(default_factory=list)       # (key, how): interpolated or sliced
    skipped: list = field(default_factory=list)       # (key, why): checkpoint tensors not used
    not_in_checkpoint: list = field(default_factory=list)  # U-SAM tensors left at their init

    def summary(self):
        lines = [f"loaded {len(self.loaded)} tensors as they are, adapted {len(self.adapted)}, "
                 f"skipped {len(self.skipped)} from the checkpoint; {len(self.not_in_checkpoint)} U-SAM "
                 f"tensors are not in it (trained from scratch)"]
        lines += [f"  adapted {k}: {how}" for k, how in self.adapted]
        lines += [f"  skipped {k}: {why}" for k, why in self.skipped]
        prefixes = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in self.not_in_checkpoint})
        lines += [f"  not in checkpoint: {p}*" for p in prefixes]
        return "\n".join(lines)


def _read_state_dict(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: SAM checkpoint not found (pass the official sam_vit_b_01ec64.pth)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors come in many types
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not any(str(k).startswith("image_encoder.") for k in data):
        raise ValueError(f"{path}: not a SAM checkpoint (no 'image_encoder.' tensors)")
    return data


def _encoder_size(source):
    """(width, blocks) of a SAM checkpoint's image encoder."""
    pos = source.get("image_encoder.pos_embed")
    width = int(pos.shape[-1]) if pos is not None else None
    blocks = {k.split(".")[2] for k in source if k.startswith("image_encoder.blocks.")}
    return width, len(blocks)


def _check_encoder(path, source, cfg):
    width, blocks = _encoder_size(source)
    if (width, blocks) != (cfg.embed_dim, cfg.depth):
        raise ValueError(f"{path}: a SAM image encoder of width {width} with {blocks} blocks; U-SAM needs width "
                         f"{cfg.embed_dim} with {cfg.depth} blocks (the ViT-B checkpoint sam_vit_b_01ec64.pth)")


def _adapt(key, source, target_shape):
    """Return (tensor, how) fitted to target_shape, or (None, why) when it cannot be."""
    if key.endswith("pos_embed") and source.ndim == 4 and source.shape[-1] == target_shape[-1]:
        grid = F.interpolate(source.permute(0, 3, 1, 2).float(), size=target_shape[1:3], mode="bicubic",
                             align_corners=False).permute(0, 2, 3, 1)
        return grid, f"interpolated {tuple(source.shape)} -> {tuple(target_shape)}"
    if (key.endswith("rel_pos_h") or key.endswith("rel_pos_w")) and source.shape[1] == target_shape[1]:
        table = F.interpolate(source.t().unsqueeze(0).float(), size=target_shape[0], mode="linear",
                              align_corners=False)[0].t()
        return table, f"interpolated {tuple(source.shape)} -> {tuple(target_shape)}"
    if (key.startswith("mask_decoder.mask_tokens") or key.startswith("mask_decoder.iou_prediction_head")) \
            and source.ndim == len(target_shape) and source.shape[1:] == tuple(target_shape[1:]) \
            and source.shape[0] > target_shape[0]:
        return source[:target_shape[0]].clone(), f"first {target_shape[0]} of {source.shape[0]} rows"
    return None, f"shape {tuple(source.shape)} does not fit U-SAM's {tuple(target_shape)}"


def load_sam_checkpoint(path, model=None):
    """Load an official SAM checkpoint into `model` (default: a new paper-size U-SAM).

    Returns (model, LoadReport). Raises FileNotFoundError or ValueError with the file's name.
    """
    model = model if model is not None else USAM(USAMConfig())
    source = _read_state_dict(path)
    _check_encoder(path, source, model.cfg)
    own = model.state_dict()
    report, new = LoadReport(), {}
    for key, tensor in source.items():
        if key not in own:
            report.skipped.append((key, "not part of U-SAM"))
        elif tuple(tensor.shape) == tuple(own[key].shape):
            new[key] = tensor
            report.loaded.append(key)
        else:
            adapted, how = _adapt(key, tensor, tuple(own[key].shape))
            if adapted is None:
                report.skipped.append((key, how))
            else:
                new[key] = adapted
                report.adapted.append((key, how))
    report.not_in_checkpoint = [k for k in own if k not in new]
    expected = [k for k in own if k.startswith(SAM_PARTS) and not k.startswith(USAM_ONLY)]
    filled = sum(1 for k in expected if k in new)
    if filled < MIN_COVERAGE * len(expected):
        raise ValueError(f"{path}: only {filled} of U-SAM's {len(expected)} SAM tensors fit (image encoder, prompt "
                         f"encoder, mask decoder); not the SAM ViT-B checkpoint U-SAM needs")
    model.load_state_dict(new, strict=False)
    return model, report

"""Square crops around boxes: how U-SAM sees a box of a slice, and how its mask goes back."""
import torch
from torch.nn import functional as F
from torchvision.ops import roi_align


def crop_regions(boxes, min_side):
    """Square, integer-aligned crop regions (M, 4) around boxes (M, 4): side >= min_side and 1.5 x the box."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = torch.maximum((boxes[:, 2:] - boxes[:, :2]).amax(1) * 1.5, torch.full_like(cx, float(min_side))).ceil()
    x0, y0 = torch.floor(cx - side / 2), torch.floor(cy - side / 2)
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=1)


def crop_slices(slices, image_index, regions, size):
    """Resample regions (M, 4) of slices (N, C, H, W) to (M, C, size, size); outside the image is 0."""
    rois = torch.cat([image_index.to(regions.dtype).unsqueeze(1), regions], dim=1)
    return roi_align(slices, rois, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def boxes_in_crops(boxes, regions, size):
    """Boxes (M, 4) in slice pixels -> the same boxes in the pixels of their size x size crops."""
    scale = size / (regions[:, 2:3] - regions[:, 0:1])
    return (boxes - regions[:, [0, 1, 0, 1]]) * scale


def paste_crop(canvas, logits, region):
    """Max-paste crop logits (S, S) back into canvas (H, W) over the integer region (4,)."""
    x0, y0, x1, y1 = (int(v) for v in region.tolist())
    resized = F.interpolate(logits[None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
    h, w = canvas.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    part = resized[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    canvas[cy0:cy1, cx0:cx1] = torch.maximum(canvas[cy0:cy1, cx0:cx1], part)

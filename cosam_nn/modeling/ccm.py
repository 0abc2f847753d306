"""Collaborative classification module (CCM): is this box a metastatic node?

It joins what the segmenter saw (the U-SAM mask token t_i of the box) with what the detector saw
(the sequence feature SF_i of its proposal) in one classification head (paper 4.3). Its
probability and the detector's score form the box's score (their geometric mean), so a box that
either branch doubts drops out.

Optionally (`CoSAMConfig.ccm_image_features`) the CCM also reads three numbers measured on the
image under U-SAM's mask (`mask_image_features`): how bright the candidate is, how bright its
surroundings are, and how large it is, which learned features might carry only after long training.
Off by default: at the small model's benchmark budget it ranked larger nodes better and small ones
no better (bench/RESULTS.md).
"""
import torch
from torch import nn

IMAGE_FEATURES = 3  # columns of `mask_image_features`


class CollaborativeClassifier(nn.Module):
    """mask tokens (N, P) + sequence features (N, D) [+ image features (N, IMAGE_FEATURES)] -> logits
    (N, 2) (background, node)."""

    def __init__(self, token_dim, seq_dim, hidden=256, image_features=False):
        super().__init__()
        self.head = nn.Sequential(nn.LayerNorm(token_dim + seq_dim), nn.Linear(token_dim + seq_dim, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 2))
        # a path of its own into the first hidden layer: the LayerNorm would drown three numbers among hundreds
        self.image_embed = nn.Linear(IMAGE_FEATURES, hidden) if image_features else None

    def forward(self, mask_tokens, seq_features, image_features=None):
        x = self.head[1](self.head[0](torch.cat([mask_tokens, seq_features], dim=-1)))
        if self.image_embed is not None:
            if image_features is None:
                raise ValueError("this CCM was built to read image features: pass mask_image_features")
            x = x + self.image_embed(image_features)
        return self.head[2:](x)


def mask_image_features(crops, masks):
    """Per box (M, IMAGE_FEATURES) from its crop of the normalised image (M, 1, S, S) and U-SAM's mask
    logits over the same region (M, 1, S, S) (or (M, S, S)): the image's mean inside the mask (logit
    > 0), its mean in the rest of the crop, and log(1 + the mask's share of the crop x 100). An empty
    mask gives 0 inside. No gradient flows into the mask."""
    crops, inside = crops.flatten(1), (masks.detach() > 0).flatten(1).to(crops.dtype)
    count = inside.sum(1)
    mean_in = (crops * inside).sum(1) / count.clamp(min=1)
    mean_out = (crops * (1 - inside)).sum(1) / (inside.shape[1] - count).clamp(min=1)
    return torch.stack([mean_in, mean_out, torch.log1p(100 * count / inside.shape[1])], dim=1)


def mean_token_per_proposal(tokens, owner, n_proposals):
    """Mean of the mask tokens (M, P) of each proposal's boxes: owner (M,) gives each box's proposal."""
    sums = torch.zeros(n_proposals, tokens.shape[1], device=tokens.device).index_add(0, owner, tokens)
    return sums / torch.bincount(owner, minlength=n_proposals).clamp(min=1).unsqueeze(1)

"""Collaborative classification module (CCM): is this box a metastatic node?

It joins what the segmenter saw (the U-SAM mask token t_i of the box) with what the detector saw
(the sequence feature SF_i of its proposal) in one classification head (paper 4.3). Its
probability and the detector's score form the box's score (their geometric mean), so a box that
either branch doubts drops out.
"""
import torch
from torch import nn


class CollaborativeClassifier(nn.Module):
    """mask tokens (N, P) + sequence features (N, D) -> logits (N, 2) (background, node)."""

    def __init__(self, token_dim, seq_dim, hidden=256):
        super().__init__()
        self.head = nn.Sequential(nn.LayerNorm(token_dim + seq_dim), nn.Linear(token_dim + seq_dim, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 2))

    def forward(self, mask_tokens, seq_features):
        return self.head(torch.cat([mask_tokens, seq_features], dim=-1))


def mean_token_per_proposal(tokens, owner, n_proposals):
    """Mean of the mask tokens (M, P) of each proposal's boxes: owner (M,) gives each box's proposal."""
    sums = torch.zeros(n_proposals, tokens.shape[1], device=tokens.device).index_add(0, owner, tokens)
    return sums / torch.bincount(owner, minlength=n_proposals).clamp(min=1).unsqueeze(1)

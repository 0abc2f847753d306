"""The 2D backbone shared by all slices of a window."""
import torch
from torch import nn
from torch.nn import functional as F


def conv_block(cin, cout, stride=1):
    """Two 3x3 convolutions with GroupNorm and ReLU; the first may downsample."""
    groups = min(8, cout // 4) or 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))


class SliceBackbone(nn.Module):
    """A small U-shaped CNN: slices (N, 1, H, W) -> features (N, feature_dim, H/4, W/4).

    Encoder stages at strides 1, 2, 4, 8, 16; the deeper two are upsampled and added back at
    stride 4 (a feature pyramid top-down path), so small nodes keep resolution and gain context.
    """

    def __init__(self, channels=(32, 64, 128, 256), feature_dim=128):
        super().__init__()
        c1, c2, c4, c8 = channels
        self.stages = nn.ModuleList([conv_block(1, c1), conv_block(c1, c2, 2), conv_block(c2, c4, 2),
                                     conv_block(c4, c8, 2), conv_block(c8, c8, 2)])
        self.lateral = nn.ModuleList([nn.Conv2d(c, feature_dim, 1) for c in (c4, c8, c8)])
        self.out = nn.Sequential(nn.Conv2d(feature_dim, feature_dim, 3, padding=1),
                                 nn.GroupNorm(min(8, feature_dim // 4), feature_dim), nn.ReLU(inplace=True))

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        top = self.lateral[2](feats[4])
        top = self.lateral[1](feats[3]) + F.interpolate(top, size=feats[3].shape[-2:], mode="nearest")
        top = self.lateral[0](feats[2]) + F.interpolate(top, size=feats[2].shape[-2:], mode="nearest")
        return self.out(top)


def run_per_slice(backbone, window):
    """(B, 1, L, H, W) -> (B, L, C, H/4, W/4), the backbone applied to every slice once."""
    b, _, length, h, w = window.shape
    slices = window.permute(0, 2, 1, 3, 4).reshape(b * length, 1, h, w)
    feats = backbone(slices)
    return feats.view(b, length, *feats.shape[1:])

"""Small pieces the network modules share."""
from torch import nn

# Largest foreground logit written into nnU-Net's output: nnU-Net sums tiles in float16.
LOGIT_BOUND = 12.0


def window_slices(window):
    """(B, 1, L, H, W) -> (B * L, 1, H, W): every slice of every window, window by window."""
    b, _, length, h, w = window.shape
    return window.permute(0, 2, 1, 3, 4).reshape(b * length, 1, h, w)


def conv_block(cin, cout, stride=1):
    """Two 3x3 convolutions with GroupNorm and ReLU; the first may downsample."""
    groups = min(8, cout // 4) or 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))

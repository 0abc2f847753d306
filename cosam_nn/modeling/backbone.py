"""The 2D backbone shared by all slices of a window, and a cache of its per-slice features."""
import hashlib
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from cosam_nn.modeling.common import conv_block, window_slices


def _output_conv(dim):
    """The 3x3 convolution, GroupNorm and ReLU that smooth a pyramid level after its sum."""
    return nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(min(8, dim // 4), dim), nn.ReLU(inplace=True))


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
        self.out = _output_conv(feature_dim)

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        top = self.lateral[2](feats[4])
        top = self.lateral[1](feats[3]) + F.interpolate(top, size=feats[3].shape[-2:], mode="nearest")
        top = self.lateral[0](feats[2]) + F.interpolate(top, size=feats[2].shape[-2:], mode="nearest")
        return self.out(top)


class SliceFeatureCache:
    """Backbone features of recently seen slices, keyed by the slice's bytes (inference on the CPU).

    nnU-Net's sliding window moves a window of L slices by about L/2, so without a cache every
    slice is encoded about twice. Keys are content hashes (nnU-Net hands the network copies, so
    positions are not known): equal bytes, equal features. Least recently used entries go first
    once the cache holds more than `max_mib`.
    """

    def __init__(self, max_mib=256):
        self.max_bytes = int(max_mib * 2 ** 20)
        self.entries = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(slice_):
        data = slice_.detach().contiguous().numpy()
        return (tuple(data.shape), str(data.dtype), hashlib.blake2b(data.tobytes(), digest_size=16).digest())

    def features(self, backbone, slices):
        """(N, 1, H, W) slices -> (N, C, H/4, W/4), running the backbone only on slices not cached."""
        keys = [self.key(s) for s in slices]
        missing = [i for i, k in enumerate(keys) if k not in self.entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = backbone(slices[missing])
            for i, feat in zip(missing, computed):
                self._put(keys[i], feat)
        out = torch.stack([self.entries[k] for k in keys])
        for k in keys:
            self.entries.move_to_end(k)
        return out

    def _put(self, key, feat):
        if key in self.entries:
            return
        self.entries[key] = feat.clone()
        self.bytes += feat.numel() * feat.element_size()
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


def run_per_slice(backbone, window, cache=None):
    """(B, 1, L, H, W) -> (B, L, C, H/4, W/4), the backbone applied to every slice once.

    With a `SliceFeatureCache` (inference only), slices seen before are not encoded again.
    """
    slices = window_slices(window)
    feats = cache.features(backbone, slices) if cache is not None else backbone(slices)
    return feats.view(window.shape[0], window.shape[2], *feats.shape[1:])

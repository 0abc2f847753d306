"""Small synthetic windows with bright blobs, for the learning tests of the networks."""
import numpy as np
import torch


def blob_windows(n, length=5, size=48, seed=0, max_blobs=2):
    """(n, 1, L, size, size) images and (n, L, size, size) masks of 1-max_blobs ellipsoids per window."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.arange(length), np.arange(size), np.arange(size), indexing="ij")
    images = rng.normal(0.0, 0.1, (n, 1, length, size, size)).astype(np.float32)
    masks = np.zeros((n, length, size, size), dtype=np.uint8)
    for i in range(n):
        for _ in range(rng.integers(1, max_blobs + 1)):
            r = rng.uniform(3, 6)
            rz = rng.uniform(1.0, length / 2)
            cz = rng.uniform(0, length - 1)
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            blob = ((zz - cz) / rz) ** 2 + ((yy - cy) / r) ** 2 + ((xx - cx) / r) ** 2 <= 1
            if (masks[i] & blob).any() or not blob.any():
                continue
            masks[i][blob] = 1
            images[i, 0][blob] += 1.0
    return torch.from_numpy(images), torch.from_numpy(masks)

"""The training recipe of CoSAM inside nnU-Net: the phases, the window patch, the batch, the parameter
groups and their learning-rate schedule, gradient clipping, and the paper's augmentation."""
import numpy as np
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

GRADIENT_CLIP_NORM = 12  # nnU-Net's own
PAPER_LEARNING_RATES = {"detector": 2e-4, "usam_encoder": 1e-4, "usam_decoder": 1e-3, "ccm": 1e-3}
SMALL_LEARNING_RATES = {"detector": 2e-3, "usam_encoder": 1e-3, "usam_decoder": 2e-3, "ccm": 2e-3}
WEIGHT_DECAY = 1e-4
FOREGROUND_SHARE = 0.66  # nodes are sparse: most windows should hold one
MIN_INPLANE = 32         # the smallest in-plane window the backbone's four poolings take
INPLANE_MULTIPLE = 16    # its coarsest stride


def pretrain_epochs(num_epochs, pretrain_fraction):
    """Epochs of the pretrain phase: the fraction of the epochs, rounded half up, at least one if > 0."""
    if pretrain_fraction <= 0:
        return 0
    return min(num_epochs, max(1, int(pretrain_fraction * num_epochs + 0.5)))


def phase_for_epoch(epoch, num_epochs, pretrain_fraction):
    """'pretrain' for the first `pretrain_epochs` epochs, then 'joint'."""
    return "pretrain" if epoch < pretrain_epochs(num_epochs, pretrain_fraction) else "joint"


class PolyLR:
    """Polynomial decay (exponent 0.9) of each parameter group's own initial learning rate."""

    def __init__(self, optimizer, max_epochs, exponent=0.9):
        self.optimizer, self.max_epochs, self.exponent = optimizer, max_epochs, exponent
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def step(self, epoch):
        factor = (1 - epoch / self.max_epochs) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor


def window_patch(patch_size, window, max_inplane):
    """(L, Y, X): the plans' in-plane patch, capped at max_inplane and rounded down to a multiple of 16."""
    if len(patch_size) != 3:
        raise ValueError(f"CoSAM trainers need a 3D configuration (e.g. 3d_fullres); this one has patch {list(patch_size)}")
    inplane = [max(MIN_INPLANE, min(int(s), max_inplane) // INPLANE_MULTIPLE * INPLANE_MULTIPLE) for s in patch_size[1:]]
    return [window] + inplane


def voxel_matched_batch(batch_size, planned_patch, patch, max_windows):
    """Windows per batch holding about as many voxels as the plans' batch of 3D patches (at least the
    plans' batch size, at most max_windows). A window of 9 slices is a fraction of nnU-Net's 3D patch:
    at the plans' batch size a training step of CoSAM sees that fraction of the voxels (and nodes)
    of nnU-Net's step, so at the same iterations it would learn from less data."""
    ratio = float(np.prod(planned_patch)) / float(np.prod(patch))
    return int(min(max_windows, max(batch_size, round(batch_size * ratio))))


def forced_foreground_share(batch_size, percent):
    """The share of a batch nnU-Net's default (deterministic) oversampling forces onto foreground:
    the last round(batch x percent) samples, so a batch of 2 at 66% forces 1 of 2."""
    return (batch_size - round(batch_size * (1 - percent))) / batch_size


def param_group(name):
    """The learning-rate group of a CoSAM parameter, by its name."""
    if name.startswith("detector."):
        return "detector"
    if name.startswith(("usam.unet.", "usam.image_encoder.")):
        return "usam_encoder"
    if name.startswith("usam."):
        return "usam_decoder"
    return "ccm"


def optimizer_and_schedule(network, learning_rates, num_epochs):
    """AdamW with one group per network part at its own rate, and PolyLR over the whole run."""
    groups = {}
    for name, p in network.named_parameters():
        if p.requires_grad:
            groups.setdefault(param_group(name), []).append(p)
    optimizer = torch.optim.AdamW([{"params": ps, "lr": learning_rates[g], "name": g} for g, ps in groups.items()],
                                  weight_decay=WEIGHT_DECAY)
    return optimizer, PolyLR(optimizer, num_epochs)


def clipped_step(loss, network, optimizer, grad_scaler=None):
    """Backward, gradient norm clipped at nnU-Net's 12, optimizer step (through the AMP scaler if any)."""
    if grad_scaler is not None:
        grad_scaler.scale(loss).backward()
        grad_scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRADIENT_CLIP_NORM)
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRADIENT_CLIP_NORM)
        optimizer.step()


def paper_augmentation(mirror_axes):
    """Flips and contrast/brightness only, as the paper trains CoSAM (crop, flip, contrast), in place
    of nnU-Net's rotation, scaling, noise, blur, gamma and simulated low resolution. Adopted
    together with the detector's dense loss, when the small detector often found no node after
    320 CPU iterations; the augmentation's own share of that fix was not measured."""
    return ComposeTransforms([
        RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast((0.75, 1.25)),
                                                          synchronize_channels=False, p_per_channel=1),
                        apply_probability=0.15),
        RandomTransform(ContrastTransform(contrast_range=BGContrast((0.75, 1.25)), preserve_range=True,
                                          synchronize_channels=False, p_per_channel=1), apply_probability=0.3),
        MirrorTransform(allowed_axes=mirror_axes),
        RemoveLabelTansform(-1, 0)])

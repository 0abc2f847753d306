"""CoSAMTrainerBase: CoSAM trained and used through nnU-Net's own commands.

nnU-Net keeps its data loading, augmentation, checkpoints, validation and sliding-window
prediction; this trainer changes the patch to a window of L slices (in-plane size from the plans),
builds CoSAM from the class settings alone (so `nnUNetv2_predict` rebuilds it exactly), derives the
box targets inside the training step from the augmented label, and runs the paper's schedule as
phases of one run: "pretrain" (detector and U-SAM trained separately) for `pretrain_fraction` of
the epochs, then "joint" (end to end with the CCM). Augmentation is the paper's (nnU-Net's random
crop, flips, contrast and brightness), not nnU-Net's full set.

Every setting is a class attribute, so that a trainer a user picks (the folder `trainers/`) is a
class declaration that changes a few of them, as nnU-Net's own variants are written.
"""
import os
from dataclasses import replace

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.cosam import CoSAM
from cosam_nn.modeling.sam_checkpoint import load_sam_checkpoint
from cosam_nn.modeling.usam_baseline import USAMSegmenter
from cosam_nn.training.calibration import calibrate
from cosam_nn.training.node_sampling import node_balanced
from cosam_nn.training.recipe import (FOREGROUND_SHARE, PAPER_LEARNING_RATES, WEIGHT_DECAY, clipped_step,
                                      forced_foreground_share, optimizer_and_schedule, paper_augmentation,
                                      phase_for_epoch, pretrain_epochs, voxel_matched_batch, window_patch)
from cosam_nn.training.run_settings import RunSettingsMixin

SAM_CHECKPOINT_VARIABLE = "COSAM_SAM_CHECKPOINT"
LOSS_PART = "loss_part_"  # train_step's outputs: each loss part's value, logged per epoch


class CoSAMTrainerBase(RunSettingsMixin, nnUNetTrainer):
    cosam_size = "paper"                 # "paper" (ViT-B U-SAM, GPU) or "small" (CPU)
    network = "cosam"                    # "cosam", or "usam": U-SAM alone on whole slices, no prompts
    window = 9                           # L, the paper's choice (Table 3)
    use_ccm = True
    model_settings = {}                  # CoSAMConfig fields changed from the size's
    detector_settings = {}               # DetectorConfig fields changed from the size's
    usam_settings = {}                   # USAMConfig fields changed from the size's
    pretrain_fraction = 0.5              # paper: 100 epochs separate, then 100 end to end
    max_inplane = 256
    learning_rates = PAPER_LEARNING_RATES
    calibration_thresholds = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)  # () keeps CoSAMConfig's 0.5
    node_balanced_sampling = True        # foreground windows centred on each node equally often (node_sampling)
    calibration_cases = 20               # validation cases the score threshold is picked on
    calibration_recall_weight = 2.0      # beta of the node F-beta score in the calibration (2: F2)
    max_windows_per_batch = None         # None: the plans' batch size; N: see voxel_matched_batch
    inference_mirror_axes = (0, 1, 2)    # nnUNetv2_predict's test-time flips (0: slices); None: no TTA

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # user mistakes stop here with one line, before nnU-Net creates the output folder and its log
        self.sam_checkpoint = self.read_sam_checkpoint_setting()
        self._window_the_plans(plans["configurations"][configuration])
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.weight_decay = WEIGHT_DECAY
        self.oversample_foreground_percent = FOREGROUND_SHARE
        # small batches (the paper size's 2 windows) round the forced share down: draw each window instead
        self.probabilistic_oversampling = forced_foreground_share(
            self.configuration_manager.batch_size, self.oversample_foreground_percent) < self.oversample_foreground_percent
        self.phase = None
        self._iteration = 0

    def _window_the_plans(self, conf):
        """The plans' 3D patch becomes a window of `window` slices; the batch grows with max_windows_per_batch."""
        if "patch_size" not in conf:
            return
        planned = conf["patch_size"]
        try:
            conf["patch_size"] = window_patch(planned, self.window, self.max_inplane)
        except ValueError as e:
            raise SystemExit(f"{type(self).__name__}: {e}") from None
        if self.max_windows_per_batch and "batch_size" in conf:
            conf["batch_size"] = voxel_matched_batch(conf["batch_size"], planned, conf["patch_size"],
                                                     self.max_windows_per_batch)

    # ---- the network, rebuilt from the class settings alone ------------------------------------
    @classmethod
    def cosam_config(cls):
        base = CoSAMConfig.of_size(cls.cosam_size, cls.window)
        return replace(base, use_ccm=cls.use_ccm, detector=replace(base.detector, **cls.detector_settings),
                       usam=replace(base.usam, **cls.usam_settings), **cls.model_settings)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        if num_input_channels != 1 or num_output_channels != 2:
            raise ValueError(f"{cls.__name__} segments one CT channel into background/node; this data set has "
                             f"{num_input_channels} input channel(s) and {num_output_channels} output(s)")
        cfg = cls.cosam_config()
        return USAMSegmenter(cfg.usam) if cls.network == "usam" else CoSAM(cfg)

    def set_deep_supervision_enabled(self, enabled: bool):
        """CoSAM has no deep supervision outputs."""

    def _do_i_compile(self):
        return False  # data-dependent box code: no torch.compile

    def _build_loss(self):
        return None  # the losses live in the network's training step (cosam_nn.modeling.training_step)

    def configure_optimizers(self):
        return optimizer_and_schedule(self.network, self.learning_rates, self.num_epochs)

    def initialize(self):
        fresh = not self.was_initialized
        super().initialize()
        if fresh:
            if self.node_balanced_sampling:
                self.dataset_class = node_balanced(self.dataset_class)
            self._maybe_load_sam()

    @classmethod
    def read_sam_checkpoint_setting(cls, environ=None):
        """The SAM checkpoint path, or None to train U-SAM from scratch. The paper-size model needs
        the variable set: training ViT-B from scratch by accident would waste a GPU run."""
        text = (os.environ if environ is None else environ).get(SAM_CHECKPOINT_VARIABLE, "").strip()
        if cls.cosam_size != "paper":
            return None
        if not text:
            raise SystemExit(f"{cls.__name__}: {SAM_CHECKPOINT_VARIABLE} is not set. Point it at the official SAM "
                             f"ViT-B checkpoint sam_vit_b_01ec64.pth (segment-anything's model checkpoints), or set "
                             f"{SAM_CHECKPOINT_VARIABLE}=none to train U-SAM from scratch on purpose.")
        return None if text.lower() == "none" else text

    def _maybe_load_sam(self):
        net = self.network.module if self.is_ddp else self.network
        if self.cosam_size != "paper":
            if os.environ.get(SAM_CHECKPOINT_VARIABLE, "").strip():
                self.print_to_log_file(f"{SAM_CHECKPOINT_VARIABLE} ignored: only the paper-size U-SAM takes SAM ViT-B weights")
            return
        path = self.sam_checkpoint
        if path is None:
            self.print_to_log_file(f"U-SAM trained from scratch ({SAM_CHECKPOINT_VARIABLE}=none)")
            return
        try:
            _, report = load_sam_checkpoint(path, net.usam)
        except (OSError, ValueError) as e:
            raise SystemExit(f"{self.__class__.__name__}: {SAM_CHECKPOINT_VARIABLE}: {e}") from None
        self.print_to_log_file(f"U-SAM initialised from {path}\n{report.summary()}")

    # ---- augmentation: the paper's (random crop, flip, contrast) ----------------------------------
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """No rotation or scaling, so nnU-Net's loader crops the patch itself (the random crop). Training
        flips every axis; prediction (TTA) flips `inference_mirror_axes`, saved in the checkpoint."""
        rotation, dummy_2d, _, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = self.inference_mirror_axes
        return rotation, dummy_2d, self.configuration_manager.patch_size, mirror_axes

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        if is_cascaded or regions is not None:
            raise ValueError("CoSAM trainers support neither cascades nor region-based labels")
        return paper_augmentation(mirror_axes)

    # ---- training -------------------------------------------------------------------------------
    def on_train_start(self):
        """cuDNN autotuning off: U-SAM's batch (the number of box prompts) changes every step, so
        nnU-Net's `cudnn.benchmark = True` re-tunes on each new size instead of paying once."""
        torch.backends.cudnn.benchmark = False
        super().on_train_start()

    def on_train_epoch_start(self):
        phase = phase_for_epoch(self.current_epoch, self.num_epochs, self.pretrain_fraction)
        super().on_train_epoch_start()
        if phase != self.phase:
            self.print_to_log_file(f"phase: {phase} (from epoch {self.current_epoch} of {self.num_epochs}; "
                                   f"pretrain fraction {self.pretrain_fraction})")
        self.phase = phase
        self._iteration = 0

    def on_train_end(self):
        self.calibrate_score_threshold()
        super().on_train_end()  # saves checkpoint_final.pth, threshold included

    def save_snapshot(self, epochs_done):
        """A snapshot is a model as a user would get it had training stopped here: threshold calibrated."""
        self.calibrate_score_threshold()
        super().save_snapshot(epochs_done)

    def on_epoch_end(self):
        super().on_epoch_end()
        done = self.current_epoch
        if done == pretrain_epochs(self.num_epochs, self.pretrain_fraction) and done < self.num_epochs \
                and done % self.save_every:
            self.save_after_epoch("checkpoint_latest.pth")  # the pretrain phase is never lost to a crash

    def calibrate_score_threshold(self):
        """Pick the final-score threshold on up to `calibration_cases` of the fold's validation cases
        (cosam_nn.training.calibration); it is a buffer of the network, saved with its weights. Rank 0
        picks it, the other ranks receive it. checkpoint_best.pth keeps the configured threshold."""
        if not self.calibration_thresholds:
            return
        model = self.network.module if self.is_ddp else self.network
        if self.local_rank == 0:
            keys = self.do_split()[1][: self.calibration_cases]
            if keys:
                self._pick_score_threshold(model, keys)
            else:  # no early return: under DDP the other ranks wait in the broadcast below
                self.print_to_log_file(f"no validation cases in this fold: score threshold kept at "
                                       f"{float(model.score_threshold):g}")
        if self.is_ddp:
            dist.broadcast(model.score_threshold, 0)

    def _pick_score_threshold(self, model, keys):
        dataset = self.dataset_class(self.preprocessed_dataset_folder, keys,
                                     folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
        model.eval()
        with self._autocast():
            best, scores, operating = calibrate(model, (self._calibration_case(dataset, k) for k in keys),
                                                self.configuration_manager.patch_size, self.calibration_thresholds,
                                                self.calibration_recall_weight)
        model.score_threshold.fill_(best)
        model.operating_point.copy_(torch.tensor(operating[best], dtype=model.operating_point.dtype))
        table = ", ".join(f"{t:g}: {d:.3f} / {f:.3f}" for t, (d, f) in scores.items())
        sensitivity, false_per_case, _ = operating[best]
        self.print_to_log_file(f"score threshold {best:g}, picked on {len(keys)} validation cases "
                               f"(mean Dice / node F{self.calibration_recall_weight:g} by threshold: {table}); "
                               f"there: node sensitivity {sensitivity:.3f}, {false_per_case:.2f} false candidates "
                               f"per case")

    def _calibration_case(self, dataset, key):
        data, seg, _, _ = dataset.load_case(key)
        image = torch.from_numpy(np.ascontiguousarray(data[:], dtype=np.float32)).to(self.device)
        return image, torch.from_numpy(np.asarray(seg[0][:]) > 0).to(self.device)

    def _autocast(self):
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        labels = batch["target"].to(self.device, non_blocking=True)[:, 0] > 0
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            losses = self.network(data, labels, self.phase)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
            raise FloatingPointError(f"non-finite loss at epoch {self.current_epoch}, iteration {self._iteration} "
                                     f"({self.phase} phase): {parts}. Not training through it; resume from the "
                                     f"last checkpoint with --c after fixing the cause (lower learning rate, data).")
        clipped_step(loss, self.network, self.optimizer, self.grad_scaler)
        self._iteration += 1
        parts = {f"{LOSS_PART}{k}": float(v.detach()) for k, v in losses.items() if k != "loss"}
        return {"loss": loss.detach().cpu().numpy(), **parts}

    def on_train_epoch_end(self, train_outputs):
        """nnU-Net logs the summed train loss; the log also gets each part's mean over the epoch (this
        process's batches), so that one can see which part of CoSAM learns and which stalls."""
        super().on_train_epoch_end(train_outputs)
        parts = collate_outputs(train_outputs)
        means = ", ".join(f"{k[len(LOSS_PART):]} {np.mean(v):.4f}" for k, v in parts.items() if k.startswith(LOSS_PART))
        if means:
            self.print_to_log_file(f"train loss parts: {means}")

    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        labels = batch["target"].to(self.device, non_blocking=True)[:, 0] > 0
        with torch.no_grad(), self._autocast():
            loss = self.network(data, labels, self.phase or "joint")["loss"]
            pred = self.network(data).argmax(1) > 0
        tp = (pred & labels).sum().item()
        fp = (pred & ~labels).sum().item()
        fn = (~pred & labels).sum().item()
        return {"loss": loss.detach().cpu().numpy(), "tp_hard": np.array([tp]), "fp_hard": np.array([fp]),
                "fn_hard": np.array([fn])}

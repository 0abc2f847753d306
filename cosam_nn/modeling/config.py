"""One settings object for the small (CPU) and the paper-size (GPU) CoSAM; the same code runs both."""
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class DetectorConfig:
    window: int = 9                      # L consecutive slices (odd, 5..15)
    channels: tuple = (32, 64, 128, 256)  # backbone stages at strides 1, 2, 4, 8 (... then 16)
    feature_dim: int = 128               # per-slice feature map at stride 4
    roi_size: int = 7
    token_dim: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 2
    heads: int = 8
    anchor_size: int = 8                 # px, the square anchor at each stride-4 location
    pre_nms_top_k: int = 2000
    train_proposals: int = 256
    test_proposals: int = 100
    proposal_nms_iou: float = 0.7
    positive_iou: float = 0.4            # stage 2: proposal <-> node match, IoU of the boxes grown by match_margin
    match_margin: float = 2.0            # px on each side: a 1 px miss of a 4 px node keeps IoU 0.62, not 0.39
    true_tube_copies: int = 1            # jittered copies of each true tube added to the proposals in training
    node_balanced_objectness: bool = True  # each node's stage-1 positives weigh the same in total
    feature_cache_mib: int = 256         # CPU inference: backbone features of recent slices (0: off)

    def __post_init__(self):
        if not (isinstance(self.window, int) and self.window % 2 == 1 and 5 <= self.window <= 15):
            raise ValueError(f"window must be an odd number of slices from 5 to 15, got {self.window}")

    @property
    def stride(self):
        return 4


@dataclass(frozen=True)
class USAMConfig:
    img_size: int = 224                  # crops are resampled to this size
    unet_channels: tuple = (32, 64, 128, 256, 768)  # the last is the ViT width; 4 poolings
    depth: int = 12
    heads: int = 12
    window_size: int = 14
    global_attn_indexes: tuple = (2, 5, 8, 11)
    prompt_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8

    @property
    def embed_dim(self):
        return self.unet_channels[-1]

    @property
    def grid(self):
        return self.img_size // 16


@dataclass(frozen=True)
class CoSAMConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    usam: USAMConfig = field(default_factory=USAMConfig)
    crop_size: int = 112                 # slice pixels around a box that U-SAM sees
    ccm_hidden: int = 256
    score_threshold: float = 0.5         # final (detector x CCM) score to keep a box
    presence_threshold: float = 0.5
    nms_iou: float = 0.3
    max_boxes: int = 20                  # boxes sent to U-SAM per window at inference
    segment_nms_iou: float = 0.3         # inference: of proposals overlapping more (union boxes), only the best is segmented (1: all)
    use_ccm: bool = True
    train_true_boxes: int = 8            # jittered true boxes per window for U-SAM (pretrain phase)
    train_proposals_per_window: int = 8  # detector proposals per window for U-SAM and the CCM
    train_slices_per_proposal: int = 2   # of a proposal's slices, how many U-SAM segments in training
    prompt_jitter: float = 20.0          # random 0..jitter px margin on true prompt boxes (released U-SAM)
    symmetric_masks: bool = True         # inference: a mask's background side as low as -its score's logit

    @classmethod
    def paper(cls, window=9):
        return cls(detector=DetectorConfig(window=window))

    @classmethod
    def small(cls, window=9):
        """Trains on a CPU: a few hundred thousand parameters."""
        return cls(
            detector=DetectorConfig(window=window, channels=(8, 16, 32, 48), feature_dim=32, roi_size=5,
                                    token_dim=64, encoder_layers=1, decoder_layers=1, heads=4,
                                    pre_nms_top_k=300, train_proposals=32, test_proposals=48),
            usam=USAMConfig(img_size=64, unet_channels=(8, 16, 24, 32, 64), depth=2, heads=4, window_size=0,
                            global_attn_indexes=(), prompt_dim=64, decoder_depth=1, decoder_mlp_dim=128,
                            decoder_heads=4),
            crop_size=32, ccm_hidden=64, max_boxes=24, train_true_boxes=6, train_proposals_per_window=6, train_slices_per_proposal=3,
            prompt_jitter=6.0)

    @classmethod
    def of_size(cls, size, window=9):
        """The settings of a named model size: "paper" (GPU) or "small" (CPU)."""
        if size not in MODEL_SIZES:
            raise ValueError(f"model size {size!r}: one of {sorted(MODEL_SIZES)}")
        return MODEL_SIZES[size](window)

    def with_window(self, window):
        return replace(self, detector=replace(self.detector, window=window))


MODEL_SIZES = {"paper": CoSAMConfig.paper, "small": CoSAMConfig.small}

"""CoSAM's networks, one module per part (plain PyTorch; no nnU-Net machinery)."""
from cosam_nn.modeling.config import CoSAMConfig, DetectorConfig, USAMConfig  # noqa: F401

"""Parameter counts and CPU (or GPU) forward/backward times of CoSAM's networks, small and paper size.

    python bench/networks.py [--device cpu|cuda] [--repeats 3]

Detector: one window (1, 1, 9, H, W) with one node target, forward + backward of its losses.
U-SAM: 2 crops with 3 boxes each, forward + backward of the mean mask logit.
CoSAM inference: `detect` on one window.
"""
import argparse
import platform
import time

import torch

from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.cosam import CoSAM
from cosam_nn.node_geometry import node_boxes


def _time(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench(name, cfg, size, device, repeats):
    torch.manual_seed(0)
    model = CoSAM(cfg).to(device)
    length = cfg.detector.window
    window = torch.randn(1, 1, length, size, size, device=device)
    mask = torch.zeros(length, size, size)
    mask[2:6, size // 2:size // 2 + 8, size // 3:size // 3 + 6] = 1
    targets = [node_boxes(mask)]

    def detector_step():
        model.zero_grad()
        sum(model.detector(window, targets)["losses"].values()).backward()

    s = cfg.usam.img_size
    crops = torch.randn(2, 1, s, s, device=device)
    boxes = [torch.tensor([[s * 0.3, s * 0.3, s * 0.6, s * 0.7]] * 3, device=device)] * 2

    def usam_step():
        model.zero_grad()
        masks, iou, _ = model.usam(crops, boxes)
        (masks.mean() + iou.mean()).backward()

    def inference():
        model.eval()
        model.detect(window)
        model.train()

    counts = {part: sum(p.numel() for p in getattr(model, part).parameters()) for part in ("detector", "usam", "ccm")}
    print(f"{name:<6} params detector {counts['detector'] / 1e6:7.2f} M  U-SAM {counts['usam'] / 1e6:7.2f} M  "
          f"CCM {counts['ccm'] / 1e6:5.2f} M | detector fwd+bwd (1x9x{size}x{size}) {_time(detector_step, repeats):6.2f} s  "
          f"U-SAM fwd+bwd (2 crops x 3 boxes, {s}px) {_time(usam_step, repeats):6.2f} s  "
          f"inference/window {_time(inference, repeats):6.2f} s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=0, help="window in-plane size (default 96 small, 256 paper)")
    a = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {a.device}, {time.strftime('%Y-%m-%d')}")
    bench("small", CoSAMConfig.small(), a.size or 96, a.device, a.repeats)
    bench("paper", CoSAMConfig.paper(), a.size or 256, a.device, a.repeats)


if __name__ == "__main__":
    main()

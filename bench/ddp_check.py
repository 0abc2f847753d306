"""A few DistributedDataParallel steps of CoSAM in both phases (nnU-Net's DDP: no find_unused_parameters).

    torchrun --nproc_per_node N bench/ddp_check.py [--size paper|small]     # nccl on GPUs
    python bench/ddp_check.py --size small                                  # gloo, one CPU process
"""
import argparse
import os
import time

import torch
import torch.distributed as dist

from cosam_nn.modeling.config import CoSAMConfig
from cosam_nn.modeling.cosam import CoSAM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", choices=("paper", "small"), default="paper")
    p.add_argument("--inplane", type=int, default=0)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    cfg = CoSAMConfig.of_size(a.size)
    size = a.inplane or (256 if a.size == "paper" else 96)
    torch.manual_seed(rank)
    model = torch.nn.parallel.DistributedDataParallel(CoSAM(cfg).to(device), device_ids=[rank] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    labels = torch.zeros(2, cfg.detector.window, size, size, dtype=torch.bool, device=device)
    labels[0, 2:6, size // 2:size // 2 + 10, size // 3:size // 3 + 8] = True  # window 1 has no node
    for step, phase in enumerate(["pretrain"] * 3 + ["joint"] * 3):
        start = time.time()
        with torch.autocast(device.type, enabled=cuda):
            loss = model(torch.randn(2, 1, cfg.detector.window, size, size, device=device), labels, phase)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if rank == 0:
            print(f"DDP step {step} {phase}: loss {loss.item():.3f}, {time.time() - start:.2f} s", flush=True)
    if rank == 0 and cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"rank {rank}: DDP check passed ({dist.get_world_size()} process(es), backend {dist.get_backend()})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""DDP training of a small seeded MLP on synthetic data, with the tally or the gloo backend.

  torchrun --nproc_per_node=4 examples/ddp_train.py --backend tally
  tally-run -n 4 /usr/bin/python3 examples/ddp_train.py --backend tally

(tally_torch must be importable: after `make torch`, PYTHONPATH=build/python/lib.) Switching
backend is the one word --backend. Gradients cross hosts as 16-bit values with TALLY_COMPRESS=bf16
(or fp16) in the environment; --hook ef-bf16 (ef-fp16) adds error feedback (tally_torch.hooks);
--hosts H makes the ranks claim H hosts (TALLY_HOSTID), so that one machine shows it. Every rank prints nothing but rank 0's summary: the loss and
the steps per second after the first --warmup steps; --save PREFIX writes each rank's final
parameters to PREFIX.rank<R>.pt for comparison.
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import distributed_env


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["tally", "gloo"], default="tally")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the steps/s figure")
    p.add_argument("--width", type=int, default=256, help="hidden layer width")
    p.add_argument("--layers", type=int, default=3, help="hidden layers")
    p.add_argument("--batch", type=int, default=16, help="samples per rank per step")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--save", help="write each rank's final parameters to SAVE.rank<R>.pt")
    p.add_argument("--hook", choices=["none", "ef-bf16", "ef-fp16"], default="none",
                   help="DDP communication hook: 16-bit exchange with error feedback (tally only)")
    p.add_argument("--hosts", type=int, default=0, help="spread the ranks over this many emulated hosts")
    return p.parse_args()


def make_model(args):
    torch.manual_seed(args.seed)  # the same initial parameters on every rank and with every backend
    dims = [64] + [args.width] * args.layers
    layers = []
    for d_in, d_out in zip(dims, dims[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], 10))


def batch(args, rank, step):
    g = torch.Generator().manual_seed(args.seed + 1000 * step + rank)
    return torch.randn(args.batch, 64, generator=g), torch.randint(0, 10, (args.batch,), generator=g)


def claim_hosts(hosts):
    """Rank r of n says it runs on host r * hosts // n (TALLY_HOSTID), before the backend starts."""
    rank = int(os.environ.get("TALLY_RANK", os.environ.get("RANK", "0")))
    size = int(os.environ.get("TALLY_SIZE", os.environ.get("WORLD_SIZE", "1")))
    os.environ["TALLY_HOSTID"] = "ddp-host-%d" % (rank * hosts // size)


def main():
    args = parse_args()
    if args.hosts:
        claim_hosts(args.hosts)
    rank, _ = distributed_env.init(args.backend)
    model = DDP(make_model(args))
    if args.hook != "none":
        from tally_torch.hooks import ErrorFeedbackState, error_feedback_hook
        model.register_comm_hook(ErrorFeedbackState(format=args.hook[3:]), error_feedback_hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(args.steps):
        if step == args.warmup:
            dist.barrier()
            start = time.perf_counter()
        x, y = batch(args, rank, step)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    dist.barrier()
    elapsed = time.perf_counter() - start
    if args.save:
        torch.save([p.detach().clone() for p in model.module.parameters()], "%s.rank%d.pt" % (args.save, rank))
    if rank == 0:
        params = sum(p.numel() for p in model.parameters())
        print("backend=%s ranks=%d params=%d (%.1f MB) steps=%d final_loss=%.6f steps_per_s=%.2f compress=%s "
              "hook=%s" % (args.backend, dist.get_world_size(), params, params * 4 / 1e6, args.steps, loss.item(),
                           (args.steps - args.warmup) / elapsed, os.environ.get("TALLY_COMPRESS", "none"),
                           args.hook), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

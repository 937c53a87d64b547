#!/usr/bin/python3
"""Training a small mixture-of-experts layer, one expert per rank, with the tally or the gloo backend.

  tally-run -n 3 /usr/bin/python3 examples/moe_layer.py --backend tally
  torchrun --nproc_per_node=3 examples/moe_layer.py --backend gloo

(tally_torch must be importable: after `make torch`, PYTHONPATH=build/python/lib.) Every rank
has its own tokens, a replica of the router (a linear gate) and one expert (an MLP). The gate
sends each token to its top-1 expert, so each rank sends every other a different number of
tokens (possibly none): an all_to_all_single of the counts tells each rank what it will receive,
then an all_to_all_single with those uneven splits carries the tokens to their experts and another
brings the results back, where they are scaled by the gate's probability. Backward runs the same
exchanges in reverse (torch.distributed.nn.functional.all_to_all_single); the gate's gradients
are averaged over the ranks with all_reduce. Rank 0 prints the loss summed over ranks and the
tokens each expert took in the last step; --save PREFIX writes each rank's final parameters to
PREFIX.rank<R>.pt.
"""
import argparse

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn

import distributed_env

DIM, HIDDEN = 16, 32


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["tally", "gloo"], default="tally")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tokens", type=int, default=24, help="tokens per rank per step")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--save", help="write each rank's final parameters to SAVE.rank<R>.pt")
    return p.parse_args()


class MoELayer(nn.Module):
    """Top-1 routing over one expert per rank of the default group."""

    def __init__(self, seed, rank, experts):
        super().__init__()
        torch.manual_seed(seed)  # the same gate on every rank
        self.gate = nn.Linear(DIM, experts)
        torch.manual_seed(seed + 1 + rank)  # a different expert on every rank
        self.expert = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, DIM))

    def forward(self, x):
        probs = torch.softmax(self.gate(x), dim=1)
        weight, choice = probs.max(dim=1)
        order = torch.argsort(choice, stable=True)  # tokens grouped by expert, i.e. by rank
        send_counts = torch.bincount(choice, minlength=probs.shape[1])
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts)  # equal splits: one count per rank
        send_splits, recv_splits = send_counts.tolist(), recv_counts.tolist()
        arrived = dist_fn.all_to_all_single(torch.empty(sum(recv_splits), DIM), x[order], recv_splits, send_splits)
        done = self.expert(arrived)
        back = dist_fn.all_to_all_single(torch.empty(x.shape[0], DIM), done, send_splits, recv_splits)
        out = torch.empty_like(back).index_copy(0, order, back)  # back in the tokens' order
        return out * weight.unsqueeze(1), recv_splits


def tokens(args, rank, step):
    g = torch.Generator().manual_seed(args.seed + 1000 * step + rank)
    x = torch.randn(args.tokens, DIM, generator=g)
    return x, torch.sin(2 * x)  # a target the layer can learn


def main():
    args = parse_args()
    rank, size = distributed_env.init(args.backend)
    layer = MoELayer(args.seed, rank, size)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    for step in range(args.steps):
        optimizer.zero_grad()
        x, target = tokens(args, rank, step)
        y, arrived = layer(x)
        loss = nn.functional.mse_loss(y, target)
        loss.backward()
        for p in layer.gate.parameters():  # the gate is replicated: average its gradients
            dist.all_reduce(p.grad)
            p.grad /= size
        optimizer.step()
    total = loss.detach().clone()
    dist.all_reduce(total)
    took = torch.tensor([sum(arrived)])
    counts = [torch.empty_like(took) for _ in range(size)] if rank == 0 else None
    dist.gather(took, counts, dst=0)
    if args.save:
        torch.save([p.detach().clone() for p in layer.parameters()], "%s.rank%d.pt" % (args.save, rank))
    if rank == 0:
        print("backend=%s ranks=%d steps=%d final_loss=%r tokens_per_expert=%s" %
              (args.backend, size, args.steps, total.item(), [c.item() for c in counts]), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Pipeline-parallel training of a tiny seeded MLP on 2 ranks, with the tally or the gloo backend.

  tally-run -n 2 /usr/bin/python3 examples/pipeline_train.py --backend tally
  torchrun --nproc_per_node=2 examples/pipeline_train.py --backend gloo

(tally_torch must be importable: after `make torch`, PYTHONPATH=build/python/lib.) Rank 0 holds
the first stage (input layer), rank 1 the second (hidden and output layers, and the loss). Each
step splits the batch into --microbatches; activations go forward from rank 0 to rank 1 and their
gradients come back with point-to-point calls, one microbatch ahead: the first activation with
send/recv, then each "activation i forward, gradient i-1 back" exchange as one batch_isend_irecv
(every rank posts its send before its recv, which one Tally group runs without deadlock), the last
gradient with send/recv. Rank 1 prints the final loss; --save PREFIX writes each rank's final
parameters to PREFIX.rank<R>.pt.
"""
import argparse

import torch
import torch.distributed as dist
import torch.nn as nn

import distributed_env

IN, HIDDEN, CLASSES = 32, 64, 10


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["tally", "gloo"], default="tally")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--microbatches", type=int, default=4)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--save", help="write each rank's final parameters to SAVE.rank<R>.pt")
    return p.parse_args()


def make_stage(args, rank):
    torch.manual_seed(args.seed + rank)  # the same initial parameters with every backend
    if rank == 0:
        return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU())
    return nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def microbatches(args, step):
    """The step's batch, the same on both ranks (rank 0 uses the inputs, rank 1 the labels): random
    inputs, labelled by a fixed random linear map, which the model can learn."""
    teacher = torch.randn(IN, CLASSES, generator=torch.Generator().manual_seed(args.seed))
    x = torch.randn(args.batch, IN, generator=torch.Generator().manual_seed(args.seed + 1 + step))
    return list(zip(x.chunk(args.microbatches), (x @ teacher).argmax(1).chunk(args.microbatches)))


def exchange(send_tensor, recv_tensor, peer):
    """Sends one tensor to peer and receives one from it, both posted at once."""
    for req in dist.batch_isend_irecv([dist.P2POp(dist.isend, send_tensor, peer),
                                       dist.P2POp(dist.irecv, recv_tensor, peer)]):
        req.wait()


def first_stage_step(stage, batches):
    """Forward each microbatch and send its activation; backward each with its returned gradient."""
    pending = []  # activations whose gradient has not come back yet
    for i, (x, _) in enumerate(batches):
        act = stage(x)
        if i == 0:
            dist.send(act.detach(), 1)
        else:
            grad = torch.empty_like(pending[0])
            exchange(act.detach(), grad, 1)
            pending.pop(0).backward(grad)
        pending.append(act)
    grad = torch.empty_like(pending[0])
    dist.recv(grad, 1)
    pending.pop(0).backward(grad)


def last_stage_step(stage, batches, loss_fn):
    """Receive each activation, finish forward and backward, return the activation's gradient."""
    total = 0.0
    act = torch.empty(batches[0][0].shape[0], HIDDEN)
    dist.recv(act, 0)
    for i, (_, y) in enumerate(batches):
        act.requires_grad_()
        loss = loss_fn(stage(act), y) / len(batches)
        loss.backward()
        total += loss.item()
        if i + 1 < len(batches):
            following = torch.empty(batches[i + 1][0].shape[0], HIDDEN)
            exchange(act.grad, following, 0)
            act = following
        else:
            dist.send(act.grad, 0)
    return total


def main():
    args = parse_args()
    rank, size = distributed_env.init(args.backend)
    assert size == 2, "pipeline_train.py runs 2 stages on 2 ranks, not %d" % size
    stage = make_stage(args, rank)
    optimizer = torch.optim.SGD(stage.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(args.steps):
        optimizer.zero_grad()
        batches = microbatches(args, step)
        loss = first_stage_step(stage, batches) if rank == 0 else last_stage_step(stage, batches, loss_fn)
        optimizer.step()
    if args.save:
        torch.save([p.detach().clone() for p in stage.parameters()], "%s.rank%d.pt" % (args.save, rank))
    if rank == 1:
        print("backend=%s steps=%d microbatches=%d final_loss=%r" % (args.backend, args.steps, args.microbatches, loss),
              flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

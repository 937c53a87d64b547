#!/usr/bin/python3
"""Elastic training with the tally backend: a rank dies, the survivors shrink and go on, a
replacement joins through grow, and nobody restarts.

  PYTHONPATH=build/python/lib /usr/bin/python3 examples/elastic_train.py [--save PREFIX]

Run like this, the script is its own launcher (the part torchelastic's agent plays): it starts 4
worker processes that train a small seeded MLP (float64) on a fixed global batch, split among
however many ranks there are, with the gradients summed by an allreduce on the tally group.
During step --kill-step the launcher kills rank --victim with SIGKILL (the worker stops after its
backward pass and waits there, so the kill lands mid-step while the others are in the
allreduce). The survivors' allreduce raises; each asks tally_torch.failed_ranks which rank
failed, tally_torch.shrink makes the group of the 3 of them, renumbered, and they agree (an
allreduce MIN on the new group) on the last step every one of them completed and restore the
model and the optimizer's momentum from their copy of that step. They go on with 3 ranks.
Seeing the victim gone, the launcher starts a replacement process, which waits in the store for
the grow id; at step --grow-step rank 0 makes it (tally_torch.grow_id) and puts it in the store,
the survivors call tally_torch.grow and the replacement tally_torch.join, which makes it rank 3
of the grown group; rank 0 broadcasts the step, the parameters and the momentum, and all 4 train
to --steps. The 3 survivors are the processes started first (the launcher checks, and prints
their pids).

Because every step's global batch is the same whoever computes it, the final model is the one
uninterrupted training gives, up to the order of the floating-point sums: --no-failure trains the
same steps on 4 ranks without a kill (the test compares the two). --save PREFIX writes each final
rank's parameters to PREFIX.rank<R>.pt.

The groups shrink, grow and join make are registered with torch.distributed, so the workers use
torch's own calls on them (dist.all_reduce(t, group=group), dist.broadcast with the global rank
of the group's rank 0), as on any group; the replacement, which has no default group, too.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

WORLD = 4
GLOBAL_BATCH = 12  # divides among 4 and among 3 ranks


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--kill-step", type=int, default=4, help="the step during which the victim is killed")
    p.add_argument("--grow-step", type=int, default=8, help="the step before which the replacement joins")
    p.add_argument("--victim", type=int, default=2, help="the rank killed")
    p.add_argument("--no-failure", action="store_true", help="train the same steps on 4 ranks, no kill")
    p.add_argument("--timeout", type=float, default=30.0, help="the tally groups' timeout, seconds")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--save", help="write each final rank's parameters to SAVE.rank<R>.pt")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # a rank number, or "join" (the replacement)
    p.add_argument("--store", help=argparse.SUPPRESS)
    return p.parse_args()


# --- the training, the same in every worker ------------------------------------------------------

def make_model(args):
    torch.manual_seed(args.seed)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4)).double()


def make_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def my_share(args, step, rank, size):
    """Step `step`'s global batch (the same whoever computes it), rows rank*B/size.. of it."""
    g = torch.Generator().manual_seed(args.seed + step)
    x = torch.randn(GLOBAL_BATCH, 16, generator=g, dtype=torch.float64)
    y = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    n = GLOBAL_BATCH // size
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def allreduce(group, t, op=dist.ReduceOp.SUM):
    dist.all_reduce(t, op=op, group=group)


def broadcast(group, t, root=0):
    """From the group's rank `root`, named to torch by its global rank."""
    dist.broadcast(t, src=dist.get_global_rank(group, root), group=group)


def train_step(args, model, optimizer, group, step, victim_waits=False):
    """One step: this rank's share of the loss (summed over the global batch's rows, over
    GLOBAL_BATCH), its gradients summed over the group, the optimizer's step."""
    x, y = my_share(args, step, group.rank(), group.size())
    optimizer.zero_grad()
    loss = ((model(x) - y) ** 2).sum() / GLOBAL_BATCH
    loss.backward()
    if victim_waits:  # the launcher kills this process now, mid-step
        open(args.store + ".victim-ready", "w").close()
        time.sleep(60)
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    allreduce(group, grads)
    offset = 0
    for p in model.parameters():
        p.grad.copy_(grads[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    optimizer.step()
    return loss.detach().clone()


def snapshot(model, optimizer):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {p: optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters() if p in optimizer.state})


def restore(model, optimizer, state):
    model.load_state_dict(state[0])
    optimizer.state.clear()
    for p, buf in state[1].items():
        optimizer.state[p]["momentum_buffer"] = buf.clone()


def state_tensors(model, optimizer):
    """The parameters and momentum buffers (made if missing), to broadcast to a newcomer."""
    for p in model.parameters():
        optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
    return [p.data for p in model.parameters()] + [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]


def say(group, text):
    if group.rank() == 0:
        print(text, flush=True)


def finish(args, model, group, loss):
    allreduce(group, loss)  # the last step's loss over the global batch
    if args.save:
        torch.save([p.detach().clone() for p in model.parameters()], "%s.rank%d.pt" % (args.save, group.rank()))
    say(group, "finished: %d steps on %d ranks, final loss %.6f" % (args.steps, group.size(), loss.item()))


def shrink_until_it_works(group):
    """The survivors' recovery: which ranks failed, then a group without them. A shrink that fails
    (another rank died meanwhile, or the survivors disagreed) is tried again with what this rank
    then knows."""
    import tally_torch
    for attempt in range(3):
        failed = tally_torch.failed_ranks(group)
        try:
            return failed, tally_torch.shrink(group, failed)
        except RuntimeError as e:
            print("rank %d: shrink excluding %s failed (%s), trying again" % (group.rank(), failed, e), flush=True)
            if attempt == 2:
                raise


def survivor(args, rank):
    """An original rank: trains, survives the kill, shrinks, grows, finishes."""
    import tally_torch
    store = dist.FileStore(args.store, WORLD)
    dist.init_process_group("tally", store=store, rank=rank, world_size=WORLD, timeout=timedelta(seconds=args.timeout))
    group = dist.distributed_c10d._get_default_group()
    model = make_model(args)
    optimizer = make_optimizer(model)
    history = {0: snapshot(model, optimizer)}  # completed steps -> the state after them (the last two)
    step, grown = 0, args.no_failure
    while step < args.steps:
        if not grown and step == args.grow_step and group.size() < WORLD:
            # One existing rank makes the id and hands it out of band (the store); every existing
            # rank calls grow, the replacement join.
            nnew = WORLD - group.size()
            uid = tally_torch.grow_id(group, nnew) if group.rank() == 0 else None
            if uid is not None:
                store.set("grow_id", uid)
            group = tally_torch.grow(group, nnew, uid)
            grown = True
            state = torch.tensor([step], dtype=torch.int64)
            broadcast(group, state)
            for t in state_tensors(model, optimizer):
                broadcast(group, t)
            say(group, "step %d: grew back to %d ranks (the replacement is rank %d)" % (step, group.size(),
                                                                                       WORLD - 1))
        try:
            loss = train_step(args, model, optimizer, group, step,
                              victim_waits=not args.no_failure and rank == args.victim and step == args.kill_step)
        except RuntimeError as e:
            t0 = time.monotonic()
            failed, smaller = shrink_until_it_works(group)
            group = smaller
            # The last step every survivor completed (one may have finished a step the others had
            # not), and that step's model and momentum.
            done = torch.tensor([step], dtype=torch.int64)
            allreduce(group, done, dist.ReduceOp.MIN)
            step = int(done.item())
            restore(model, optimizer, history[step])
            say(group, "step %d: rank(s) %s failed (%s...); shrank to %d ranks in %.2f s, resuming from step %d" %
                (step, failed, str(e).split(":")[0], group.size(), time.monotonic() - t0, step))
            continue
        step += 1
        history[step] = snapshot(model, optimizer)
        history.pop(step - 2, None)
    finish(args, model, group, loss)
    del group
    dist.destroy_process_group()


def replacement(args):
    """The new process: waits for the grow id in the store, joins as the last rank, receives the
    step, parameters and momentum from rank 0, and trains to the end with the others."""
    os.environ["TALLY_TIMEOUT"] = str(args.timeout)  # join takes its timeout from there (it has no group)
    import tally_torch
    store = dist.FileStore(args.store, WORLD)
    store.set_timeout(timedelta(seconds=args.timeout))
    uid = store.get("grow_id")
    group = tally_torch.join(uid, 0)
    model = make_model(args)
    optimizer = make_optimizer(model)
    state = torch.zeros(1, dtype=torch.int64)
    broadcast(group, state)
    for t in state_tensors(model, optimizer):
        broadcast(group, t)
    for step in range(int(state.item()), args.steps):
        loss = train_step(args, model, optimizer, group, step)
    finish(args, model, group, loss)
    dist.destroy_process_group(group)  # it has no default group to destroy with the rest
    del group


# --- the launcher -------------------------------------------------------------------------------

def launch(args):
    import tally_torch
    regrow = not args.no_failure and args.grow_step < args.steps
    if regrow and not tally_torch.HAVE_GROW:
        sys.exit("elastic_train.py: this libtally has no tally_comm_grow (give --grow-step %d to end on 3 ranks)" %
                 args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        common = [sys.executable, os.path.abspath(__file__), "--store", store, "--steps", str(args.steps),
                  "--kill-step", str(args.kill_step), "--grow-step", str(args.grow_step), "--victim",
                  str(args.victim), "--timeout", str(args.timeout), "--seed", str(args.seed)]
        common += (["--save", args.save] if args.save else []) + (["--no-failure"] if args.no_failure else [])
        start = time.monotonic()
        workers = [subprocess.Popen(common + ["--worker", str(r)]) for r in range(WORLD)]
        print("launched ranks 0-%d, pids %s" % (WORLD - 1, [w.pid for w in workers]), flush=True)
        extra = None
        if not args.no_failure:
            victim = workers[args.victim]
            while not os.path.exists(store + ".victim-ready"):
                if victim.poll() is not None or time.monotonic() - start > args.timeout:
                    sys.exit("elastic_train.py: the victim never reached step %d" % args.kill_step)
                time.sleep(0.01)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            print("killed rank %d (pid %d) with SIGKILL during step %d%s" %
                  (args.victim, victim.pid, args.kill_step, "; starting its replacement" if regrow else ""), flush=True)
            if regrow:
                extra = subprocess.Popen(common + ["--worker", "join"])
        codes = {}
        for r, w in enumerate(workers):
            if r != args.victim or args.no_failure:
                codes[w.pid] = w.wait(timeout=4 * args.timeout)
        if extra:
            codes[extra.pid] = extra.wait(timeout=4 * args.timeout)
        if any(codes.values()):
            sys.exit("elastic_train.py: a worker failed: exit codes by pid %s" % codes)
        print("done in %.1f s; the survivors %s ran from start to end, never restarted" %
              (time.monotonic() - start, [w.pid for r, w in enumerate(workers) if r != args.victim or args.no_failure]),
              flush=True)


def main():
    args = parse_args()
    if args.worker is None:
        launch(args)
    elif args.worker == "join":
        replacement(args)
    else:
        survivor(args, int(args.worker))


if __name__ == "__main__":
    main()

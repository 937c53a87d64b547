"""What the examples share: starting torch.distributed with the tally or the gloo backend, under
tally-run or torchrun.

  init(backend)   # "tally" or "gloo"; returns (rank, world size)
"""
import os

import torch.distributed as dist


def adopt_tally_run_env():
    """Under tally-run (TALLY_RANK, TALLY_SIZE, TALLY_ROOT) rather than torchrun: give c10d's
    env:// the same rank and size, and TALLY_ROOT's free port for its store (the tally backend
    takes its own bootstrap address from tally_get_unique_id, so the port is not otherwise used)."""
    if "RANK" in os.environ or "TALLY_RANK" not in os.environ:
        return
    host, port = os.environ["TALLY_ROOT"].rsplit(":", 1)
    os.environ.update(RANK=os.environ["TALLY_RANK"], WORLD_SIZE=os.environ["TALLY_SIZE"], MASTER_ADDR=host,
                      MASTER_PORT=port)


def init(backend):
    """init_process_group(backend) from the launcher's environment (importing tally_torch first,
    which registers "tally"); returns (rank, world size)."""
    adopt_tally_run_env()
    if backend == "tally":
        import tally_torch  # noqa: F401  (registers the backend)
    dist.init_process_group(backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size()

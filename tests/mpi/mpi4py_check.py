"""An ordinary mpi4py program for libtally_mpi's test (tests/test_mpi.sh): the upper-case buffer
collectives with numpy arrays of several dtypes, MPI.IN_PLACE, sub-communicators from Split and a
user-defined MPI.Op (which must fall through to MPI). Each rank writes one line per result, a hash
of the bytes MPI defines, to CHECK_OUT.RANK, so that runs with and without the shim compare.
Run with Debian's /usr/bin/python3 (python3-mpi4py, python3-numpy)."""
import hashlib
import os
import sys

import numpy as np
from mpi4py import MPI

world = MPI.COMM_WORLD
lines = []


def report(comm_name, what, array):
    digest = hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
    lines.append(f"rank {world.rank} {comm_name} {what} {digest}")


def user_max(a, b, datatype):
    x = np.frombuffer(a, dtype=np.int32)
    y = np.frombuffer(b, dtype=np.int32)
    np.maximum(x, y, out=y)


def run(comm, name):
    rank, size, n = comm.rank, comm.size, 40
    for dtype in (np.float32, np.float64, np.int32, np.int64, np.uint8, np.uint64):
        x = (np.arange(n) % 7 + rank).astype(dtype)
        y = np.zeros(n, dtype=dtype)
        comm.Allreduce(x, y, op=MPI.SUM)
        report(name, f"allreduce-sum-{np.dtype(dtype).name}", y)
        comm.Allreduce(MPI.IN_PLACE, x, op=MPI.MAX)
        report(name, f"allreduce-max-inplace-{np.dtype(dtype).name}", x)
    x = np.arange(n, dtype=np.float64) * (rank + 1)
    y = np.zeros(n, dtype=np.float64)
    comm.Reduce(x, y, op=MPI.MIN, root=size - 1)
    if rank == size - 1:
        report(name, "reduce-min", y)
    b = np.arange(n, dtype=np.int64) if rank == 0 else np.zeros(n, dtype=np.int64)
    comm.Bcast(b, root=0)
    report(name, "bcast-int64", b)
    mine = np.full(n, rank * 3 + 1, dtype=np.float32)
    gathered = np.zeros(n * size, dtype=np.float32)
    comm.Allgather(mine, gathered)
    report(name, "allgather-float32", gathered)
    gathered[:] = 0
    gathered[rank * n:(rank + 1) * n] = mine
    comm.Allgather(MPI.IN_PLACE, gathered)
    report(name, "allgather-inplace", gathered)
    full = (np.arange(n * size) % 11 + rank).astype(np.int32)
    block = np.zeros(n, dtype=np.int32)
    comm.Reduce_scatter_block(full, block, op=MPI.SUM)
    report(name, "reduce-scatter-int32", block)
    sendbuf = (np.arange(n * size) + 100 * rank).astype(np.float64)
    recvbuf = np.zeros(n * size, dtype=np.float64)
    comm.Alltoall(sendbuf, recvbuf)
    report(name, "alltoall-float64", recvbuf)
    root_buf = np.zeros(n * size, dtype=np.int32) if rank == 0 else None
    comm.Gather(np.full(n, rank, dtype=np.int32), root_buf, root=0)
    if rank == 0:
        report(name, "gather-int32", root_buf)
    piece = np.zeros(n, dtype=np.int32)
    comm.Scatter(np.arange(n * size, dtype=np.int32) if rank == size - 1 else None, piece, root=size - 1)
    report(name, "scatter-int32", piece)
    op = MPI.Op.Create(user_max, commute=True)
    x = (np.arange(n) * (rank + 1) % 13).astype(np.int32)
    y = np.zeros(n, dtype=np.int32)
    comm.Allreduce(x, y, op=op)
    report(name, "allreduce-user-op", y)
    op.Free()
    comm.Barrier()


run(world, "world")
half = world.Split(world.rank % 2, world.rank)
run(half, "odd" if world.rank % 2 else "even")
half.Free()
run(world, "world-again")
with open(f"{os.environ.get('CHECK_OUT', 'mpi4py_check')}.{world.rank}", "w") as out:
    out.write("\n".join(lines) + "\n")
sys.exit(0)

"""Data-parallel training across processes: PyTorch DDP as launched by `torchrun`.

torchrun starts one process per GPU (or per CPU worker) and tells each, through environment
variables, who it is: RANK (0..WORLD_SIZE-1 over all nodes), LOCAL_RANK (its GPU on this node),
WORLD_SIZE, and where to meet (MASTER_ADDR/PORT). Outside torchrun none of them is set and every
helper here answers as a single process would (rank 0 of 1, no communication), so the
single-process run is unchanged.

One node, 4 GPUs (`stages/train.py` does this itself when train.nproc_per_node is 4):

    torchrun --standalone --nproc_per_node 4 stages/train.py

Two nodes of 8 GPUs (same code, params and data on both), K = 0 on node0 and 1 on node1; node-rank 0
holds global rank 0, which writes the outputs:

    torchrun --nnodes 2 --node-rank K --nproc_per_node 8 --rdzv-endpoint node0:29500 stages/train.py
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, the one process that prints, saves checkpoints and writes the stage outputs."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Each process on a node drives its own GPU (LOCAL_RANK); the CPU is shared."""
    if device.type == "cuda" and launched_by_torchrun() and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on the CPU), leave it at the end.

    Outside torchrun this does nothing.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), device_id=device if device.type == "cuda" else None)
    try:
        yield
        dist.barrier()  # no rank leaves while rank 0 is still writing the outputs
    finally:
        dist.destroy_process_group()


def relaunch_under_torchrun(nproc_per_node: int, argv: Sequence[str]) -> int:
    """Run this same command again as `nproc_per_node` processes on this node; their exit code.

    `--standalone` lets torchrun pick a free local port, so two runs on one machine never clash.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc_per_node), *argv]
    print(f"launching {nproc_per_node} processes: {' '.join(cmd[1:])}", flush=True)
    return subprocess.call(cmd)


def rank_seed(seed: int) -> int:
    """A seed of this rank's own, for augmentation and dropout: ranks that shared one stream would
    flip, crop and drop out in lockstep. Rank 0 keeps `seed`, so one process is unchanged."""
    if rank() == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0])


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """`obj` as rank `src` holds it, on every rank (pickled; for plain data and CPU tensors)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank `src`'s buffers (BatchNorm running statistics): each rank updated them
    on its own batches, and the ranks must evaluate, and keep, one and the same model."""
    if not dist.is_initialized():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def all_reduce(values: Sequence[float], op: str = "sum") -> list[float]:
    """Element-wise sum (or max) of `values` over all ranks."""
    if not dist.is_initialized():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.cpu().tolist()


def shard_indices(n: int) -> range:
    """The items of a length-n sequence this rank handles: rank, rank + world, ... (disjoint, all covered)."""
    return range(rank(), n, world_size())


def gather_shards(shard: np.ndarray) -> np.ndarray:
    """Reassemble, on every rank, an array whose rows were split with `shard_indices`, in the
    original row order."""
    if not dist.is_initialized():
        return shard
    parts = [None] * world_size()
    dist.all_gather_object(parts, shard)
    total = sum(len(p) for p in parts)
    out = np.empty((total, *shard.shape[1:]), dtype=shard.dtype)
    for r, part in enumerate(parts):
        out[r::len(parts)] = part
    return out

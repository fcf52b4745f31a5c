"""Just enough torch.distributed for data-parallel GRPO: rank, world size, print0, metric all-reduce.

One code path for one process and for `torchrun --nproc_per_node=K`: every helper here works without a
process group (it then does nothing, or returns its input), so the single-process path never needs
torch.distributed at all.

Choices made here (each shown in notebooks/06_multi_gpu_qwen.ipynb):
1. Distributed means "launched by torchrun": the `RANK` environment variable is present (nanoGPT's
   rule). torchrun also sets LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
2. The backend is `nccl` on CUDA and `gloo` on CPU; each rank uses the GPU `cuda:LOCAL_RANK`.
3. Only metrics cross ranks (`all_reduce_metrics`): each rank samples whole groups for its own prompts,
   so group means and stds need no communication. Gradients are averaged by DistributedDataParallel.
4. Only rank 0 prints (`print0`), logs and writes files (`is_main`).
5. The process group has a timeout (`init_distributed(timeout_minutes=...)`, GRPOConfig.dist_timeout_minutes):
   a collective that waits longer than that raises instead of hanging forever. A rank that *dies* is
   handled sooner by torchrun, whose agent stops the other ranks and exits non-zero.
6. Metrics are reduced in float64 on the rank's device (`cuda:LOCAL_RANK` under nccl, which only
   reduces GPU tensors; the CPU under gloo).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: rank in [0, world_size), local_rank on its machine, its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the `RANK` environment variable is set (torchrun sets it for every process)."""
    return "RANK" in os.environ


def env_rank() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the environment; (0, 0, 1) for a plain `python` process."""
    if not launched_by_torchrun():
        return 0, 0, 1
    try:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as e:
        raise ValueError(f"RANK / LOCAL_RANK / WORLD_SIZE must be integers (as torchrun sets them): {e}") from None
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    return rank, local_rank, world_size


def resolve_device(device: str = "auto", local_rank: int = 0) -> str:
    """'auto' -> 'cuda:LOCAL_RANK' when CUDA is available, else 'cpu'; 'cuda' -> 'cuda:LOCAL_RANK'.

    Raises:
        ValueError: a CUDA device was asked for on a machine without CUDA.
    """
    if device == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use --device cpu (or auto)")
    if device == "cuda":
        return f"cuda:{local_rank}"
    return device


def init_distributed(device: str = "auto", timeout_minutes: float | None = None) -> DistInfo:
    """Start the process group when launched by torchrun (nccl on CUDA, gloo on CPU); else do nothing.

    Args:
        device: 'auto', 'cpu', 'cuda' or 'cuda:K' (see `resolve_device`).
        timeout_minutes: how long a collective may wait for the other ranks before it raises
            (None: torch's default, 10 min for nccl, 30 min for gloo).

    Returns:
        DistInfo(rank, local_rank, world_size, device). A plain `python` process gets rank 0 of 1 and
        no process group is created.

    Used by: `grpo_lib.run.lifecycle.Run`
    """
    rank, local_rank, world_size = env_rank()
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not is_initialized():
        backend = "nccl" if dev.startswith("cuda") else "gloo"
        if dev.startswith("cuda"):
            torch.cuda.set_device(dev)
        kwargs = {} if timeout_minutes is None else {"timeout": timedelta(minutes=timeout_minutes)}
        tdist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def is_initialized() -> bool:
    """True when a torch.distributed process group exists."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and always in a single process)."""
    return get_rank() == 0


def print0(*args, **kwargs) -> None:
    """`print` on rank 0 only, so k processes do not print every line k times."""
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_initialized():
        torch.distributed.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns a new tensor; the input itself in a single process)."""
    if not is_initialized():
        return x
    y = x.detach().clone()
    torch.distributed.all_reduce(y, op=torch.distributed.ReduceOp.SUM)
    return y


def all_reduce_metrics(metrics: Mapping[str, float], op: str = "mean", device: str | torch.device = "cpu",
                       ) -> dict[str, float]:
    """Average (op='mean') or add up (op='sum') a dict of scalar metrics over ranks, as Python floats.

    Every rank must pass the same keys (they are sorted so the order matches). In a single process the
    values come back unchanged, as floats.

    Args:
        metrics: name -> number (or 0-dim tensor).
        op: 'mean' or 'sum'.
        device: where the reduction tensor lives: the rank's GPU under nccl (which reduces GPU tensors
            only), "cpu" under gloo.

    Used by: `grpo_lib.run.lifecycle.Run` (the per-step metrics)
    """
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
    keys = sorted(metrics)
    values = [float(metrics[k]) for k in keys]
    if not is_initialized() or not keys:
        return dict(zip(keys, values))
    t = torch.tensor(values, dtype=torch.float64, device=device)      # float64: sums of many steps stay exact
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    if op == "mean":
        t = t / get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers into `module` on every rank (no-op in a single process)."""
    if not is_initialized():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(t.data, src=src)


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...]: every rank gets every rank's (picklable) object; [obj] alone.

    Used to collect each rank's RNG state for a checkpoint that rank 0 writes.
    """
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def cleanup(barrier: bool = False) -> None:
    """Destroy the process group if there is one (call once at the end of a torchrun job).

    Args:
        barrier: wait for every rank first (after a successful run). Without it a rank that finishes early
            can close its gloo connections while a peer is still tearing down, which occasionally aborts the
            peer (SIGABRT) on a loaded machine. Leave it False on an error path: a dead peer would make the
            barrier wait for the whole process-group timeout.
    """
    if is_initialized():
        if barrier:
            torch.distributed.barrier()
        # Free unreachable DDP wrappers first, while the group is still registered: a Reducer freed later (by the
        # garbage collector or at exit) that holds the group's last reference runs ~ProcessGroupGloo, which joins
        # gloo's threads while holding the GIL; a gloo thread still freeing a Python-owned tensor then waits for
        # the GIL forever (seen with py-spy on benchmarks/bench_step.py), or the process aborts at exit.
        gc.collect()
        torch.distributed.destroy_process_group()

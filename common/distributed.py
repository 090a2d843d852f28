"""Multi-process (DDP) training helpers, used by the shared training wiring (``common/configs/train.yaml``).

Every helper is a no-op outside a process group, so one config serves a plain run and a DDP run; the bundles'
``multi_gpu_train.yaml`` overlays only set ``distributed: true`` (which initialises the process group).

Started by ``torchrun --nproc_per_node=N -m monai.bundle run training --config_file "['<b>/configs/train.yaml',
'<b>/configs/multi_gpu_train.yaml']"``: one process per GPU (NCCL), or per CPU share with the gloo backend (what CI
tests). Strategy:

- every rank builds the same network (same seed) and wraps it in ``DistributedDataParallel``; training and
  validation data are sharded with MONAI's ``DistributedSampler`` (its epoch is set by MONAI's workflow);
- validation runs on every rank, on its shard, with the UNWRAPPED network (a DDP forward is a collective, and
  sliding windows make the number of forwards differ between ranks); MONAI's metrics gather across ranks, and
  ``GroupedMetricsReport`` gathers its per-item rows, so every rank sees the whole validation split's figures;
- handlers that only write or print (checkpoints, TensorBoard, stats, panels) run on rank 0
  (:func:`handlers_for_rank`), and the checkpoint / report writers also refuse to write elsewhere, so exactly one
  process writes each file. Resuming, learning-rate schedules and stage-1 weight loading run on all ranks, so every
  rank continues from the same state;
- a prerequisite stage (a stage-1 network trained by ``run_config_if_missing``) runs on rank 0 while the others wait
  at a barrier (:func:`main_process_first`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "destroy_process_group",
    "handlers_for_rank",
    "init_process_group",
    "is_distributed",
    "is_main_process",
    "local_device",
    "main_process_first",
    "rank",
    "shard_sampler",
    "threads_per_process",
    "unwrap",
    "world_size",
    "wrap_ddp",
]

# handler classes (by name, so optional packages need not be imported) that only rank 0 runs
RANK_ZERO_ONLY = frozenset(
    {
        "StatsHandler",
        "TensorBoardStatsHandler",
        "MLFlowHandler",
        "CheckpointSaver",
        "LastCheckpointSaver",
        "BestModelSaver",
        "PanelWriter",
    }
)


def is_distributed() -> bool:
    """Whether this process belongs to an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 or when not distributed."""
    return rank() == 0


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available (and made current), else CPU."""
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def init_process_group(backend: str | None = None) -> bool:
    """Join the process group torchrun describes (``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` ...): NCCL on CUDA,
    gloo on CPU unless ``backend`` says otherwise. Returns True; raises a clear error outside torchrun."""
    if is_distributed():
        return True
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"multi_gpu_train.yaml must be started by torchrun (missing environment {missing}): "
            "torchrun --nproc_per_node=N -m monai.bundle run training --config_file \"['.../train.yaml',"
            "'.../multi_gpu_train.yaml']\""
        )
    dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return True


def threads_per_process() -> int:
    """CPU threads per process: the machine's cores shared by the local processes (at least 1)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
    return max(1, (os.cpu_count() or 1) // max(1, local))


def wrap_ddp(network: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``network`` on ``device`` in ``DistributedDataParallel`` (``device_ids`` on CUDA only); outside a process
    group, ``network`` on ``device``."""
    network = network.to(device)
    if not is_distributed():
        return network
    ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        network, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def shard_sampler(dataset: Any, shuffle: bool, even_divisible: bool = True) -> Any:
    """MONAI's ``DistributedSampler`` over ``dataset`` (one shard per rank) inside a process group, else None (the
    ``DataLoader`` then iterates the whole dataset). ``even_divisible``: pad shards to equal length (training) or
    keep them exact (validation)."""
    if not is_distributed():
        return None
    from monai.data import DistributedSampler

    return DistributedSampler(dataset, even_divisible=even_divisible, shuffle=shuffle)


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (else ``network``)."""
    if isinstance(network, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        return network.module
    return network


def handlers_for_rank(handlers: Iterable[Any] | None) -> list[Any]:
    """All ``handlers`` on rank 0; on other ranks those whose class is not in :data:`RANK_ZERO_ONLY`."""
    handlers = list(handlers or [])
    if is_main_process():
        return handlers
    return [h for h in handlers if type(h).__name__ not in RANK_ZERO_ONLY]


def main_process_first(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` on rank 0 only, then make every rank wait for it (``barrier``). Returns ``fn``'s result on rank 0,
    None elsewhere. Not distributed: just calls ``fn``."""
    result = fn(*args, **kwargs) if is_main_process() else None
    if is_distributed():
        dist.barrier()
    return result


def destroy_process_group() -> None:
    """Leave the process group (no-op when not distributed)."""
    if is_distributed():
        dist.destroy_process_group()

"""torch.distributed helpers (torchrun: RANK / WORLD_SIZE / LOCAL_RANK from the environment) that
degrade to no-ops in a single process."""

from __future__ import annotations

import gc
import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def process_group_backend(use_cuda: bool) -> str:
    """The process group's backends: gloo for CPU tensors, and NCCL for CUDA tensors on CUDA.

    A CUDA run still reduces CPU tensors: the step's non-finite flag, the logged loss sums, Ctrl-C's stop
    flag and the validation's confusion matrix (engine/trainer.py, hooks.py, validate.py). NCCL alone has no
    CPU backend ("No backend type associated with device type cpu"), so each tensor goes to the backend of
    its device, which PyTorch dispatches by this string."""
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group torchrun describes (if any) and return this process's device.

    NCCL for CUDA tensors and gloo for CPU ones (``process_group_backend``). Without torchrun (no WORLD_SIZE,
    or 1) nothing is initialised.
    """
    use_cuda = torch.cuda.is_available() and device != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
        dist.init_process_group(process_group_backend(use_cuda))
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def shutdown(finished: bool = True) -> None:
    """Leave the process group at the end of a command, while the interpreter is whole. A process that
    finished its work has aborted at exit in CI ("terminate called without an active exception", on 2-process
    runs, and once on a single-process run with no process group: so gloo's threads, first blamed, are not the
    whole cause; none is proven). Tearing the group down here keeps gloo out of that exit. A process that leaves
    while its peer is still inside the last collective aborted the same way once more (a resumed
    2-process training, CI log of stop 44), so a command that ``finished`` meets its peers at a barrier
    first; one that failed or was interrupted leaves at once (its peers may never reach a barrier). The ``wsss``
    program then ends without the interpreter's teardown at all (``wsss.cli._leave_process``)."""
    if not is_distributed():
        return
    # Free what a reference cycle still holds (a model wrapped by DDP, a collective's tensors) while the
    # interpreter is whole, not at its teardown: a suspected cause of the abort above, not a proven one (the
    # same abort was seen once after a single-process SIGTERM run, no gloo). The default hooks
    # hold no cycle (engine.train_loop.weak_method); a hook a user registers with a trainer's method would.
    gc.collect()
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@torch.no_grad()
def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every process) from all processes along dim 0, rank order.

    No gradient flows through (MoCo's ``concat_all_gather``, used by SeCo's queue and prototypes).
    """
    if not is_distributed():
        return t.detach()
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (confusion matrices, loss sums); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out

"""Data parallel training in one job: `torchrun --nproc_per_node N python -m pipeline train ...`.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; `init()` then joins the process group (NCCL on GPUs, gloo on CPU,
so the same code path is tested on a laptop). Every rank trains on its slice of each global batch
(engine.EpochOrder), the model is wrapped in DistributedDataParallel, and only rank 0 writes files.

The contrastive loss must see the *global* batch: with per-rank logits every rank would only contrast its own
B/N clips (the released DataParallel code did exactly that). `gather(x)` concatenates a tensor over ranks
with gradients flowing back to each rank's slice; each rank then computes the loss of the whole batch, and
DDP's gradient averaging turns the N identical losses back into one (see tests/training).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; (context, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(), device
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def current() -> Context:
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each rank -> (N*B, ...) in rank order, differentiable; x itself when not distributed."""
    if not current().enabled:
        return x
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(x.contiguous()), dim=0)


def gather_objects(items: list) -> list:
    """Python objects (e.g. a batch's texts) concatenated over ranks in rank order."""
    if not current().enabled:
        return list(items)
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]


def broadcast(obj):
    """rank 0's object on every rank."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if current().enabled:
        dist.barrier()

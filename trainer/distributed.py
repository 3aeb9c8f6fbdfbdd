"""Multi-process training (torchrun, DistributedDataParallel) with a global-batch loss.

TERAN's loss uses the hardest negative of the whole batch, so every rank scores its own pairs
against every rank's: embeddings are all-gathered (padded to a common length), the local slice
keeps its gradient, and the loss is scaled by the world size so that DDP's gradient averaging
gives exactly the single-process gradient of the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op when alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=chosen)
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def gather_padded(x: Tensor, lengths: Tensor, info: DistInfo) -> tuple[Tensor, Tensor]:
    """All ranks' [B, S, D] sets (padded to the largest S) and lengths; own slice keeps grad."""
    if not info.enabled:
        return x, lengths
    sizes = [torch.zeros(2, dtype=torch.long, device=x.device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([x.shape[0], x.shape[1]], device=x.device))
    batch = max(int(s[0]) for s in sizes)
    width = max(int(s[1]) for s in sizes)
    padded = torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1], 0, batch - x.shape[0]))
    lens = torch.nn.functional.pad(lengths, (0, batch - lengths.shape[0]))
    xs = [torch.empty_like(padded) for _ in range(info.world_size)]
    ls = [torch.empty_like(lens) for _ in range(info.world_size)]
    dist.all_gather(xs, padded.detach().contiguous())
    dist.all_gather(ls, lens.contiguous())
    xs[info.rank] = padded
    out_x = torch.cat([t[: int(s[0])] for t, s in zip(xs, sizes, strict=True)])
    out_l = torch.cat([t[: int(s[0])] for t, s in zip(ls, sizes, strict=True)])
    return out_x, out_l

"""One process or several under ``torchrun``: rank and world from the environment, joining the
process group (gloo on CPU, nccl on GPUs), the collective decisions every rank must take alike,
and the weight-hash test hook. No Qt.

Test hook: ``LGGSEG_DUMP_WEIGHT_HASH=PATH`` makes every rank write the hash of its final weights
to ``PATH.rank<N>`` (tests/test_torchrun.py checks the ranks stayed identical).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .devices import resolve_device


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (``torchrun`` sets ``RANK``)."""
    if "RANK" in os.environ and torch.distributed.is_available():
        return int(os.environ["RANK"]), int(os.environ.get("WORLD_SIZE", 1))
    return 0, 1


def start_processes(device_name: str) -> tuple[int, int, torch.device]:
    """``(rank, world, device)``; joins the process group when several processes run."""
    rank, world = rank_and_world()
    device = resolve_device(device_name, fallback=True)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return rank, world, device


def any_rank(flag: bool, world: int, device) -> bool:
    """True on every rank when ``flag`` is True on any (all ranks then decide alike)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


def shared_clock(elapsed: float, cancelled: bool, world: int, device) -> tuple[float, bool]:
    """The slowest rank's clock and anyone's cancel, so every rank takes the same decisions
    (stop for time, stop when cancelled) and the same learning rate."""
    if world == 1:
        return elapsed, cancelled
    t = torch.tensor([elapsed, 1.0 if cancelled else 0.0], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t[0]), bool(t[1] > 0)


def state_dict_hash(state_dict: dict) -> str:
    """sha256 over a state dict's names and values (memory layout does not matter)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dump_weight_hash(model: nn.Module, best_state: dict, rank: int) -> None:
    """Test hook: with ``LGGSEG_DUMP_WEIGHT_HASH=PATH``, each rank writes ``PATH.rank<N>`` holding
    the hashes of its final and returned weights, so a test can check DDP kept ranks in step."""
    path = os.environ.get("LGGSEG_DUMP_WEIGHT_HASH")
    if path:
        final = state_dict_hash(model.state_dict())
        returned = state_dict_hash(best_state) if best_state is not None else None
        Path(f"{path}.rank{rank}").write_text(json.dumps({"final": final, "returned": returned}))

"""Exact save and resume of a training run: model, optimizer, loop state, best weights and the
random generators' state, as safetensors + JSON (no pickle), written atomically. No Qt.

A resumed run continues where it stopped: same step count, history, optimizer moments and
sampling stream, so it ends where an uninterrupted run would. :func:`check_writable` is called
before training starts, so an unusable path fails at once and not after the first epoch.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import atomic

STALE_AFTER_S = atomic.STALE_AFTER_S


class CheckpointError(ValueError):
    """A checkpoint path that cannot be written, or a file that is not a training checkpoint."""


@dataclass
class TrainState:
    """The loop's bookkeeping; saved in the checkpoint as JSON, so a resumed run continues it."""

    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float | None = None
    best_per: dict = field(default_factory=dict)
    since_best: int = 0
    epochs_done: int = 0
    rng: dict | None = None  # rank 0's numpy generator state, at the last checkpoint

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in d.items() if k in known})
        if "epochs_done" not in d:  # checkpoints of earlier versions
            state.epochs_done = max(0, len(state.history) - 1)
        return state


def random_streams(seed: int, rank: int, resumed: TrainState | None = None, gen_state=None):
    """The sampling (numpy) and augmentation (torch) generators of one rank. A resumed rank 0
    gets its saved states back; other ranks (only rank 0's are saved) a fresh stream per step."""
    rng = np.random.default_rng(seed + 1000 * rank)
    gen = torch.Generator().manual_seed(seed + 1000 * rank)
    if resumed is None:
        return rng, gen
    if rank == 0 and resumed.rng is not None and gen_state is not None:
        rng.bit_generator.state = resumed.rng
        gen.set_state(gen_state)
    else:
        rng = np.random.default_rng([seed, rank, resumed.step])
        gen.manual_seed(seed + 1000 * rank + 7919 * resumed.step)
    return rng, gen


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the half-written files a killed run left beside ``path``: staging files whose
    process is gone or that are older than an hour, and the ``<name>.tmp`` of earlier versions
    (only when older than an hour: a live run may still be writing it)."""
    path = Path(path)
    removed = atomic.clean_stale(path.parent)
    legacy = path.with_name(path.name + ".tmp")
    try:
        if time.time() - legacy.stat().st_mtime > STALE_AFTER_S:
            legacy.unlink()
            removed.append(legacy)
    except OSError:
        pass
    return removed


def check_writable(path: str | os.PathLike) -> Path:
    """Make sure a checkpoint can be written at ``path`` (its folder is created); raises
    :class:`CheckpointError` naming the path otherwise. Cleans stale leftovers beside it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a file name for the checkpoint")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise CheckpointError(f"{path}: cannot write a checkpoint here: {why}{where}") from exc
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    state: dict,
    best_state: dict | None,
    extra: dict | None = None,
) -> None:
    """Model, optimizer, the loop's ``state`` (JSON) and ``extra`` tensors (e.g. a random
    generator's state), atomically: a crash mid-write leaves the previous checkpoint."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    opt_sd = opt.state_dict()
    for pid, st in opt_sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = (
                (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
            )
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt_sd["param_groups"])}
    with atomic.staged_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, opt: torch.optim.Optimizer, extra: dict | None = None
) -> tuple[dict, dict | None]:
    """Restore ``model`` and ``opt`` in place; return (loop state, best weights or None).
    ``extra``, when given, is filled with the checkpoint's extra tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if "state" not in meta or "param_groups" not in meta:
        raise CheckpointError(
            f"{path}: not a training checkpoint (no loop state inside; is it a model's weights?)"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    if extra is not None:
        extra.update({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"]), best

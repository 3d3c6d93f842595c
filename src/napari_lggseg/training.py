"""Train or fine-tune the U-Net: the loop, read top to bottom in :func:`train`. No Qt.

The same code runs on one device or under ``torchrun`` (it sees DistributedDataParallel from the
``RANK`` environment variable; gloo on CPU, nccl on GPUs); only rank 0 reports and writes::

    lggseg train --data DIR ... --name NEW                                    # one device
    torchrun --nproc_per_node=2 -m napari_lggseg.cli train --data DIR ... --name NEW  # DDP, 2 processes
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=8 \\
        -m napari_lggseg.cli train ...                                        # several machines

What it learns from is in :mod:`train_data`, the resumable checkpoint in :mod:`checkpoint`, the
processes in :mod:`distributed`. Progress goes to a callback (one event per step and per epoch);
a cancel flag stops between steps. The best validation weights are kept; a NaN/inf loss or
gradient stops the run with the last good weights.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics, train_data
from .adaptation import average_weights, freeze_batchnorm, l2sp_penalty, site_batchnorm
from .checkpoint import TrainState, check_writable, load_checkpoint, random_streams, save_checkpoint
from .devices import autocast, is_cancelled
from .distributed import any_rank, dump_weight_hash, shared_clock, start_processes
from .preprocess import Recipe, restore
from .train_config import StopReason, TrainConfig, TrainResult
from .train_data import (
    NothingToLearn,
    PreparedVolume,
    SlicePool,
    TrainVolume,
    augment,
    prepare_volumes,
)

# --------------------------------------------------------------------------- the loop's helpers


def seg_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "dice+bce") -> torch.Tensor:
    """Soft Dice over the batch, BCE on logits, or their sum."""
    logits = logits.float()[:, 0]
    total = logits.new_zeros(())
    if "bce" in kind:
        total = total + F.binary_cross_entropy_with_logits(logits, y)
    if "dice" in kind:
        p = torch.sigmoid(logits)
        total = total + 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    if kind not in ("dice", "bce", "dice+bce"):
        raise ValueError(f"unknown loss {kind!r}: dice, bce or dice+bce")
    return total


def learning_rate(cfg: TrainConfig, step: int, fraction: float) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from ``lr`` to 0 over the run
    (``fraction`` of the budget used: steps or minutes, whichever is further along)."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))


def sample_batch(
    data: list[PreparedVolume],
    pool: SlicePool,
    rng: np.random.Generator,
    gen: torch.Generator,
    cfg: TrainConfig,
    recipe: Recipe,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cfg.batch_size`` labelled slices (tumour-weighted), augmented, on ``device``."""
    picks = pool.sample(rng, cfg.batch_size, cfg.tumour_fraction)
    xb = torch.stack([data[i].x[z] for i, z in picks]).float()
    yb = torch.stack([data[i].y[z] for i, z in picks]).float()
    if cfg.augment:
        xb, yb = augment(xb, yb, gen, recipe.channels, cfg.substitute)
    xb, yb = xb.to(device), yb.to(device)
    if device.type == "cpu":
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb, yb


def non_finite(value: torch.Tensor, world: int, device) -> bool:
    """The non-finite guard: True when ``value`` is NaN or inf on any rank (all stop together)."""
    return any_rank(not bool(torch.isfinite(value)), world, device)


def backward_and_step(
    model: nn.Module, opt, scaler, loss: torch.Tensor, world: int, device
) -> bool:
    """One optimizer step; False (and no step) when the gradients are not finite."""
    opt.zero_grad(set_to_none=True)
    if scaler:  # fp16: the scaler skips steps with inf gradients and lowers its scale
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return True
    loss.backward()
    gnorm = torch.nn.utils.get_total_norm(
        [q.grad for q in model.parameters() if q.grad is not None]
    )
    if non_finite(gnorm, world, device):
        return False
    opt.step()
    return True


@torch.inference_mode()
def validation_dice(
    model: nn.Module,
    data: list[PreparedVolume],
    device,
    threshold=0.5,
    postprocess="min-size",
    batch_size: int = 32,
) -> dict[str, float]:
    """Per-volume Dice on the original slices (our protocol), labelled slices only."""
    was_training = model.training
    model.eval()
    out = {}
    for d in data:
        probs = []
        for i in range(0, d.x.shape[0], batch_size):
            xb = d.x[i : i + batch_size].float().to(device)
            if device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                probs.append(torch.sigmoid(model(xb).float())[:, 0].cpu().numpy())
        prob = restore(np.concatenate(probs), d.geom)
        pred = metrics.postprocess((prob >= threshold).astype(np.uint8), postprocess, prob=prob)
        out[d.patient_id] = metrics.dice(pred[d.labelled], d.mask[d.labelled])
    model.train(was_training)  # note: this puts every BatchNorm back in training mode
    return out


def new_model(recipe: Recipe, width: int, seed: int) -> nn.Module:
    """A fresh U-Net for ``recipe``, initialised from ``seed`` (same seed, same weights)."""
    from .unet import UNet

    torch.manual_seed(seed)
    return UNet(recipe.in_channels, 1, width)


def _snapshot(model: nn.Module, device: torch.device | None = None) -> dict:
    return {
        k: t.detach().to(device, copy=True) if device else t.detach().clone()
        for k, t in model.state_dict().items()
    }


@dataclass
class _Run:
    """What stays fixed during a run: processes, data, budget, network and optimizer."""

    cfg: TrainConfig
    recipe: Recipe
    rank: int
    world: int
    device: torch.device
    data: list[PreparedVolume]
    val_data: list[PreparedVolume]
    pool: SlicePool
    steps_per_epoch: int
    total_steps: int | None
    budget_s: float | None
    freeze_bn: bool
    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    anchor: dict[str, torch.Tensor] | None = None  # the parent's weights, for L2-SP
    parent: dict[str, torch.Tensor] | None = None  # the parent's state on the CPU, to average

    def validate(self) -> tuple[float | None, dict]:
        """Mean and per-patient validation Dice (None without validation patients)."""
        if not self.val_data:
            return None, {}
        cfg = self.cfg
        per = validation_dice(
            self.model, self.val_data, self.device, cfg.threshold, cfg.postprocess
        )
        return float(np.mean(list(per.values()))), per


def _setup(model, recipe, volumes, val_volumes, cfg: TrainConfig, fine_tune: bool) -> _Run:
    """Start the processes, seed, prepare the data, place the model, make the optimizer."""
    if cfg.epochs is None and cfg.minutes is None:
        raise ValueError("a training budget needs epochs or minutes")
    rank, world, device = start_processes(cfg.device)
    torch.manual_seed(cfg.seed)
    data = prepare_volumes(volumes, recipe)
    val_data = prepare_volumes(val_volumes, recipe) if val_volumes else []
    pool = SlicePool.of(data)
    if not pool.slices:
        raise NothingToLearn(
            f"{', '.join(v.patient_id for v in volumes) or 'no volumes'}: no labelled slices "
            "to train on (mark slices as reviewed, or give expert masks)"
        )
    spe = cfg.steps_per_epoch or int(
        min(200, max(10, math.ceil(len(pool.slices) / cfg.batch_size)))
    )
    freeze_bn = cfg.freeze_bn if cfg.freeze_bn is not None else fine_tune and len(volumes) <= 8
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    anchor = parent = None  # taken before a resume loads later weights: the parent's
    if fine_tune and cfg.l2sp > 0:
        anchor = {k: p.detach().float().clone() for k, p in model.named_parameters()}
    if fine_tune and cfg.parent_share > 0:
        parent = _snapshot(model, torch.device("cpu"))
    return _Run(
        cfg, recipe, rank, world, device, data, val_data, pool, spe,
        cfg.epochs * spe if cfg.epochs else None, cfg.minutes * 60 if cfg.minutes else None,
        freeze_bn, model, net, opt, torch.amp.GradScaler("cuda") if fp16 else None, anchor,
        parent,
    )  # fmt: skip


def train_step(run: _Run, step: int, fraction: float, rng, gen) -> tuple[float, str | None]:
    """Learning rate, a batch, forward, loss, backward, optimizer step. Returns the loss and,
    when the loss or the gradients were not finite, what went wrong (the weights of the last
    good step are then back in place)."""
    for g in run.opt.param_groups:
        g["lr"] = learning_rate(run.cfg, step, fraction)
    xb, yb = sample_batch(run.data, run.pool, rng, gen, run.cfg, run.recipe, run.device)
    last_good = _snapshot(run.model)  # the forward pass moves BatchNorm statistics
    with autocast(run.device):
        logits = run.net(xb)
    loss = seg_loss(logits, yb, run.cfg.loss)
    if run.anchor is not None:
        loss = loss + l2sp_penalty(run.model, run.anchor, run.cfg.l2sp)
    problem = f"loss ({loss.item()})" if non_finite(loss, run.world, run.device) else None
    if problem is None and not backward_and_step(
        run.model, run.opt, run.scaler, loss, run.world, run.device
    ):
        problem = "gradients"
    if problem is None:
        return float(loss.item()), None
    run.model.load_state_dict(last_good)
    return float(loss.item()), f"non-finite {problem} at step {step + 1}"


def _budget(run: _Run, step: int, elapsed: float, cancelled: bool):
    """``(reason to stop before the next step or None, its message, fraction of the budget
    used)``; the fraction follows steps or minutes, whichever is further along."""
    if cancelled:
        return StopReason.CANCELLED, f"cancelled after step {step}", 1.0
    if run.budget_s and elapsed >= run.budget_s:
        minutes = f"{run.cfg.minutes:g}-minute"
        return StopReason.TIME_BUDGET, f"the {minutes} budget ran out after step {step}", 1.0
    if run.total_steps and step >= run.total_steps:
        return StopReason.FINISHED, "", 1.0
    by_steps = step / run.total_steps if run.total_steps else 0.0
    return None, "", max(by_steps, elapsed / run.budget_s if run.budget_s else 0.0)


def _start_or_resume(run: _Run, resume):
    """``(state, best weights, sampling rng, augmentation generator)``: fresh, or continued
    from the checkpoint file ``resume`` (which also restores the model and optimizer)."""
    st, best_state, extra = TrainState(), None, {}
    if resume:
        raw, best_state = load_checkpoint(Path(resume), run.model, run.opt, extra)
        st = TrainState.from_dict(raw)
    rng, gen = random_streams(run.cfg.seed, run.rank, st if resume else None, extra.get("gen"))
    return st, best_state, rng, gen


def _record_before_training(run: _Run, st: TrainState) -> dict:
    """History row 0 (validation Dice "before"); returns the starting weights as the best."""
    st.best_val, st.best_per = run.validate()
    st.history.append(
        {"epoch": 0, "step": 0, "loss": None, "val_dice": st.best_val, "seconds": 0.0}
    )
    return _snapshot(run.model, torch.device("cpu"))


def _record_epoch(run: _Run, st: TrainState, losses, val_dice, per) -> tuple[dict, bool]:
    """Append the epoch's history row; True when its weights are the best so far (always,
    without validation patients: then the last weights are kept)."""
    row = {"epoch": st.epoch, "step": st.step, "loss": float(np.mean(losses)),
           "val_dice": val_dice, "seconds": round(st.elapsed, 1)}  # fmt: skip
    st.history.append(row)
    if (
        val_dice is not None and (st.best_val is None or val_dice > st.best_val)
    ) or not run.val_data:
        st.best_val, st.best_epoch, st.best_per, st.since_best = val_dice, st.epoch, per, 0
        return row, True
    if val_dice is not None:
        st.since_best += 1
    return row, False


def _run_epoch(run: _Run, st: TrainState, epoch: int, t_start: float, cancel, rng, gen, emit):
    """The steps of one epoch: ``(losses, stop reason, its message)``; the reason stays
    FINISHED unless the budget ran out, the run was cancelled or a step was not finite."""
    losses: list[float] = []
    for _ in range(run.steps_per_epoch):
        elapsed, cancelled = shared_clock(
            time.perf_counter() - t_start, is_cancelled(cancel), run.world, run.device
        )
        reason, why, fraction = _budget(run, st.step, elapsed, cancelled)
        if reason is not None:
            return losses, reason, why
        loss, problem = train_step(run, st.step, fraction, rng, gen)
        if problem is not None:
            message = f"{problem}: stopped, kept the weights of step {st.step}"
            return losses, StopReason.NON_FINITE, message
        st.step += 1
        losses.append(loss)
        emit({"kind": "step", "epoch": epoch, "step": st.step, "loss": loss,
              "steps_per_epoch": run.steps_per_epoch, "total_steps": run.total_steps,
              "fraction": fraction})  # fmt: skip
    return losses, StopReason.FINISHED, ""


# --------------------------------------------------------------------------- the loop


def train(
    model: nn.Module,
    recipe: Recipe,
    train_volumes: list[TrainVolume],
    val_volumes: list[TrainVolume] | None = None,
    config: TrainConfig | None = None,
    progress: Callable[[dict], None] | None = None,
    cancel=None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    fine_tune: bool = False,
) -> TrainResult:
    """Train ``model`` in place; return the best weights and the history. Writes no model: the
    caller saves ``result.state_dict`` (so a cancelled or failed run leaves the store untouched).

    History row 0 is the model before training. ``cancel`` (an Event or a callable) is checked
    before every step; a cancelled run skips the final validation. ``resume`` continues a run
    from its ``checkpoint`` file (same steps, history, optimizer and sampling: with the same
    ``config`` it ends where an uninterrupted run would; ``epochs`` is the whole run's budget).
    """
    cfg = copy.deepcopy(config) if config is not None else TrainConfig()
    if checkpoint:
        check_writable(checkpoint)  # now, not after the first epoch
    run = _setup(model, recipe, train_volumes, val_volumes, cfg, fine_tune)
    st, best_state, rng, gen = _start_or_resume(run, resume)

    def emit(ev: dict) -> None:
        if progress and run.rank == 0:
            progress({**ev, "total_epochs": cfg.epochs} if ev["kind"] == "epoch" else ev)

    if not st.history:  # epoch 0: the model before training
        best_state = _record_before_training(run, st)
        emit({"kind": "epoch", **st.history[-1]})
        if fine_tune and cfg.site_bn > 0:  # a resumed run has them in its weights already
            site_batchnorm(model, run.data, run.device, cfg.site_bn, cfg.seed)

    t_start = time.perf_counter() - st.elapsed
    stopped, message = StopReason.FINISHED, ""
    while True:
        epoch = st.epoch + 1
        run.net.train()
        if run.freeze_bn:  # again every epoch: validation puts BatchNorm back in training mode
            freeze_batchnorm(model)
        losses, stopped, message = _run_epoch(run, st, epoch, t_start, cancel, rng, gen, emit)
        if run.world > 1:  # each rank's forward moved its own BatchNorm statistics: take rank 0's
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)
        if not losses:
            break
        st.epoch, st.elapsed = epoch, time.perf_counter() - t_start
        if stopped not in (StopReason.CANCELLED, StopReason.NON_FINITE):
            st.epochs_done += 1
        at_end = run.total_steps is not None and st.step >= run.total_steps
        do_val = stopped is not StopReason.CANCELLED and (
            epoch % cfg.val_every == 0 or stopped is not StopReason.FINISHED or at_end
        )
        row, improved = _record_epoch(run, st, losses, *(run.validate() if do_val else (None, {})))
        if improved:
            best_state = _snapshot(model, torch.device("cpu"))
        emit({"kind": "epoch", **row, "best_val_dice": st.best_val})
        if checkpoint and run.rank == 0:
            st.rng = rng.bit_generator.state
            save_checkpoint(
                checkpoint, model, run.opt, asdict(st), best_state, {"gen": gen.get_state()}
            )
        if stopped is not StopReason.FINISHED:
            break
        if cfg.patience and st.since_best >= cfg.patience:
            stopped = StopReason.EARLY_STOP
            message = (
                f"no better validation Dice for {cfg.patience} epochs (best: epoch {st.best_epoch})"
            )
            break
        if at_end:
            break
    if run.parent is not None:  # the result: averaged with the parent, validated as averaged
        best_state = average_weights(run.parent, best_state, cfg.parent_share)
        if run.val_data and stopped is not StopReason.CANCELLED:
            model.load_state_dict(best_state)
            st.best_val, st.best_per = run.validate()
    dump_weight_hash(model, best_state, run.rank)
    summary = train_data.summary(train_volumes, val_volumes, run.data, run.pool)
    return TrainResult(
        best_state, st.history, st.best_epoch, st.best_val, st.best_per, st.step,
        time.perf_counter() - t_start, stopped, message or f"finished: {st.step} steps",
        st.epochs_done, summary,
    )  # fmt: skip


if __name__ == "__main__":
    import sys

    print(
        "napari_lggseg.training is a library; train through the command line:\n"
        "    lggseg train --data DIR ... --name NEW\n"
        "    torchrun --nproc_per_node=N -m napari_lggseg.cli train --data DIR ... --name NEW",
        file=sys.stderr,
    )
    raise SystemExit(0 if sys.argv[1:] in ([], ["--help"], ["-h"]) else 2)

"""Train or fine-tune the U-Net on expert masks and people's corrections. No Qt.

One loop, read top to bottom: :func:`train`. The same code runs on one device or under
``torchrun`` (it sees DistributedDataParallel from the ``RANK`` environment variable; gloo on
CPU, nccl on GPUs); only rank 0 writes files. Launch::

    lggseg train --data DIR ... --name NEW                         # one device
    torchrun --nproc_per_node=2 -m napari_lggseg.training --data DIR ... --name NEW   # DDP

Progress goes to a callback (one event per step and per epoch); a cancel flag stops between
steps. The best validation checkpoint is kept; a NaN/inf loss stops the run and keeps the last
good model.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import lgg_io, metrics
from .devices import autocast, resolve_device
from .preprocess import Geometry, Recipe, prepare, prepare_mask, restore


# --------------------------------------------------------------------------- data


@dataclass
class TrainVolume:
    """One volume to learn from; ``labelled`` marks slices whose mask is trusted (None = all)."""

    patient_id: str
    image: np.ndarray  # (Z, H, W, 3) in LGG channel order
    mask: np.ndarray  # (Z, H, W), >0 tumour
    labelled: np.ndarray | None = None
    source: str = "expert"  # "expert" | "corrections" | "memory"

    @property
    def labelled_slices(self) -> np.ndarray:
        z = self.mask.shape[0]
        return np.arange(z) if self.labelled is None else np.flatnonzero(self.labelled)


def volumes_from_path(path: str | os.PathLike) -> list[TrainVolume]:
    """A patient folder with masks, a corrections folder, or a root of patient folders."""
    path = Path(path)
    if lgg_io.is_corrections_folder(path):
        c = lgg_io.read_corrections(path)
        p = lgg_io.read_patient(c.source_folder, masks=False)
        if p.image.shape[:3] != c.mask.shape:
            raise lgg_io.LGGFormatError(f"{path}: corrected mask {c.mask.shape} does not match "
                                        f"its images {p.image.shape[:3]} in {c.source_folder}")
        labelled = None
        if not c.whole_volume_reviewed:
            labelled = np.zeros(c.mask.shape[0], bool)
            labelled[c.reviewed_slices] = True
        return [TrainVolume(c.patient_id, p.image, c.mask, labelled, "corrections")]
    if lgg_io.is_patient_folder(path):
        p = lgg_io.read_patient(path)
        if p.mask is None:
            raise lgg_io.LGGFormatError(f"{path}: no masks to learn from (no {p.patient_id}_<n>_mask.tif)")
        return [TrainVolume(p.patient_id, p.image, p.mask)]
    if lgg_io.is_patient_root(path):
        return [v for f in lgg_io.list_patients(path) for v in volumes_from_path(f)]
    raise lgg_io.LGGFormatError(f"{path}: not a patient folder, corrections folder or folder of patients")


def load_volumes(paths, patients: set[str] | None = None) -> list[TrainVolume]:
    """All training volumes under ``paths``; with ``patients``, only those ids."""
    out = [v for p in paths for v in volumes_from_path(p)]
    if patients is not None:
        out = [v for v in out if v.patient_id in patients]
    return out


def split_patients(ids, val_fraction: float = 0.15, seed: int = 0) -> tuple[list[str], list[str]]:
    """Patient-level split, seeded; stratified by institution when every group can spare one."""
    ids = sorted(set(ids))
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction <= 0 or len(ids) < 2 or n_val == 0:
        return ids, []
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for pid in ids:
        groups.setdefault(lgg_io.institution_of(pid), []).append(pid)
    val: list[str] = []
    if len(ids) >= 10 and len(groups) > 1:
        # largest remainder allocation per institution
        quotas = {g: len(m) * val_fraction for g, m in groups.items()}
        alloc = {g: int(q) for g, q in quotas.items()}
        for g in sorted(quotas, key=lambda g: quotas[g] - alloc[g], reverse=True)[: n_val - sum(alloc.values())]:
            alloc[g] += 1
        for g, members in sorted(groups.items()):
            val += list(rng.permutation(members)[: min(alloc[g], len(members) - 1 if len(members) > 1 else 0)])
    else:
        val = list(rng.permutation(ids)[:n_val])
    val = sorted(val)
    return [i for i in ids if i not in val], val


@dataclass
class _Prepared:
    patient_id: str
    x: torch.Tensor  # (Z, C, S, S) float16
    y: torch.Tensor  # (Z, S, S) float16 soft targets
    labelled: np.ndarray  # slice indices
    geom: Geometry
    mask: np.ndarray  # original-resolution mask, for validation


def _prepare_all(volumes: list[TrainVolume], recipe: Recipe) -> list[_Prepared]:
    out = []
    for v in volumes:
        x, geom = prepare(v.image, recipe)
        y = prepare_mask(v.mask, geom)
        out.append(_Prepared(v.patient_id, torch.from_numpy(x).half(), torch.from_numpy(y).half(),
                             v.labelled_slices, geom, (np.asarray(v.mask) > 0)))
    return out


# --------------------------------------------------------------------------- augmentation and loss


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, n_seq: int, substitute: float = 0.4,
            rotate_deg: float = 10.0, scale: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip left-right, small rotation/scale/shift, intensity jitter, and replace pre- and/or
    post-contrast by FLAIR (the LGG dataset's convention for a missing scan) for a fraction
    ``substitute`` of the batch, so models keep working when sequences are missing."""
    b = x.shape[0]
    x, y = x.clone(), y.clone()
    if n_seq == 3 and substitute > 0:
        r = torch.rand(b, generator=gen)
        both = r < substitute / 2
        pre = both | ((r >= substitute / 2) & (r < 3 * substitute / 4))
        post = both | ((r >= 3 * substitute / 4) & (r < substitute))
        x[pre, 0] = x[pre, 1]
        x[post, 2] = x[post, 1]
    flip = torch.rand(b, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    y[flip] = y[flip].flip(-1)
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate_deg)
    s = 1 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.05
    theta = torch.stack([
        torch.stack([torch.cos(ang) / s, -torch.sin(ang) / s, t[:, 0]], 1),
        torch.stack([torch.sin(ang) / s, torch.cos(ang) / s, t[:, 1]], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    gain = 1 + (torch.rand(b, x.shape[1], 1, 1, generator=gen) * 2 - 1) * 0.1
    shift = (torch.rand(b, x.shape[1], 1, 1, generator=gen) * 2 - 1) * 0.1
    return x * gain + shift, y.clamp_(0, 1)


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


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainConfig:
    epochs: int | None = None
    minutes: float | None = None
    steps_per_epoch: int | None = None  # default: one pass over the labelled slices, 10..200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    loss: str = "dice+bce"
    tumour_fraction: float = 0.5
    augment: bool = True
    substitute: float = 0.4
    freeze_bn: bool | None = None  # None: freeze when fine-tuning on <= 8 volumes
    patience: int | None = None  # epochs without a better validation Dice before stopping
    seed: int = 0
    device: str = "auto"
    threshold: float = 0.5
    postprocess: str = "min-size"
    val_every: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    state_dict: dict  # the best (or last, without validation) weights, on the CPU
    history: list[dict] = field(default_factory=list)  # one row per epoch (epoch 0: before training)
    best_epoch: int = 0
    best_val_dice: float | None = None
    val_per_patient: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    stopped: str = "finished"  # finished | early-stopping | time | cancelled | non-finite loss ...
    data_summary: dict = field(default_factory=dict)


def _bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _dist_info() -> tuple[int, int]:
    if "RANK" in os.environ and torch.distributed.is_available():
        return int(os.environ["RANK"]), int(os.environ.get("WORLD_SIZE", 1))
    return 0, 1


def _any_rank(flag: bool, world: int, device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


@torch.inference_mode()
def evaluate_prepared(model: nn.Module, data: list[_Prepared], device, threshold=0.5, postprocess="min-size",
                      batch_size: int = 32) -> dict[str, float]:
    """Per-volume Dice on the original slices (our protocol), labelled slices only."""
    was_training = model.training
    model.eval()
    out = {}
    for d in data:
        probs = []
        for i in range(0, d.x.shape[0], batch_size):
            xb = d.x[i:i + batch_size].float().to(device)
            if device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                probs.append(torch.sigmoid(model(xb).float())[:, 0].cpu().numpy())
        prob = restore(np.concatenate(probs), d.geom)
        pred = metrics.postprocess((prob >= threshold).astype(np.uint8), postprocess, prob=prob)
        out[d.patient_id] = metrics.dice(pred[d.labelled], d.mask[d.labelled])
    model.train(was_training)
    return out


def save_checkpoint(path: Path, model: nn.Module, opt, state: dict, best_state: dict | None) -> None:
    """Model, optimizer and loop state as safetensors + JSON (no pickle), written atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in best_state.items()})
    opt_sd = opt.state_dict()
    for pid, st in opt_sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state),
                                           "param_groups": json.dumps(opt_sd["param_groups"])})
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, opt) -> tuple[dict, dict | None]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"]), best


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
    """Train ``model`` in place; return the best weights and the history.

    Epoch 0 of the history is the model before training (validation Dice "before").
    """
    cfg = config or TrainConfig()
    if cfg.epochs is None and cfg.minutes is None:
        cfg.epochs = 10
    rank, world = _dist_info()
    device = resolve_device(cfg.device, fallback=True)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1000 * rank)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)

    train_data = _prepare_all(train_volumes, recipe)
    val_data = _prepare_all(val_volumes, recipe) if val_volumes else []
    pool = [(i, int(z)) for i, d in enumerate(train_data) for z in d.labelled]
    if not pool:
        raise ValueError("no labelled slices to train on (mark slices as reviewed, or give expert masks)")
    tumour_pool = [(i, z) for i, z in pool if float(train_data[i].y[z].sum()) > 0]
    spe = cfg.steps_per_epoch or int(min(200, max(10, math.ceil(len(pool) / cfg.batch_size))))
    total_steps = cfg.epochs * spe if cfg.epochs else None
    freeze_bn = cfg.freeze_bn if cfg.freeze_bn is not None else (fine_tune and len(train_volumes) <= 8)

    model.to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and not torch.cuda.is_bf16_supported() else None

    n_hand = sum(len(d.labelled) for d, v in zip(train_data, train_volumes) if v.source != "expert")
    summary = {"patients": sorted({v.patient_id for v in train_volumes}),
               "val_patients": sorted({v.patient_id for v in (val_volumes or [])}),
               "slices": len(pool), "tumour_slices": len(tumour_pool), "slices_corrected_by_hand": n_hand,
               "volumes": len(train_volumes)}
    state = {"step": 0, "epoch": 0, "elapsed": 0.0, "history": [], "best_epoch": 0, "best_val": None,
             "since_best": 0}
    best_state = None
    if resume:
        state, best_state = load_checkpoint(Path(resume), model, opt)

    def emit(ev: dict) -> None:
        if progress and rank == 0:
            progress(ev)

    def validate() -> tuple[float | None, dict]:
        if not val_data:
            return None, {}
        per = evaluate_prepared(model, val_data, device, cfg.threshold, cfg.postprocess)
        return float(np.mean(list(per.values()))), per

    if not state["history"]:
        v, per = validate()
        state["history"].append({"epoch": 0, "step": 0, "loss": None, "val_dice": v, "seconds": 0.0})
        state["best_val"] = v
        state["best_per"] = per
        best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        emit({"kind": "epoch", **state["history"][-1], "total_epochs": cfg.epochs})

    t_start = time.perf_counter() - state["elapsed"]
    budget_s = cfg.minutes * 60 if cfg.minutes else None
    stopped = "finished"
    last_good = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
    net.train()
    if freeze_bn:
        _bn_eval(model)
    n_seq = len(recipe.channels)
    while True:
        epoch = state["epoch"] + 1
        losses = []
        for _ in range(spe):
            elapsed = time.perf_counter() - t_start
            frac = max(state["step"] / total_steps if total_steps else 0.0,
                       elapsed / budget_s if budget_s else 0.0)
            if _any_rank(_cancelled(cancel), world, device):
                stopped = "cancelled"
                break
            if budget_s and elapsed >= budget_s:
                stopped = "time"
                break
            if total_steps and state["step"] >= total_steps:
                break
            warm = min(1.0, (state["step"] + 1) / max(1, cfg.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
            picks = [tumour_pool[rng.integers(len(tumour_pool))] if tumour_pool and rng.random() < cfg.tumour_fraction
                     else pool[rng.integers(len(pool))] for _ in range(cfg.batch_size)]
            xb = torch.stack([train_data[i].x[z] for i, z in picks]).float()
            yb = torch.stack([train_data[i].y[z] for i, z in picks]).float()
            if cfg.augment:
                xb, yb = augment(xb, yb, gen, n_seq, cfg.substitute)
            xb, yb = xb.to(device), yb.to(device)
            if device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                logits = net(xb)
            loss = seg_loss(logits, yb, cfg.loss)
            bad = _any_rank(not bool(torch.isfinite(loss)), world, device)
            if bad:
                stopped = f"non-finite loss ({loss.item()}) at step {state['step'] + 1}: stopped, kept the last good model"
                model.load_state_dict(last_good)
                break
            opt.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            state["step"] += 1
            losses.append(float(loss.item()))
            emit({"kind": "step", "epoch": epoch, "step": state["step"], "loss": losses[-1],
                  "steps_per_epoch": spe, "total_steps": total_steps, "fraction": frac})
        if not losses:
            break
        last_good = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        state["epoch"] = epoch
        state["elapsed"] = time.perf_counter() - t_start
        v, per = validate() if epoch % cfg.val_every == 0 or stopped != "finished" else (None, {})
        row = {"epoch": epoch, "step": state["step"], "loss": float(np.mean(losses)), "val_dice": v,
               "seconds": round(state["elapsed"], 1)}
        state["history"].append(row)
        improved = v is not None and (state["best_val"] is None or v > state["best_val"])
        if improved or not val_data:
            state["best_val"], state["best_epoch"], state["since_best"] = v, epoch, 0
            state["best_per"] = per
            best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        elif v is not None:
            state["since_best"] += 1
        emit({"kind": "epoch", **row, "best_val_dice": state["best_val"], "total_epochs": cfg.epochs})
        if checkpoint and rank == 0:
            save_checkpoint(Path(checkpoint), model, opt, state, best_state)
        if stopped != "finished":
            break
        if cfg.patience and state["since_best"] >= cfg.patience:
            stopped = "early-stopping"
            break
        if total_steps and state["step"] >= total_steps:
            break
    return TrainResult(
        state_dict=best_state, history=state["history"], best_epoch=state["best_epoch"],
        best_val_dice=state["best_val"], val_per_patient=state.get("best_per", {}), steps=state["step"],
        seconds=time.perf_counter() - t_start, stopped=stopped, data_summary=summary,
    )


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if hasattr(cancel, "is_set") else bool(cancel())


def model_card(recipe: Recipe, width: int, result: TrainResult, cfg: TrainConfig, parent: str | None,
               intended_use: str = "research segmentation of LGG FLAIR abnormality; not for diagnosis",
               **extra) -> dict:
    """The card saved beside trained weights."""
    return {
        "architecture": {"name": "unet-buda2019", "width": width, "in_channels": recipe.in_channels,
                         "out_channels": 1},
        "inputs": {"sequences": list(recipe.channels), "context_slices": recipe.context,
                   "missing_sequences": "trained with pre/post-contrast replaced by FLAIR for "
                                        f"{cfg.substitute:.0%} of samples" if cfg.substitute and len(recipe.channels) == 3 else ""},
        "preprocessing": recipe.to_dict(),
        "postprocessing": {"threshold": cfg.threshold, "method": cfg.postprocess},
        "parent": parent,
        "training_data": result.data_summary,
        "metrics": {"val_mean_dice": result.best_val_dice,
                    "val_median_dice": float(np.median(list(result.val_per_patient.values())))
                    if result.val_per_patient else None,
                    "val_per_patient": result.val_per_patient, "best_epoch": result.best_epoch,
                    "protocol": "per-volume Dice, threshold 0.5, post-processing as above, every "
                                "original slice at original resolution"},
        "history": result.history,
        "hyperparameters": cfg.to_dict(),
        "training": {"steps": result.steps, "seconds": round(result.seconds, 1), "stopped": result.stopped,
                     "torch": torch.__version__},
        "intended_use": intended_use,
        "data_licence": "trained on the LGG Segmentation Dataset (TCGA-LGG, Buda et al. 2019), "
                        "CC BY-NC-SA 4.0: non-commercial research use",
        **extra,
    }


def main(argv=None) -> int:
    """``python -m napari_lggseg.training`` (e.g. under torchrun) = ``lggseg train``."""
    from .cli import main as cli_main

    import sys

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

"""Train or fine-tune the U-Net on expert masks and people's corrections. No Qt.

One loop, read top to bottom: :func:`train`. The same code runs on one device or under
``torchrun`` (it sees DistributedDataParallel from the ``RANK`` environment variable; gloo on
CPU, nccl on GPUs); only rank 0 writes files. Launch::

    lggseg train --data DIR ... --name NEW                         # one device
    torchrun --nproc_per_node=2 -m napari_lggseg.training --data DIR ... --name NEW   # DDP

Progress goes to a callback (one event per step and per epoch); a cancel flag stops between
steps. The best validation checkpoint is kept; a NaN/inf loss stops the run and keeps the last
good model. :func:`fine_tune_config` is the default fine-tuning round of the widget.

Test hook: ``LGGSEG_DUMP_WEIGHT_HASH=PATH`` makes every rank write the hash of its final weights
to ``PATH.rank<N>`` (tests/test_torchrun.py checks the ranks stayed identical).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import lgg_io, metrics
from .devices import autocast, is_cancelled, resolve_device
from .lgg_io import SEQUENCES
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
            raise lgg_io.LGGFormatError(
                f"{path}: corrected mask {c.mask.shape} does not match "
                f"its images {p.image.shape[:3]} in {c.source_folder}"
            )
        labelled = None
        if not c.whole_volume_reviewed:
            labelled = np.zeros(c.mask.shape[0], bool)
            labelled[c.reviewed_slices] = True
        return [TrainVolume(c.patient_id, p.image, c.mask, labelled, "corrections")]
    if lgg_io.is_patient_folder(path):
        p = lgg_io.read_patient(path)
        if p.mask is None:
            raise lgg_io.LGGFormatError(
                f"{path}: no masks to learn from (no {p.patient_id}_<n>_mask.tif)"
            )
        return [TrainVolume(p.patient_id, p.image, p.mask)]
    if lgg_io.is_patient_root(path):
        return [v for f in lgg_io.list_patients(path) for v in volumes_from_path(f)]
    raise lgg_io.LGGFormatError(
        f"{path}: not a patient folder, corrections folder or folder of patients"
    )


def load_volumes(paths, patients: set[str] | None = None) -> list[TrainVolume]:
    """All training volumes under ``paths`` (one path or several); with ``patients``, only those ids."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = [v for p in paths for v in volumes_from_path(p)]
    if patients is not None:
        out = [v for v in out if v.patient_id in patients]
    return out


def split_patients(ids, val_fraction: float = 0.15, seed: int = 0) -> tuple[list[str], list[str]]:
    """Patient-level split ``(train, validation)``, the same for the same seed.

    Stratified by institution (the ``CS`` in ``TCGA_CS_4941_19960909``): when the validation
    share has room for it, every institution with two or more patients gives at least one, and
    the rest go by largest remainder; an institution keeps at least one patient in training
    whenever it can. Scanners and protocols differ by institution, so this keeps validation
    representative of training.
    """
    ids = sorted({str(i) for i in ids})
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction <= 0 or len(ids) < 2 or n_val == 0:
        return ids, []
    n_val = min(n_val, len(ids) - 1)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for pid in ids:
        groups.setdefault(lgg_io.institution_of(pid), []).append(pid)
    shuffled = {g: [str(p) for p in rng.permutation(m)] for g, m in sorted(groups.items())}
    several = [g for g in sorted(groups) if len(groups[g]) >= 2]
    if len(groups) > 1 and len(several) <= n_val:
        alloc = {g: (1 if g in several else 0) for g in groups}
        for _ in range(n_val - sum(alloc.values())):
            # the group furthest below its share that can still spare a patient for validation
            spare = [g for g in groups if alloc[g] < len(groups[g]) - 1] or [
                g for g in groups if alloc[g] < len(groups[g])
            ]
            g = max(sorted(spare), key=lambda g: len(groups[g]) * val_fraction - alloc[g])
            alloc[g] += 1
        val = [p for g in sorted(groups) for p in shuffled[g][: alloc[g]]]
    else:
        val = [str(p) for p in rng.permutation(ids)[:n_val]]
    val_set = set(val)
    return [i for i in ids if i not in val_set], sorted(val_set)


@dataclass
class _Prepared:
    patient_id: str
    x: torch.Tensor  # (Z, C, S, S) float16
    y: torch.Tensor  # (Z', S, S) float16 soft targets
    labelled: np.ndarray  # trusted slices, indices into the original volume (validation)
    grid: np.ndarray  # the same slices as indices into x/y (the reference recipe crops z)
    geom: Geometry
    mask: np.ndarray  # original-resolution mask, for validation


def _prepare_all(volumes: list[TrainVolume], recipe: Recipe) -> list[_Prepared]:
    out = []
    for v in volumes:
        x, geom = prepare(v.image, recipe)
        y = prepare_mask(v.mask, geom)
        labelled = v.labelled_slices
        grid = labelled[(labelled >= geom.z0) & (labelled < geom.z1)] - geom.z0
        out.append(
            _Prepared(
                v.patient_id,
                torch.from_numpy(x).half(),
                torch.from_numpy(y).half(),
                labelled,
                grid,
                geom,
                (np.asarray(v.mask) > 0),
            )
        )
    return out


# --------------------------------------------------------------------------- augmentation and loss


def augment(
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    channels=SEQUENCES,
    substitute: float = 0.4,
    rotate_deg: float = 10.0,
    scale: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip left-right, small rotation/scale/shift, intensity jitter, and replace pre- and/or
    post-contrast by FLAIR (the LGG dataset's convention for a missing scan) for a fraction
    ``substitute`` of the batch, so models keep working when sequences are missing.

    ``x`` is (B, C, S, S) whose first channels are the recipe's ``channels`` (context slices
    follow), ``y`` (B, S, S) in [0, 1]; shapes are kept and ``y`` stays in [0, 1].
    """
    b = x.shape[0]
    x, y = x.clone(), y.clone()
    channels = list(channels)
    if "FLAIR" in channels and substitute > 0:
        f = channels.index("FLAIR")
        r = torch.rand(b, generator=gen)
        both = r < substitute / 2
        masks = {
            "pre-contrast": both | ((r >= substitute / 2) & (r < 3 * substitute / 4)),
            "post-contrast": both | ((r >= 3 * substitute / 4) & (r < substitute)),
        }
        for name, rows in masks.items():
            if name in channels:
                c = channels.index(name)
                x[rows, c] = x[rows, f]
    flip = torch.rand(b, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    y[flip] = y[flip].flip(-1)
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate_deg)
    s = 1 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.05
    theta = torch.stack(
        [
            torch.stack([torch.cos(ang) / s, -torch.sin(ang) / s, t[:, 0]], 1),
            torch.stack([torch.sin(ang) / s, torch.cos(ang) / s, t[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[
        :, 0
    ]
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
    """Budget and hyper-parameters of one run; recorded in the model card.

    With both ``epochs`` and ``minutes``, the run stops at whichever comes first; the cosine
    learning-rate schedule follows whichever is further along.
    """

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


def fine_tune_config(n_volumes: int = 1, device: str = "auto", seed: int = 0) -> TrainConfig:
    """The default fine-tuning round (the widget's "Fine-tune" button): about a minute.

    30 steps of 16 slices (3 epochs of 10, so validation is shown three times) at a gentle
    learning rate, BatchNorm statistics frozen for a handful of volumes (a few corrected volumes
    cannot re-estimate them), and a 51-second cap on the steps so a slow or busy machine still
    ends the round in about a minute, with fewer steps (reading, preprocessing and validation
    come on top of the cap). With the width-16, 128-pixel model on 2 CPU cores a step of 16
    slices takes ~0.8 s, so the 30 steps take ~25 s; ``benchmarks/bench_finetune_round.py``
    measures a round on one corrected 34-slice volume.

    Learning rate 1e-4, not 3e-4: with 3e-4 a round on one to three volumes cost the model 0.02 to
    0.08 Dice on the patients of other institutions (forgetting); 1e-4 stayed within 0.01
    (``training/compare_rounds.py`` → training/ROUNDS.md).
    """
    return TrainConfig(
        epochs=3,
        steps_per_epoch=10,
        minutes=0.85,
        batch_size=16,
        lr=1e-4,
        warmup_steps=5,
        freeze_bn=n_volumes <= 8,
        patience=None,
        seed=seed,
        device=device,
    )


@dataclass
class TrainResult:
    state_dict: dict  # the best (or last, without validation) weights, on the CPU
    history: list[dict] = field(
        default_factory=list
    )  # one row per epoch (epoch 0: before training)
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


def _shared_clock(elapsed: float, cancelled: bool, world: int, device) -> tuple[float, bool]:
    """The slowest rank's clock and anyone's cancel, so every rank takes the same decisions
    (stop for time, stop when cancelled) and the same learning rate."""
    if world == 1:
        return elapsed, cancelled
    t = torch.tensor([elapsed, 1.0 if cancelled else 0.0], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t[0]), bool(t[1] > 0)


def _snapshot(model: nn.Module, device: torch.device | None = None) -> dict:
    return {
        k: t.detach().to(device, copy=True) if device else t.detach().clone()
        for k, t in model.state_dict().items()
    }


@torch.inference_mode()
def evaluate_prepared(
    model: nn.Module,
    data: list[_Prepared],
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


def save_checkpoint(
    path: Path,
    model: nn.Module,
    opt,
    state: dict,
    best_state: dict | None,
    extra: dict | None = None,
) -> None:
    """Model, optimizer, loop state (and ``extra`` tensors, e.g. a random generator's state) as
    safetensors + JSON (no pickle), written atomically."""
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        tensors,
        str(tmp),
        metadata={"state": json.dumps(state), "param_groups": json.dumps(opt_sd["param_groups"])},
    )
    os.replace(tmp, path)


def load_checkpoint(
    path: Path, model: nn.Module, opt, extra: dict | None = None
) -> tuple[dict, dict | None]:
    """Restore ``model`` and ``opt`` in place; return (loop state, best weights or None).
    ``extra``, when given, is filled with the checkpoint's extra tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if "state" not in meta or "param_groups" not in meta:
        raise ValueError(
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

    Epoch 0 of the history is the model before training (validation Dice "before"). ``cancel``
    (a ``threading.Event`` or a callable) is checked before every step; a cancelled run skips
    the final validation and returns at once. ``resume`` continues a run from its ``checkpoint``
    file: same step count, history, optimizer and sampling, so with the same ``config`` the
    resumed run ends where an uninterrupted one would (``epochs`` is the whole run's budget).
    A non-finite loss or gradient stops the run with the weights of the last good step.
    """
    cfg = copy.deepcopy(config) if config is not None else TrainConfig()
    if cfg.epochs is None and cfg.minutes is None:
        cfg.epochs = 10
    rank, world = _dist_info()
    device = resolve_device(cfg.device, fallback=True)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1000 * rank)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)

    train_data = _prepare_all(train_volumes, recipe)
    val_data = _prepare_all(val_volumes, recipe) if val_volumes else []
    pool = [(i, int(z)) for i, d in enumerate(train_data) for z in d.grid]
    if not pool:
        raise ValueError(
            "no labelled slices to train on (mark slices as reviewed, or give expert masks)"
        )
    tumour_pool = [(i, z) for i, z in pool if float(train_data[i].y[z].sum()) > 0]
    spe = cfg.steps_per_epoch or int(min(200, max(10, math.ceil(len(pool) / cfg.batch_size))))
    total_steps = cfg.epochs * spe if cfg.epochs else None
    freeze_bn = (
        cfg.freeze_bn if cfg.freeze_bn is not None else (fine_tune and len(train_volumes) <= 8)
    )

    model.to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = (
        torch.amp.GradScaler("cuda")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported()
        else None
    )

    n_hand = sum(len(d.grid) for d, v in zip(train_data, train_volumes) if v.source != "expert")
    summary = {
        "patients": sorted({v.patient_id for v in train_volumes}),
        "val_patients": sorted({v.patient_id for v in (val_volumes or [])}),
        "slices": len(pool),
        "tumour_slices": len(tumour_pool),
        "slices_corrected_by_hand": n_hand,
        "volumes": len(train_volumes),
    }
    state = {
        "step": 0,
        "epoch": 0,
        "elapsed": 0.0,
        "history": [],
        "best_epoch": 0,
        "best_val": None,
        "since_best": 0,
    }
    best_state = None
    if resume:
        extra: dict = {}
        state, best_state = load_checkpoint(Path(resume), model, opt, extra)
        if rank == 0 and "rng" in state and "gen" in extra:
            rng.bit_generator.state = state["rng"]
            gen.set_state(extra["gen"])
        else:  # other ranks (only rank 0's generators are saved): a fresh stream per rank and step
            rng = np.random.default_rng([cfg.seed, rank, state["step"]])
            gen.manual_seed(cfg.seed + 1000 * rank + 7919 * state["step"])

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
        state["history"].append(
            {"epoch": 0, "step": 0, "loss": None, "val_dice": v, "seconds": 0.0}
        )
        state["best_val"] = v
        state["best_per"] = per
        best_state = _snapshot(model, torch.device("cpu"))
        emit({"kind": "epoch", **state["history"][-1], "total_epochs": cfg.epochs})

    t_start = time.perf_counter() - state["elapsed"]
    budget_s = cfg.minutes * 60 if cfg.minutes else None
    stopped = "finished"
    while True:
        epoch = state["epoch"] + 1
        net.train()
        if freeze_bn:  # again every epoch: validation puts BatchNorm back in training mode
            _bn_eval(model)
        losses = []
        for _ in range(spe):
            elapsed, cancelled = _shared_clock(
                time.perf_counter() - t_start, is_cancelled(cancel), world, device
            )
            if cancelled:
                stopped = "cancelled"
                break
            if budget_s and elapsed >= budget_s:
                stopped = "time"
                break
            if total_steps and state["step"] >= total_steps:
                break
            frac = max(
                state["step"] / total_steps if total_steps else 0.0,
                elapsed / budget_s if budget_s else 0.0,
            )
            warm = min(1.0, (state["step"] + 1) / max(1, cfg.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
            picks = [
                tumour_pool[rng.integers(len(tumour_pool))]
                if tumour_pool and rng.random() < cfg.tumour_fraction
                else pool[rng.integers(len(pool))]
                for _ in range(cfg.batch_size)
            ]
            xb = torch.stack([train_data[i].x[z] for i, z in picks]).float()
            yb = torch.stack([train_data[i].y[z] for i, z in picks]).float()
            if cfg.augment:
                xb, yb = augment(xb, yb, gen, recipe.channels, cfg.substitute)
            xb, yb = xb.to(device), yb.to(device)
            if device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            # the forward pass updates BatchNorm statistics: keep a copy to go back to if it goes wrong
            last_good = _snapshot(model)
            with autocast(device):
                logits = net(xb)
            loss = seg_loss(logits, yb, cfg.loss)
            if _any_rank(not bool(torch.isfinite(loss)), world, device):
                stopped = (
                    f"non-finite loss ({loss.item()}) at step {state['step'] + 1}: stopped, "
                    f"kept the weights of step {state['step']}"
                )
                model.load_state_dict(last_good)
                break
            opt.zero_grad(set_to_none=True)
            if scaler:  # fp16: the scaler skips steps with inf gradients and lowers its scale
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                gnorm = torch.nn.utils.get_total_norm(
                    [q.grad for q in model.parameters() if q.grad is not None]
                )
                if _any_rank(not bool(torch.isfinite(gnorm)), world, device):
                    stopped = (
                        f"non-finite gradients at step {state['step'] + 1}: stopped, "
                        f"kept the weights of step {state['step']}"
                    )
                    model.load_state_dict(last_good)
                    break
                opt.step()
            state["step"] += 1
            losses.append(float(loss.item()))
            emit(
                {
                    "kind": "step",
                    "epoch": epoch,
                    "step": state["step"],
                    "loss": losses[-1],
                    "steps_per_epoch": spe,
                    "total_steps": total_steps,
                    "fraction": frac,
                }
            )
        if world > 1:  # each rank's last forward moved its own BatchNorm statistics: take rank 0's
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)
        if not losses:
            break
        state["epoch"] = epoch
        state["elapsed"] = time.perf_counter() - t_start
        do_val = stopped != "cancelled" and (
            epoch % cfg.val_every == 0
            or stopped != "finished"
            or (total_steps is not None and state["step"] >= total_steps)
        )
        v, per = validate() if do_val else (None, {})
        row = {
            "epoch": epoch,
            "step": state["step"],
            "loss": float(np.mean(losses)),
            "val_dice": v,
            "seconds": round(state["elapsed"], 1),
        }
        state["history"].append(row)
        improved = v is not None and (state["best_val"] is None or v > state["best_val"])
        if improved or not val_data:
            state["best_val"], state["best_epoch"], state["since_best"] = v, epoch, 0
            state["best_per"] = per
            best_state = _snapshot(model, torch.device("cpu"))
        elif v is not None:
            state["since_best"] += 1
        emit(
            {"kind": "epoch", **row, "best_val_dice": state["best_val"], "total_epochs": cfg.epochs}
        )
        if checkpoint and rank == 0:
            state["rng"] = rng.bit_generator.state
            save_checkpoint(
                Path(checkpoint), model, opt, state, best_state, extra={"gen": gen.get_state()}
            )
        if stopped != "finished":
            break
        if cfg.patience and state["since_best"] >= cfg.patience:
            stopped = "early-stopping"
            break
        if total_steps and state["step"] >= total_steps:
            break
    _dump_weight_hash(model, best_state, rank)
    return TrainResult(
        state_dict=best_state,
        history=state["history"],
        best_epoch=state["best_epoch"],
        best_val_dice=state["best_val"],
        val_per_patient=state.get("best_per", {}),
        steps=state["step"],
        seconds=time.perf_counter() - t_start,
        stopped=stopped,
        data_summary=summary,
    )


def state_dict_hash(state_dict: dict) -> str:
    """sha256 over a state dict's names and values (memory layout does not matter)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _dump_weight_hash(model: nn.Module, best_state: dict, rank: int) -> None:
    """Test hook: with ``LGGSEG_DUMP_WEIGHT_HASH=PATH``, each rank writes ``PATH.rank<N>`` holding
    the hashes of its final and returned weights, so a test can check DDP kept ranks in step."""
    path = os.environ.get("LGGSEG_DUMP_WEIGHT_HASH")
    if path:
        Path(f"{path}.rank{rank}").write_text(
            json.dumps(
                {
                    "final": state_dict_hash(model.state_dict()),
                    "returned": state_dict_hash(best_state) if best_state is not None else None,
                }
            )
        )


def model_card(
    recipe: Recipe,
    width: int,
    result: TrainResult,
    cfg: TrainConfig,
    parent: str | None,
    intended_use: str = "research segmentation of LGG FLAIR abnormality; not for diagnosis",
    **extra,
) -> dict:
    """The card saved beside trained weights."""
    return {
        "architecture": {
            "name": "unet-buda2019",
            "width": width,
            "in_channels": recipe.in_channels,
            "out_channels": 1,
        },
        "inputs": {
            "sequences": list(recipe.channels),
            "context_slices": recipe.context,
            "missing_sequences": "trained with pre/post-contrast replaced by FLAIR for "
            f"{cfg.substitute:.0%} of samples"
            if cfg.substitute and len(recipe.channels) == 3
            else "",
        },
        "preprocessing": recipe.to_dict(),
        "postprocessing": {"threshold": cfg.threshold, "method": cfg.postprocess},
        "parent": parent,
        "training_data": result.data_summary,
        "metrics": {
            "val_mean_dice": result.best_val_dice,
            "val_median_dice": float(np.median(list(result.val_per_patient.values())))
            if result.val_per_patient
            else None,
            "val_per_patient": result.val_per_patient,
            "best_epoch": result.best_epoch,
            "protocol": "per-volume Dice, threshold 0.5, post-processing as above, every "
            "original slice at original resolution",
        },
        "history": result.history,
        "hyperparameters": cfg.to_dict(),
        "training": {
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "stopped": result.stopped,
            "torch": torch.__version__,
        },
        "intended_use": intended_use,
        "data_licence": "trained on the LGG Segmentation Dataset (TCGA-LGG, Buda et al. 2019), "
        "CC BY-NC-SA 4.0: non-commercial research use",
        **extra,
    }


def main(argv=None) -> int:
    """``python -m napari_lggseg.training`` (e.g. under torchrun) = ``lggseg train``."""
    import sys

    from .cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

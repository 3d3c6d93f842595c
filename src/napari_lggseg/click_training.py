"""Fine-tune an interactive network with iterated simulated clicks (DeepEdit / RITM style).

Each step takes a batch of slices with the automatic model's mask of them (the first step a person
starts from), then for 1..``max_clicks`` rounds: a click at the farthest-from-boundary pixel of the
largest error region (:mod:`click_sim`), a prediction with the clicks so far fed back as the new
mask, and finally a loss on the last round. A share of the samples get their first click from a
neighbouring slice's error, at that slice's fading weight, so the network learns what a click a
few slices away means (and that it must not paint where this slice has no error). No Qt.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .click_sim import next_click
from .interactive import ClickEncoding, stamp
from .preprocess import Recipe
from .train_data import PreparedVolume, SlicePool, augment
from .training import seg_loss


@dataclass
class ClickTrainConfig:
    steps: int = 600
    minutes: float | None = None  # stop earlier when this wall time is used
    batch_size: int = 8
    lr: float = 3e-4
    warmup_steps: int = 20
    max_clicks: int = 3
    neighbour_fraction: float = 0.3
    tumour_fraction: float = 0.6
    substitute: float = 0.2
    perturb: float = 0.5  # share of samples whose first mask is replaced by a perturbed truth
    error_weight: float = 4.0  # extra BCE weight on the pixels the input mask gets wrong
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def first_masks(net, data: list[PreparedVolume], batch: int = 32) -> list[torch.Tensor]:
    """The automatic model's mask (Z', S, S) uint8 of every prepared volume, on the grid."""
    net.eval()
    out = []
    for d in data:
        parts = [
            (torch.sigmoid(net(d.x[i : i + batch].float())) >= 0.5)[:, 0].to(torch.uint8)
            for i in range(0, d.x.shape[0], batch)
        ]
        out.append(torch.cat(parts))
    return out


def perturbed(truth: torch.Tensor, kind: int, rng: np.random.Generator) -> torch.Tensor:
    """A wrong first mask made from the truth (S, S): grown or shrunk by 1-6 pixels, missing,
    or with a false copy of the lesion beside it. The automatic model's masks of the training
    patients are nearly right, so without these the clicks would rarely have much to fix."""
    t = truth.numpy() >= 0.5
    k = int(rng.integers(1, 7))
    if kind == 0:
        out = ndimage.binary_dilation(t, iterations=k)
    elif kind == 1:
        out = ndimage.binary_erosion(t, iterations=k)
    elif kind == 2:
        out = np.zeros_like(t)
    else:
        dy, dx = (int(v) * int(rng.choice([-1, 1])) for v in rng.integers(12, 40, size=2))
        blob = np.roll(t, (dy, dx), axis=(0, 1))
        if not t.any():  # a slice without tumour: a false disk in the middle of the grid
            yy, xx = np.ogrid[: t.shape[0], : t.shape[1]]
            cy, cx = (int(v) for v in rng.integers(t.shape[0] // 4, 3 * t.shape[0] // 4, size=2))
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(4, 12)) ** 2
        out = t | blob
    return torch.from_numpy(out.astype(np.uint8))


def click_loss(logits: torch.Tensor, y: torch.Tensor, inp_mask, error_weight: float):
    """Dice + BCE, the BCE weighted ``1 + error_weight`` on the pixels the input mask gets wrong
    (what the clicks are there to fix; the rest of the slice is mostly right already)."""
    if error_weight <= 0:
        return seg_loss(logits, y)
    weight = 1 + error_weight * ((inp_mask >= 0.5) != (y >= 0.5)).float()
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], y, weight=weight)
    return seg_loss(logits, y, "dice") + bce


def _batch(data, masks, pool, rng, gen, cfg, recipe, window):
    """Augmented (B, C+3, S, S) images + [first mask, neighbour truth, neighbour first mask],
    the targets (B, S, S), and each sample's neighbour offset."""
    picks = pool.sample(rng, cfg.batch_size, cfg.tumour_fraction)
    rows, ys, offsets = [], [], []
    for i, z in picks:
        n = data[i].y.shape[0]
        d = 0
        if window > 0 and rng.random() < cfg.neighbour_fraction:
            d = int(rng.integers(1, window + 1)) * (1 if rng.random() < 0.5 else -1)
        zn = min(max(z + d, 0), n - 1)
        first, first_n = masks[i][z], masks[i][zn]
        if rng.random() < cfg.perturb:
            kind, seed = int(rng.integers(4)), int(rng.integers(2**31))
            first = perturbed(data[i].y[z], kind, np.random.default_rng(seed))
            first_n = perturbed(data[i].y[zn], kind, np.random.default_rng(seed))
        extra = torch.stack([first, data[i].y[zn], first_n]).float()
        rows.append(torch.cat([data[i].x[z].float(), extra]))
        ys.append(data[i].y[z].float())
        offsets.append(zn - z)
    xb, yb = augment(torch.stack(rows), torch.stack(ys), gen, recipe.channels, cfg.substitute)
    c = recipe.in_channels
    xb[:, c:] = (xb[:, c:] >= 0.5).float()
    return xb, yb, offsets


def _click_into(maps_pos, maps_neg, b, pred, truth, weight, sigma) -> None:
    found = next_click(pred, truth)
    if found is not None:
        (gy, gx), positive = found
        stamp((maps_pos if positive else maps_neg)[b], gy, gx, weight, sigma)


def simulate_rounds(net, xb, yb, offsets, rounds: int, enc: ClickEncoding, c: int):
    """The network input after ``rounds`` simulated clicks per sample (no gradients)."""
    b, s = xb.shape[0], xb.shape[-1]
    pos, neg = np.zeros((b, s, s), np.float32), np.zeros((b, s, s), np.float32)
    truth = (yb >= 0.5).numpy()
    mask = xb[:, c].clone()
    for k in range(b):  # round 1: from this slice's error, or a neighbour's, fading
        if offsets[k]:
            src_pred, src_truth = xb[k, c + 2].numpy() > 0, xb[k, c + 1].numpy() > 0
        else:
            src_pred, src_truth = mask[k].numpy() > 0, truth[k]
        _click_into(pos, neg, k, src_pred, src_truth, enc.weight(offsets[k]), enc.sigma_px)
    for _ in range(rounds - 1):
        inp = torch.cat(
            [xb[:, :c], torch.from_numpy(pos)[:, None], torch.from_numpy(neg)[:, None]]
            + [mask[:, None]],
            1,
        )
        with torch.no_grad():
            mask = (torch.sigmoid(net(inp)) >= 0.5)[:, 0].float()
        for k in range(b):
            _click_into(pos, neg, k, mask[k].numpy() > 0, truth[k], 1.0, enc.sigma_px)
    return torch.cat(
        [xb[:, :c], torch.from_numpy(pos)[:, None], torch.from_numpy(neg)[:, None], mask[:, None]],
        1,
    )


def _lr(cfg: ClickTrainConfig, step: int, fraction: float) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))


def train_clicks(
    net,
    recipe: Recipe,
    enc: ClickEncoding,
    data,
    masks,
    cfg: ClickTrainConfig,
    log=print,
    snapshot=None,
    snapshot_every: int = 500,
) -> dict:
    """Fine-tune ``net`` (in place, BatchNorm frozen) and return what happened, for the card.
    ``snapshot(step)`` is called every ``snapshot_every`` steps (keep the weights of a long run
    and measure it on validation while it goes on)."""
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    pool = SlicePool.of(data)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    net.eval()  # frozen BatchNorm statistics: a short fine-tune from the automatic model
    t0, losses, history, step = time.perf_counter(), [], [], 0
    while step < cfg.steps:
        elapsed = time.perf_counter() - t0
        if cfg.minutes is not None and elapsed > 60 * cfg.minutes:
            break
        fraction = max(step / cfg.steps, elapsed / (60 * cfg.minutes) if cfg.minutes else 0.0)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, fraction)
        xb, yb, offsets = _batch(data, masks, pool, rng, gen, cfg, recipe, enc.window)
        rounds = int(rng.integers(1, cfg.max_clicks + 1))
        inp = simulate_rounds(net, xb, yb, offsets, rounds, enc, recipe.in_channels)
        loss = click_loss(net(inp), yb, inp[:, -1], cfg.error_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 10 == 0 or step == cfg.steps:
            rec = {
                "step": step,
                "loss": float(np.mean(losses[-10:])),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            history.append(rec)
            if log:
                log(f"step {step}/{cfg.steps}  loss {rec['loss']:.4f}  {rec['seconds']:.0f} s")
        if snapshot is not None and step % snapshot_every == 0 and step < cfg.steps:
            snapshot(step)
    return {
        "steps": step,
        "seconds": round(time.perf_counter() - t0, 1),
        "history": history,
        "stopped": "steps" if step >= cfg.steps else "time",
    }

"""How a fine-tuning round learns a new site without forgetting the old ones: a penalty toward
the parent's weights (L2-SP), BatchNorm statistics from the new site's slices, and averaging the
result with the parent (WiSE-FT). :func:`napari_lggseg.training.train` applies them when
fine-tuning, as its :class:`~napari_lggseg.training.TrainConfig` says; which ones the round uses,
and why, is in :func:`napari_lggseg.finetune.fine_tune_config` (measured in training/PROJECT.md).
No Qt.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .devices import autocast
from .train_data import PreparedVolume


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm in eval mode: its statistics stay as they are while the rest learns (a few
    corrected volumes cannot re-estimate them by the running average)."""
    for m in _batchnorms(model):
        m.eval()


def site_batchnorm(
    model: nn.Module, data: list[PreparedVolume], device, share: float = 1.0, seed: int = 0
) -> int:
    """Re-estimate BatchNorm statistics on every slice of ``data`` (labelled or not: a new
    site's scans) and keep ``share`` of them, ``1 - share`` of the parent's (AdaBN). The
    network's normalisation then matches the site's intensities before a gradient step is
    taken. Slices are shuffled across volumes into batches. Returns the slices seen."""
    bns = _batchnorms(model)
    slices = [(i, z) for i, d in enumerate(data) for z in range(d.x.shape[0])]
    if not bns or not slices or share <= 0:
        return 0
    old = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches
        m.train()
    order = np.random.default_rng(seed).permutation(len(slices))
    for k in range(0, len(order), 32):
        xb = torch.stack([data[slices[j][0]].x[slices[j][1]] for j in order[k : k + 32]])
        xb = xb.float().to(device)
        if device.type == "cpu":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            model(xb)
    for m, (mean, var, momentum) in zip(bns, old):
        m.running_mean.mul_(share).add_(mean, alpha=1 - share)
        m.running_var.mul_(share).add_(var, alpha=1 - share)
        m.momentum = momentum
    model.train(was_training)
    return len(slices)


def l2sp_penalty(model: nn.Module, anchor: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """``alpha * sum ||theta - theta_parent||^2`` over the trained parameters (L2-SP, Li et al.
    2018): fine-tuning may move the weights as far as the new site needs, not further."""
    total = next(iter(anchor.values())).new_zeros(())
    for name, p in model.named_parameters():
        if name in anchor:
            total = total + (p.float() - anchor[name]).pow(2).sum()
    return alpha * total


def average_weights(parent: dict, tuned: dict, parent_share: float) -> dict:
    """``parent_share`` of the parent's weights and the rest of the fine-tuned ones (WiSE-FT,
    Wortsman et al. 2022): on a new site it kept most of a round's gain and halved what the
    round cost elsewhere (training/PROJECT.md). Integer buffers are the fine-tuned ones."""
    return {
        k: torch.lerp(t.float(), parent[k].float(), parent_share).to(t.dtype)
        if t.is_floating_point()
        else t
        for k, t in tuned.items()
    }

"""From a training run to a saved model: the fine-tuning round every path uses (the Fine-tune
widget, ``lggseg train --from`` and the human-in-the-loop scripts), the card written beside
trained weights, and saving that never loses a trained model. No Qt.
"""

from __future__ import annotations

import numpy as np
import torch

from . import models, training
from .distributed import rank_and_world
from .model_cards import is_interactive
from .preprocess import Recipe
from .train_data import TrainVolume
from .training import StopReason, TrainConfig, TrainResult


def fine_tune_config(
    n_volumes: int = 1, device: str = "auto", seed: int = 0, minutes: float | None = None
) -> TrainConfig:
    """The default fine-tuning round (the widget's "Fine-tune" button): about a minute.
    ``minutes`` replaces its budget (steps until the time runs out), keeping every other setting.

    30 steps of 16 slices (3 epochs of 10, so validation is shown three times), BatchNorm
    statistics frozen for a handful of volumes (a few corrected volumes cannot re-estimate them),
    and a 51-second cap on the steps so a slow or busy machine still ends the round in about a
    minute, with fewer steps (reading, preprocessing and validation come on top of the cap).
    With the width-16, 128-pixel model on 2 CPU cores a step of 16 slices takes ~0.8 s, so the
    30 steps take ~25 s; ``benchmarks/bench_finetune_round.py`` measures a round.

    A new site without forgetting the old ones (``training/simulate_project.py`` →
    training/PROJECT.md: 3 corrected cases of shifted LGG validation patients, measured on the
    site's other cases and on clean LGG validation patients of other institutions): lr 5e-4
    with an L2-SP penalty (0.1, no weight decay) toward the parent's weights, and the result
    averaged half-and-half with the parent (``parent_share``, WiSE-FT). The round before
    (lr 1e-4, no penalty, no averaging; chosen in training/ROUNDS.md) lifted the site by +0.17
    and +0.30 Dice in two draws but cost the LGG patients 0.023 and 0.008; this one +0.23 and
    +0.25 for 0.008 and 0.000. Re-estimating BatchNorm statistics on the site's slices made
    the site worse (``TrainConfig.site_bn``, off).
    """
    return TrainConfig(
        epochs=3 if minutes is None else None,
        steps_per_epoch=10,
        minutes=0.85 if minutes is None else minutes,
        batch_size=16,
        lr=5e-4,
        weight_decay=0.0,
        warmup_steps=5,
        freeze_bn=n_volumes <= 8,
        l2sp=0.1,
        parent_share=0.5,
        patience=None,
        seed=seed,
        device=device,
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
            "stopped": result.stopped.value,
            "stop_message": result.message,
            "torch": torch.__version__,
        },
        "intended_use": intended_use,
        "data_licence": "trained on the LGG Segmentation Dataset (TCGA-LGG, Buda et al. 2019), "
        "CC BY-NC-SA 4.0: non-commercial research use",
        **extra,
    }


class ModelNotStored(models.ModelError):
    """The model store could not take a trained model; the message says where a complete copy
    went (``saved.fallback``), or that it went nowhere."""

    def __init__(self, saved: models.SavedModel, result: TrainResult | None = None):
        super().__init__(saved.message())
        self.saved, self.result = saved, result


def save_trained(state_dict: dict, card: dict, name: str) -> models.ModelInfo | None:
    """Save a trained model under ``name`` (or its next free version); on rank 0 only (other
    ranks of a torchrun job get None). Raises :class:`ModelNotStored` when the store failed."""
    if rank_and_world()[0] != 0:
        return None
    saved = models.save_trained_model(state_dict, card, name)
    if saved.info is None:
        raise ModelNotStored(saved)
    return saved.info


def fine_tune(
    base: str,
    volumes: list[TrainVolume],
    val_volumes: list[TrainVolume] | None = None,
    config: TrainConfig | None = None,
    name: str | None = None,
    progress=None,
    cancel=None,
    save: bool = True,
    card_extra: dict | None = None,
    keep_if_cancelled: bool = False,
    checkpoint=None,
    resume=None,
) -> tuple[models.ModelInfo | None, TrainResult]:
    """Fine-tune ``base`` on ``volumes`` (only their labelled slices count); the default budget
    is one round (:func:`fine_tune_config`).

    Returns ``(ModelInfo or None, TrainResult)``. A cancelled run saves nothing unless
    ``keep_if_cancelled`` (the CLI's Ctrl-C keeps the best model so far); the parent's files
    are never written. The new model keeps its parent's post-processing (the validated choice)
    and gets a fresh versioned name unless ``name`` is free. When the store cannot take it,
    :class:`ModelNotStored` says where the complete copy went.
    """
    if is_interactive(models.get_model(base).card):
        raise models.ModelError(
            f"{base}: a click correction model; fine-tune an automatic model (e.g. lgg-fast)"
        )
    net, info = models.load_model(base)
    recipe = Recipe.from_dict(info.card["preprocessing"])
    cfg = config or fine_tune_config(len(volumes))
    result = training.train(
        net, recipe, volumes, val_volumes, cfg, progress, cancel, checkpoint, resume, fine_tune=True
    )
    cancelled = result.stopped is StopReason.CANCELLED
    if not save or result.state_dict is None or (cancelled and not keep_if_cancelled):
        return None, result
    width = info.card["architecture"]["width"]
    card = model_card(recipe, width, result, cfg, parent=info.name, **(card_extra or {}))
    if "postprocessing" in info.card:
        card["postprocessing"] = dict(info.card["postprocessing"])
    try:
        return save_trained(result.state_dict, card, name or f"{info.name}-ft"), result
    except ModelNotStored as exc:
        exc.result = result
        raise

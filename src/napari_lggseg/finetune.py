"""One fine-tuning round from a stored model: the single code path behind the Fine-tune widget,
``lggseg train --from``, and the human-in-the-loop simulation. No Qt.
"""

from __future__ import annotations

from . import models, training
from .preprocess import Recipe


def default_config(n_volumes: int = 1) -> training.TrainConfig:
    """The default budget of one round (see training.fine_tune_config)."""
    return training.fine_tune_config(n_volumes)


def fine_tune(
    base: str,
    volumes: list[training.TrainVolume],
    val_volumes=None,
    config: training.TrainConfig | None = None,
    name: str | None = None,
    progress=None,
    cancel=None,
    save: bool = True,
    card_extra: dict | None = None,
):
    """Fine-tune ``base`` on ``volumes`` (only their labelled slices count).

    Returns ``(ModelInfo or None, TrainResult)``. A cancelled run saves nothing; the parent's files
    are never written. The new model gets a fresh versioned name unless ``name`` is free.
    """
    net, info = models.load_model(base)
    recipe = Recipe.from_dict(info.card["preprocessing"])
    cfg = config or default_config(len(volumes))
    result = training.train(
        net, recipe, volumes, val_volumes, cfg, progress=progress, cancel=cancel, fine_tune=True
    )
    if not save or result.stopped == "cancelled" or result.state_dict is None:
        return None, result
    card = training.model_card(
        recipe,
        info.card["architecture"]["width"],
        result,
        cfg,
        parent=info.name,
        **(card_extra or {}),
    )
    for key in ("postprocessing",):  # a fine-tuned model keeps its parent's validated choices
        if key in info.card:
            card[key] = dict(info.card[key])
    new = models.save_model(result.state_dict, card, models.unique_name(name or f"{info.name}-ft"))
    return new, result

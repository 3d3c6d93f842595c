"""A tiny U-Net trained in the test session on synthetic patients, saved in a temporary store.

Until a shipped model exists (and to keep viewer tests fast after), tests segment with this.
conftest.py registers the fixture for every test module.
"""

from __future__ import annotations

import os

import pytest

TINY_NAME = "tiny-synthetic"


def train_tiny_model(root, name: str = TINY_NAME, steps: int = 120, seed: int = 0):
    """Train width-8, 64-pixel U-Net on synthetic patients (seeds 1..6); save it under ``root``."""
    from napari_lggseg import models
    from napari_lggseg.finetune import model_card
    from napari_lggseg.preprocess import Recipe
    from napari_lggseg.synthetic import make_synthetic_patient
    from napari_lggseg.train_data import TrainVolume
    from napari_lggseg.training import TrainConfig, new_model, train

    vols = []
    for s in range(1, 8):
        img, mask = make_synthetic_patient(seed=s, n_slices=16, size=128)
        vols.append(TrainVolume(f"SYNTH_{s}", img, mask))
    recipe = Recipe(size=64, context=0)
    model = new_model(recipe, 8, seed)
    cfg = TrainConfig(
        epochs=4,
        steps_per_epoch=steps // 4,
        batch_size=8,
        lr=3e-3,
        warmup_steps=10,
        device="cpu",
        seed=seed,
        substitute=0.0,
    )
    result = train(model, recipe, vols[:6], vols[6:], cfg)
    card = model_card(recipe, 8, result, cfg, parent=None, intended_use="tests only")
    return models.save_model(result.state_dict, card, name, root=root)


@pytest.fixture(scope="session")
def tiny_model_store(tmp_path_factory):
    """A user model store (``LGGSEG_MODEL_DIR``) holding the tiny model; yields its name."""
    root = tmp_path_factory.mktemp("model-store")
    old = os.environ.get("LGGSEG_MODEL_DIR")
    os.environ["LGGSEG_MODEL_DIR"] = str(root)
    try:
        info = train_tiny_model(root)
        assert info.card["metrics"]["val_mean_dice"] > 0.5, info.card["metrics"]
        yield info.name
    finally:
        if old is None:
            os.environ.pop("LGGSEG_MODEL_DIR", None)
        else:
            os.environ["LGGSEG_MODEL_DIR"] = old

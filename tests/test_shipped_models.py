"""The models that ship in the wheel: intact, offline, and good on a patient they never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO_ROOT

from napari_lggseg import lgg_io, metrics, models
from napari_lggseg.inference import Segmenter
from napari_lggseg.model_cards import is_interactive

SHIPPED = [  # the automatic shipped models (click models cannot segment alone)
    i.name for i in models.list_models() if i.shipped and not is_interactive(i.card)
]
SPLITS = json.loads((REPO_ROOT / "training" / "splits.json").read_text())
# a test-split patient with all three sequences, and the test split's largest tumour for a
# FLAIR-only check (chosen by id, never by how the model does on them)
TEST_PATIENT = SPLITS["test"][0]


def test_a_default_model_ships():
    assert SHIPPED, "no model in src/napari_lggseg/weights"
    assert models.default_model_name("cpu") in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_card_and_hash(name):
    info = models.get_model(name)
    assert models.sha256_of(info.path / models.WEIGHTS) == info.card["sha256"]
    assert (info.path / models.WEIGHTS).stat().st_size <= 20 * 2**20
    for key in (
        "architecture",
        "preprocessing",
        "training_data",
        "metrics",
        "intended_use",
        "data_licence",
        "created",
        "hyperparameters",
    ):
        assert key in info.card, key
    model, _ = models.load_model(name)  # hash checked again, strict load, no pickle
    assert model.in_channels == info.card["architecture"]["in_channels"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_segments_an_unseen_patient(name, kaggle_root):
    patient = lgg_io.read_patient(kaggle_root / TEST_PATIENT)
    seg = Segmenter.from_store(name, device="cpu").segment(patient.image)
    assert metrics.dice(seg.mask, patient.mask) >= 0.7


@pytest.mark.parametrize("name", SHIPPED)
def test_flair_only_scan_is_flagged_and_still_segmented(name, kaggle_root):
    patient = lgg_io.read_patient(kaggle_root / TEST_PATIENT)
    flair_everywhere = np.repeat(patient.image[..., 1:2], 3, axis=-1)
    seg = Segmenter.from_store(name, device="cpu").segment(flair_everywhere)
    assert set(seg.missing) == {"pre-contrast", "post-contrast"}
    assert "FLAIR only" in seg.sequences_note
    assert metrics.dice(seg.mask, patient.mask) >= 0.7


ROBUST = [
    i.name
    for i in models.list_models()
    if i.shipped and i.card.get("preprocessing", {}).get("name") == "robust-zscore"
]


@pytest.mark.parametrize("name", ROBUST)
def test_other_site_model_holds_up_on_a_skull_stripped_z_scored_scan(name, kaggle_root):
    """How a BraTS-style site stores an unseen patient: brain only, z-scored, no pre-contrast."""
    from napari_lggseg import site_shift

    patient = lgg_io.read_patient(kaggle_root / TEST_PATIENT)
    image, mask = site_shift.skull_strip(patient.image, patient.mask)
    image, mask = site_shift.without_pre_contrast(image, mask)
    image, mask = site_shift.zscored(image, mask)
    assert (image < -0.5).mean() > 0.3, "a negative background, as z-scored scans have"
    seg = Segmenter.from_store(name, device="cpu").segment(image)
    assert metrics.dice(seg.mask, mask) >= 0.7


def test_a_click_model_is_never_a_base_for_fine_tuning():
    """The click model needs three more input channels: fine-tuning it as an automatic model
    would fail deep in training on a shape mismatch; it is refused up front instead."""
    from napari_lggseg import finetune

    clicks = [i.name for i in models.list_models() if i.shipped and is_interactive(i.card)]
    if not clicks:
        pytest.skip("no click model shipped")
    with pytest.raises(models.ModelError, match="click correction model"):
        finetune.fine_tune(clicks[0], volumes=[])

"""A model card's post-processing, read in one place for the widget, the CLI and the Segmenter."""

from __future__ import annotations

import argparse

import pytest

from napari_lggseg.model_cards import (
    DEFAULT_POSTPROCESS,
    CardPostprocessing,
    card_postprocessing,
)


@pytest.mark.parametrize(
    "card, expected",
    [
        (
            {"postprocessing": {"threshold": 0.4, "method": "largest", "tta": True}},
            CardPostprocessing("largest", 0.4, True),
        ),
        ({"postprocessing": {"threshold": "0.45"}}, CardPostprocessing(DEFAULT_POSTPROCESS, 0.45)),
        ({}, CardPostprocessing(DEFAULT_POSTPROCESS, None, False)),
        ({"postprocessing": None}, CardPostprocessing()),
        ({"postprocessing": {"method": None, "threshold": "high"}}, CardPostprocessing()),
        (None, CardPostprocessing()),
    ],
)
def test_what_a_card_says_and_what_it_leaves_to_the_defaults(card, expected):
    assert card_postprocessing(card) == expected


def test_cli_and_segmenter_take_the_cards_choice(tiny_model_store):
    from napari_lggseg import models
    from napari_lggseg.cli._common import card_postprocess, segmenter
    from napari_lggseg.inference import Segmenter

    card = card_postprocessing(models.get_model(tiny_model_store).card)
    seg = Segmenter.from_store(tiny_model_store, device="cpu")
    assert (seg.default_postprocess, seg.tta) == (card.method, card.tta)
    args = argparse.Namespace(model=tiny_model_store, device="cpu", batch_size=4, tta=False)
    assert card_postprocess(segmenter(args), None) == card.method
    assert card_postprocess(seg, "none") == "none"  # --postprocess wins

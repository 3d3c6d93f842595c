"""What a model card must hold to be built and run, what is wrong with one, in words, and the
post-processing it chose.

A card that fails these checks makes its model *unusable*: the store lists it with the problem
and lets the person delete it, and never lets it break the other models.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES = ("unet-buda2019",)
# input channels an interactive (click correction) model takes after the recipe's own
EXTRA_CHANNELS = ("positive clicks", "negative clicks", "current mask")
REQUIRED_KEYS = ("architecture", "preprocessing", "sha256")
_FIELD_TYPES = {
    "sha256": str,
    "metrics": dict,
    "postprocessing": dict,
    "created": str,
    "parent": (str, type(None)),
}
DEFAULT_POSTPROCESS = "min-size"  # when a card names no method (and for a bare Segmenter)


@dataclass(frozen=True)
class CardPostprocessing:
    """How a model's probabilities become a mask, as its card chose them on validation data:
    the defaults of the next run in the widget, the CLI and ``Segmenter.from_store``."""

    method: str = DEFAULT_POSTPROCESS
    threshold: float | None = None  # None: the card names none
    tta: bool = False


def card_postprocessing(card) -> CardPostprocessing:
    """The card's ``postprocessing`` section read once for every caller; what it lacks (or
    holds unreadably, for the threshold) takes the defaults."""
    post = (card.get("postprocessing") or {}) if isinstance(card, dict) else {}
    try:
        threshold = None if post.get("threshold") is None else float(post["threshold"])
    except (TypeError, ValueError):
        threshold = None
    return CardPostprocessing(
        post.get("method") or DEFAULT_POSTPROCESS, threshold, bool(post.get("tta", False))
    )


def card_problem(card) -> str | None:
    """What is wrong with a card, in words (None when the model can be built from it)."""
    from .preprocess import Recipe

    if not isinstance(card, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        return f"no {' or '.join(map(repr, missing))} in the card"
    arch = card["architecture"]
    if not isinstance(arch, dict):
        return "'architecture' is not an object"
    if arch.get("name") not in ARCHITECTURES:
        return f"unknown architecture {arch.get('name')!r} (known: {', '.join(ARCHITECTURES)})"
    try:
        width, in_channels = int(arch.get("width", 32)), int(arch.get("in_channels", 3))
        recipe = Recipe.from_dict(card["preprocessing"])
    except (TypeError, ValueError, AttributeError) as exc:
        return f"unreadable 'architecture' or 'preprocessing' ({exc})"
    extra = _extra_channels(card)
    if isinstance(extra, str):
        return extra
    if width < 1 or recipe.in_channels + extra != in_channels:
        return (
            f"'preprocessing' makes {recipe.in_channels} input channels"
            + (f" and the clicks {extra} more" if extra else "")
            + f", the architecture takes {in_channels} (width {width})"
        )
    for key, types in _FIELD_TYPES.items():
        if key in card and not isinstance(card[key], types):
            return f"{key!r} has the wrong type ({type(card[key]).__name__})"
    return _postprocessing_problem(card.get("postprocessing") or {})


def is_interactive(card) -> bool:
    """True for a click correction model (its card has an ``interactive`` section)."""
    return isinstance(card, dict) and "interactive" in card


def _extra_channels(card: dict) -> int | str:
    """How many click channels the card's network takes (0 for an automatic model), or what is
    wrong with its ``interactive`` section."""
    if not is_interactive(card):
        return 0
    sec = card["interactive"]
    names = sec.get("extra_channels") if isinstance(sec, dict) else None
    if names != list(EXTRA_CHANNELS):
        return f"'interactive' must list extra_channels {list(EXTRA_CHANNELS)}, got {names!r}"
    return len(EXTRA_CHANNELS)


def _postprocessing_problem(post: dict) -> str | None:
    from .metrics import POSTPROCESS_CHOICES

    method = post.get("method")
    if method is not None and method not in POSTPROCESS_CHOICES:
        return f"unknown post-processing {method!r} (known: {', '.join(POSTPROCESS_CHOICES)})"
    return None

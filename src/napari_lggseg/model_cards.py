"""What a model card must hold to be built and run, and what is wrong with one, in words.

A card that fails these checks makes its model *unusable*: the store lists it with the problem
and lets the person delete it, and never lets it break the other models.
"""

from __future__ import annotations

ARCHITECTURES = ("unet-buda2019",)
REQUIRED_KEYS = ("architecture", "preprocessing", "sha256")
_FIELD_TYPES = {
    "sha256": str,
    "metrics": dict,
    "postprocessing": dict,
    "created": str,
    "parent": (str, type(None)),
}


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
    if width < 1 or recipe.in_channels != in_channels:
        return (
            f"'preprocessing' makes {recipe.in_channels} input channels, the architecture "
            f"takes {in_channels} (width {width})"
        )
    for key, types in _FIELD_TYPES.items():
        if key in card and not isinstance(card[key], types):
            return f"{key!r} has the wrong type ({type(card[key]).__name__})"
    return _postprocessing_problem(card.get("postprocessing") or {})


def _postprocessing_problem(post: dict) -> str | None:
    from .metrics import POSTPROCESS_CHOICES

    method = post.get("method")
    if method is not None and method not in POSTPROCESS_CHOICES:
        return f"unknown post-processing {method!r} (known: {', '.join(POSTPROCESS_CHOICES)})"
    return None

"""What both docks share: the model and device choices of their forms, the scrolling dock body,
a status label, and a registry so Fine-tune can reach Segment tumour."""

from __future__ import annotations

import weakref

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

from ..layer_meta import unwrap_viewer

# --------------------------------------------------------------------------- form choices


def model_choices() -> list[tuple[str, str]]:
    """Every automatic model in the store as (label with its validation Dice, name); click
    correction models cannot segment on their own, so they are not offered."""
    from ..model_cards import is_interactive
    from ..models import list_models

    return [(info.label(), info.name) for info in list_models() if not is_interactive(info.card)]


def default_model(names) -> str | None:
    from ..models import default_model_name

    names = list(names)
    try:
        name = default_model_name("cpu")
    except Exception:  # an empty or broken store: the first listed model, if any
        name = None
    return name if name in names else (names[0] if names else None)


def refill_models(combo, select: str | None = None) -> None:
    """Re-read the store into a magicgui ComboBox; keep (or take ``select``) its choice."""
    current = select or combo.value
    with combo.changed.blocked():
        combo.choices = model_choices()
        names = list(combo.choices)
        wanted = current if current in names else default_model(names)
        if wanted is not None:
            combo.value = wanted
    if combo.value is None:
        combo.tooltip = "No model in the store: the package's weights are missing (see README)"


def device_choices() -> list[str]:
    from ..devices import available_devices

    return ["auto", *available_devices()]


# --------------------------------------------------------------------------- layout


def status_label(name: str) -> QLabel:
    """A word-wrapped, selectable line of text that takes the height its text needs."""
    label = QLabel("", objectName=name, wordWrap=True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def wrapping_list(widget):
    """A QListWidget whose long rows wrap instead of scrolling sideways in a narrow dock."""
    widget.setWordWrap(True)
    widget.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    widget.setTextElideMode(Qt.TextElideMode.ElideNone)
    return widget


def scrolling_body(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a scrolling body and return the body's layout: a dock smaller than its
    content (napari's default window, two docks stacked or side by side) scrolls instead of
    squeezing widgets over each other or cutting them off."""
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea(widget)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    body = QWidget()
    scroll.setWidget(body)
    outer.addWidget(scroll)
    return QVBoxLayout(body)


# --------------------------------------------------------------------------- widget registry

_SEGMENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_segment_widget(viewer, widget) -> None:
    _SEGMENT[unwrap_viewer(viewer)] = weakref.ref(widget)


def segment_widget_for(viewer):
    """The Segment tumour widget docked in ``viewer``, or None."""
    ref = _SEGMENT.get(unwrap_viewer(viewer))
    widget = ref() if ref else None
    if widget is None or widget.runner.closed:
        return None
    return widget

"""The parameter forms of the two docks, built from magicgui widgets so that every value a run
takes can be read and set by name (``widget.form.threshold.value = 0.6``), from a script or a
test, as napari's own widgets do."""

from __future__ import annotations

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    LineEdit,
    PushButton,
)
from qtpy.QtWidgets import QAbstractSpinBox

from ..metrics import POSTPROCESS_CHOICES
from ._common import device_choices

MAP_LAYERS = "__map__"  # the patient choice "Map image layers…"
NO_LAYER = ""  # "(none: use FLAIR)" for a missing pre- or post-contrast
_POSTPROCESS_LABELS = {
    "min-size": "drop small components",
    "largest": "largest component",
    "none": "none",
}


def segment_form() -> Container:
    """The parameter form; every value a run takes is one of its widgets."""
    flair = ComboBox(name="flair_layer", label="FLAIR")
    pre = ComboBox(name="pre_contrast_layer", label="pre-contrast")
    post = ComboBox(name="post_contrast_layer", label="post-contrast")
    mapping = Container(name="mapping", widgets=[flair, pre, post], label="Layers")
    mapping.margins = (0, 0, 0, 0)
    mapping.visible = False
    model = ComboBox(
        name="model",
        label="Model",
        tooltip="Models in the store, with the Dice they reached on their validation patients",
    )
    refresh = PushButton(name="refresh_models", text="↻", tooltip="Re-read the model store")
    model_row = _row("model_row", "Model", model, refresh)
    spacing = [
        FloatSpinBox(
            name=f"spacing_{axis}",
            value=1.0,
            min=0.001,
            max=100.0,
            step=0.1,
            enabled=False,
            tooltip=f"voxel size along {axis} in mm",
        )  # fmt: skip
        for axis in "zyx"
    ]
    for box in spacing:  # no +/- buttons: three boxes fit a narrow dock
        box.native.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
    use_spacing = CheckBox(
        name="use_spacing", text="z, y, x", tooltip="Give the tumour volume in mL too"
    )
    spacing_row = _row("spacing_row", "Spacing (mm)", use_spacing, *spacing)
    run = PushButton(name="run", text="Run")
    cancel = PushButton(name="cancel", text="Cancel")
    buttons = _row("buttons", " ", run, cancel)
    return _narrow(
        Container(
            name="segment_form",
            widgets=[
                ComboBox(
                    name="patient",
                    label="Patient",
                    tooltip="The patient to segment; selecting any of its layers picks it",
                ),
                mapping,
                model_row,
                ComboBox(name="device", label="Device", choices=device_choices()),
                FloatSlider(
                    name="threshold",
                    label="Threshold",
                    value=0.5,
                    min=0.01,
                    max=0.99,
                    step=0.01,
                    tracking=False,
                ),
                ComboBox(
                    name="postprocess",
                    label="Post-processing",
                    choices=[(_POSTPROCESS_LABELS.get(k, k), k) for k in POSTPROCESS_CHOICES[::-1]],
                ),
                CheckBox(
                    name="tta",
                    text="flip test-time augmentation",
                    tooltip="Average with the left-right flipped volume: slower; takes effect "
                    "on Run",
                ),
                spacing_row,
                buttons,
            ],
        )
    )


UNITS = ("rounds", "epochs", "minutes")


def finetune_form() -> Container:
    """Base model, device, budget and the new model's name, then Fine-tune / Cancel."""
    base = ComboBox(name="base_model", label="Base model")
    refresh = PushButton(name="refresh_models", text="↻", tooltip="Re-read the model store")
    budget = FloatSpinBox(name="budget", value=1.0, min=0.1, max=10000.0, step=0.5)
    unit = ComboBox(name="budget_unit", choices=UNITS, value="rounds")
    run = PushButton(name="run", text="Fine-tune")
    cancel = PushButton(name="cancel", text="Cancel")
    return _narrow(
        Container(
            name="finetune_form",
            widgets=[
                _row("base_row", "Base model", base, refresh),
                ComboBox(name="device", label="Device", choices=device_choices()),
                _row("budget_row", "Budget", budget, unit),
                LineEdit(
                    name="model_name",
                    label="New model name",
                    tooltip="Letters, digits, '.', '_' or '-'; '-v2', '-v3'… is added if the name "
                    "is taken",
                ),
                _row("buttons", " ", run, cancel),
            ],
        )
    )


def _row(name: str, label: str, *widgets) -> Container:
    row = Container(name=name, label=label, layout="horizontal", labels=False, widgets=widgets)
    row.margins = (0, 0, 0, 0)
    return row


def _narrow(form: Container) -> Container:
    """Let the form shrink to a narrow dock: combo boxes do not widen to their longest item
    (a model label), spin boxes stay small; the dock then never cuts a widget off."""
    from qtpy.QtWidgets import QComboBox, QPushButton

    for combo in form.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    for box in form.native.findChildren(QAbstractSpinBox):
        box.setMinimumWidth(40)
    for button in form.native.findChildren(QPushButton):
        if button.text() == "↻":
            button.setMaximumWidth(36)
    return form

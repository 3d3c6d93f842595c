"""The Click correction dock: positive and negative clicks on a patient's mask, each re-segmenting
the slices around it in a worker thread (the GUI never waits for the network).

The view only: the clicks, their queue, the merge into the Labels layer and the review record are
:class:`napari_lggseg.click_layers.ClickController` (one per mask), the network is
:class:`napari_lggseg.interactive.ClickSession`. The dock picks the mask (the active one, or the
patient's latest prediction; a combo when several are open), the interactive model and the kind
of a plain click; "Start clicking" adds the "<patient> clicks" Points layer in napari's add mode.
Shift-click makes the other kind of click; Undo (or Ctrl-Z on the clicks layer) takes the last
one back. Clicks are short jobs run one at a time in a napari thread worker, not through
:class:`._runner.RunController` (no progress, no Cancel: each takes well under a second).
"""

from __future__ import annotations

import napari.viewer
from magicgui.widgets import ComboBox, Container, PushButton, RadioButtons
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from ..click_jobs import mask_layers
from ..click_layers import NEGATIVE_KEY, ClickController
from ..layer_meta import Role, read_meta, unwrap_viewer
from ..review import tracker_for
from ._common import scrolling_body, segment_widget_for, status_label
from ._forms import _narrow, _row

ADD, REMOVE = "add tumour (+)", "remove false region (−)"
_DOES = {ADD: "adds tumour", REMOVE: "removes a false region"}


class _Life:
    """What the dock's end must stop; outlives the dock's C++ object (as RunController does),
    so Qt's ``destroyed`` never calls into a deleted widget."""

    def __init__(self):
        self.closed = False
        self.hooks: list = []
        self.controllers: dict[int, ClickController] = {}

    def close(self, *_) -> None:
        if self.closed:
            return
        self.closed = True
        for emitter, callback in self.hooks:
            emitter.disconnect(callback)
        for ctrl in self.controllers.values():
            ctrl.close()


def clicks_form() -> Container:
    mask = ComboBox(name="mask", label="Mask", tooltip="The prediction or corrections to correct")
    model = ComboBox(
        name="model",
        label="Model",
        tooltip="Click correction models in the store; taken when you start clicking on a mask",
    )
    kind = RadioButtons(
        name="kind",
        label="A click",
        choices=[ADD, REMOVE],
        value=ADD,
        tooltip=f"{NEGATIVE_KEY}-click gives the other kind",
    )
    start = PushButton(name="start", text="Start clicking")
    undo = PushButton(name="undo", text="Undo click", tooltip="Ctrl-Z on the clicks layer")
    return _narrow(
        Container(
            name="clicks_form",
            widgets=[mask, model, kind, _row("buttons", " ", start, undo)],
        )
    )


def interactive_models() -> list[str]:
    from ..model_cards import is_interactive
    from ..models import list_models

    return [i.name for i in list_models() if is_interactive(i.card) and not i.problem]


class ClicksWidget(QWidget):
    """Click correction: see the module docstring."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        from ..warmup import for_segmentation

        for_segmentation()  # now, not in the first click's worker (see warmup.py)
        from .. import interactive  # noqa: F401

        self.viewer = unwrap_viewer(viewer)
        self.tracker = tracker_for(self.viewer)  # from now on, painted slices are recorded
        self.form = f = clicks_form()
        self.status = status_label("status")
        self.hint = status_label("hint")
        self._life = _Life()
        self._models: dict = {}  # name -> ClickModel, loaded in the worker on first use
        self._worker = None
        body = scrolling_body(self)
        for w in (f.native, self.hint, self.status):
            body.addWidget(w)
        body.addStretch(1)
        f.model.choices = interactive_models()
        f.kind.changed.connect(self._on_kind)
        f.buttons.start.changed.connect(lambda *_: self.start())
        f.buttons.undo.changed.connect(lambda *_: self.undo())
        self._life.hooks = [
            (self.viewer.layers.events.inserted, self._refresh_masks),
            (self.viewer.layers.events.removed, self._refresh_masks),
            (self.viewer.layers.selection.events.active, self._follow_active),
        ]
        for emitter, callback in self._life.hooks:
            emitter.connect(callback)
        self.destroyed.connect(self._life.close)
        self._on_kind()
        self._refresh_masks()
        self._follow_active()
        if not f.model.choices:
            self.say(
                "No click correction model in the store (the package's lgg-clicks is missing)."
            )

    # ------------------------------------------------------------------ choices

    @property
    def mask_layer(self):
        return self.form.mask.value

    @property
    def positive(self) -> bool:
        return self.form.kind.value == ADD

    def set_positive(self, positive: bool) -> None:
        self.form.kind.value = ADD if positive else REMOVE

    def _on_kind(self, *_) -> None:
        for ctrl in self.controllers.values():
            ctrl.set_positive(self.positive)
        plain, other = (ADD, REMOVE) if self.positive else (REMOVE, ADD)
        self.hint.setText(
            f"On the clicks layer (add mode) a click {_DOES[plain]}, {NEGATIVE_KEY}-click "
            f"{_DOES[other]}; Ctrl-Z undoes the last click."
        )

    def _refresh_masks(self, *_) -> None:
        if self._closed:
            return
        combo = self.form.mask
        current = combo.value
        with combo.changed.blocked():
            combo.choices = [(lyr.name, lyr) for lyr in mask_layers(self.viewer.layers)]
            if current is not None and current in self.viewer.layers:
                combo.value = current
        for key in [k for k, c in self.controllers.items() if c.closed]:
            del self.controllers[key]

    def _follow_active(self, *_) -> None:
        """Selecting a mask (or its clicks layer) picks it."""
        layer = self.viewer.layers.selection.active
        lgg = read_meta(layer) if layer is not None else None
        if lgg and lgg.get("role") == Role.CLICKS:
            layer = next((c.labels for c in self.controllers.values() if c.points is layer), None)
        if layer is not None and layer in mask_layers(self.viewer.layers):
            self.form.mask.value = layer

    # ------------------------------------------------------------------ clicking

    def controller(self, labels=None) -> ClickController | None:
        """The chosen mask's controller (None before Start clicking)."""
        labels = labels if labels is not None else self.mask_layer
        ctrl = self.controllers.get(id(labels))
        return ctrl if ctrl is not None and not ctrl.closed and ctrl.labels is labels else None

    def start(self) -> ClickController | None:
        """Add the chosen mask's clicks layer (once), make it active in add mode, and prepare
        the network for it; None (with the reason) when there is no mask or model."""
        labels, model = self.mask_layer, self.form.model.value
        if labels is None:
            self.say("No mask to correct: segment a patient first (Segment tumour).")
            return None
        if model is None:
            self.say("No click correction model in the store.")
            return None
        ctrl = self.controller(labels)
        if ctrl is None:
            seg = segment_widget_for(self.viewer)
            ctrl = ClickController(
                self.viewer,
                labels,
                make_session=lambda: self._session(model),
                notify=self._pump,
                say=self.say,
                defer=lambda fn: QTimer.singleShot(0, fn),
                results=lambda: seg.session.results if seg is not None else {},
            )
            ctrl.set_positive(self.positive)
            self.controllers[id(labels)] = ctrl
            ctrl.prepare()
        self.viewer.layers.selection.active = ctrl.points
        ctrl.points.mode = "add"
        return ctrl

    def undo(self) -> None:
        ctrl = self.controller()
        if ctrl is None:
            self.say("No clicks on this mask yet.")
        else:
            ctrl.undo()

    def _session(self, model: str):
        """Worker thread: a new ClickSession on the (cached) model."""
        from ..interactive import ClickModel, ClickSession

        if model not in self._models:
            self._models[model] = ClickModel.from_store(model)
        return ClickSession(self._models[model], device="auto")

    @property
    def is_busy(self) -> bool:
        return self._worker is not None or any(c.waiting for c in self.controllers.values())

    def _pump(self) -> None:
        """Start the next waiting job in a worker (one at a time, for all masks)."""
        if self._worker is not None or self._closed:
            return
        for ctrl in list(self.controllers.values()):
            job = ctrl.take_job()
            if job is not None:
                break
        else:
            return
        worker = create_worker(job.run, ctrl.session, ctrl.make_session, _start_thread=False)
        worker.returned.connect(lambda result: None if self._closed else ctrl.finish(result))
        worker.errored.connect(lambda exc: None if self._closed else ctrl.fail(job, exc))
        worker.finished.connect(self._finished)
        self._worker = worker
        worker.start()

    def _finished(self) -> None:
        self._worker = None
        self._pump()

    def say(self, text: str) -> None:
        if not self._closed:
            self.status.setText(text)

    @property
    def _closed(self) -> bool:
        return self._life.closed

    @property
    def controllers(self) -> dict[int, ClickController]:
        return self._life.controllers

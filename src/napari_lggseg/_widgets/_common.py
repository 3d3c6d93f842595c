"""Qt plumbing shared by the two widgets: a thread-safe progress relay, the run's cancel state
(also raised when the viewer closes), and a registry so Fine-tune can reach Segment tumour."""

from __future__ import annotations

import threading
import time
import weakref

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox, QProgressBar

from ..layer_meta import PLUGIN as PROVIDER
from ..layer_meta import unwrap_viewer as real_viewer


class Relay(QObject):
    """Carries events from a worker thread to the GUI thread (a queued Qt signal). Created per
    run without a parent, so a closed widget never leaves the worker holding a deleted object."""

    event = Signal(object)


class Progress(QProgressBar):
    """A progress bar with a fixed range (0..1000) that repaints at most ten times a second:
    every repaint of a widget beside napari's OpenGL canvas recomposes the window, so fewer,
    same-sized updates keep the event loop free."""

    STEPS = 1000

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.setRange(0, self.STEPS)
        self.setValue(0)
        self._shown = 0.0

    def set_fraction(self, fraction: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._shown >= 0.1:
            self._shown = now
            self.setValue(int(round(self.STEPS * min(max(fraction, 0.0), 1.0))))

    @property
    def fraction(self) -> float:
        return self.value() / self.STEPS


class RunState:
    """One run's flags, shared with its worker: ``cancel`` stops the core at its next check;
    ``closed`` means the viewer went away, so the worker must not save or touch Qt."""

    def __init__(self):
        self.cancel = threading.Event()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.cancel.set()


class Life:
    """Outlives the widget's C++ object: set when Qt destroys the widget (the viewer closed)."""

    def __init__(self):
        self.closed = False
        self.state: RunState | None = None
        self.on_close: list = []

    def close(self, *_):
        if self.closed:
            return
        self.closed = True
        if self.state is not None:
            self.state.close()
        for cb in self.on_close:
            cb()
        self.on_close.clear()


def register_task(viewer, description: str, state: RunState):
    """Tell napari a long task runs: closing the window then asks first (when the user closes
    it) and cancels the run. napari's task-status API is private, so this is best effort."""
    window = getattr(viewer, "window", None)
    register = getattr(window, "_register_task_status", None)
    if register is None:
        return None
    try:
        from napari.utils.task_status import Status

        return register(PROVIDER, Status.BUSY, description, cancel_callback=state.close)
    except Exception:  # an older or newer napari without this hook: the widget's own hook remains
        return None


def finish_task(viewer, task_id, status: str = "COMPLETED") -> None:
    if task_id is None:
        return
    try:
        from napari.utils.task_status import Status

        viewer.window._update_task_status(task_id, getattr(Status, status))
    except Exception:
        pass


# --------------------------------------------------------------------------- widget registry

_SEGMENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_segment_widget(viewer, widget) -> None:
    _SEGMENT[real_viewer(viewer)] = weakref.ref(widget)


def segment_widget_for(viewer):
    """The Segment tumour widget docked in ``viewer``, or None."""
    ref = _SEGMENT.get(real_viewer(viewer))
    widget = ref() if ref else None
    if widget is None or widget._life.closed:
        return None
    return widget


# --------------------------------------------------------------------------- choices


def fill_model_combo(combo: QComboBox, select: str | None = None) -> None:
    """Every model in the store, labelled with its validation Dice; the item data is the name."""
    from ..models import default_model_name, list_models

    current = select or combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    infos = list_models()
    for info in infos:
        combo.addItem(info.label(), info.name)
    if not infos:
        combo.addItem("(no model installed)", None)
    if current is None and infos:
        try:
            current = default_model_name("cpu")
        except Exception:
            current = infos[0].name
    i = combo.findData(current)
    combo.setCurrentIndex(max(i, 0))
    combo.blockSignals(False)


def fill_device_combo(combo: QComboBox) -> None:
    from ..devices import available_devices

    combo.addItem("auto", "auto")
    for d in available_devices():
        combo.addItem(d, d)

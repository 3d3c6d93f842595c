"""One run controller for every widget that runs long work: the run's state, its napari thread
worker, the relay of its events to the GUI thread, the progress bar, napari's task status, Cancel,
and the end of the run.

A job is a plain function ``job(*args, state, emit)`` run in a worker thread: it checks
``state.cancel`` and reports through ``emit(RunEvent(...))``; its return value (None when it was
cancelled) goes to the widget's ``on_returned`` on the GUI thread. The controller outlives the
widget's C++ object: when Qt destroys the widget (the viewer closed) it cancels the run and stops
delivering anything, so a worker never touches a deleted widget. The Segment tumour and Fine-tune
widgets use it, and so can any later one (a worklist that prefetches predictions).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# at import (when a widget is built), not in the first run: an import then is a GUI stall
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QProgressBar

from ..layer_meta import PLUGIN


@dataclass(frozen=True)
class RunEvent:
    """What a job reports: ``stage`` (``text`` for the status line), ``progress`` (``fraction``
    done, 0..1), or any other kind a widget handles itself (``data``, e.g. an epoch's figures)."""

    kind: str
    text: str = ""
    fraction: float | None = None
    data: dict = field(default_factory=dict)


class RunState:
    """One run's flags, shared with its worker: ``cancel`` stops the core at its next check;
    ``closed`` means the viewer went away, so the worker must not save or touch Qt."""

    def __init__(self):
        self.cancel = threading.Event()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.cancel.set()


class _Relay(QObject):
    """Carries events from a worker thread to the GUI thread (a queued Qt signal). Made per run
    without a parent, so a closed widget never leaves the worker holding a deleted object."""

    event = Signal(object)


class ThrottledProgressBar(QProgressBar):
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


class RunController:
    """Runs one job at a time for a widget (see the module docstring).

    ``run_button`` and ``cancel_button`` are enabled to match the run (``can_run`` says whether
    Run may be enabled when idle); ``set_status`` shows stage texts and the end of a run;
    ``on_event`` gets every event that is neither a stage nor progress."""

    def __init__(
        self,
        viewer,
        owner,
        run_button,
        cancel_button,
        set_status: Callable[[str], None],
        on_event: Callable[[RunEvent], None] | None = None,
        can_run: Callable[[], bool] = lambda: True,
    ):
        self.viewer = viewer
        self.progress = ThrottledProgressBar(objectName="progress")
        self._run_button, self._cancel_button = run_button, cancel_button
        self._set_status, self._on_event, self._can_run = set_status, on_event, can_run
        self.closed = False
        self.on_close: list[Callable[[], None]] = []
        self._state: RunState | None = None
        self._worker = None
        self._task = None
        self._on_returned = None
        self._failure = "Failed"
        self._cancel_note = "Cancelling…"
        self._succeeded = False
        self._when_done: list[Callable[[], None]] = []
        owner.destroyed.connect(self.close)
        cancel_button.changed.connect(lambda *_: self.cancel())
        cancel_button.enabled = False

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    @property
    def cancelling(self) -> bool:
        return self._state is not None and self._state.cancel.is_set()

    def start(
        self,
        job: Callable,
        *args,
        description: str,
        on_returned: Callable[[object], None],
        failure: str = "Failed",
        cancel_note: str = "Cancelling…",
        status: str = "",
    ) -> bool:
        """Start ``job(*args, state, emit)`` in a worker; False when a run is already going."""
        if self._worker is not None or self.closed:
            return False
        state, relay = RunState(), _Relay()
        relay.event.connect(self._relay_event)
        worker = create_worker(job, *args, state, relay.event.emit, _start_thread=False)
        worker._lggseg_relay = relay  # lives as long as the worker, not the widget
        worker.returned.connect(self._returned)
        worker.errored.connect(self._errored)
        worker.finished.connect(self._finished)
        self._worker, self._state, self._on_returned = worker, state, on_returned
        self._failure, self._cancel_note, self._succeeded = failure, cancel_note, False
        self._task = _register_task(self.viewer, description, state)
        self._run_button.enabled = False
        self._cancel_button.enabled = True
        self.progress.set_fraction(0.0, force=True)
        if status:
            self._set_status(status)
        worker.start()
        return True

    def cancel(self) -> None:
        if self._worker is not None and self._state is not None:
            self._state.cancel.set()
            self._cancel_button.enabled = False
            self._set_status(self._cancel_note)

    def close(self, *_) -> None:
        """The widget is going away: cancel the run, deliver nothing more."""
        if self.closed:
            return
        self.closed = True
        if self._state is not None:
            self._state.close()
        for callback in self.on_close:
            callback()
        self.on_close.clear()

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, after the current run has ended and its result was placed
        (at once when no run is going)."""
        if self._worker is None:
            callback()
        else:
            self._when_done.append(callback)

    def refresh_buttons(self) -> None:
        if not self.closed:
            self._run_button.enabled = self._worker is None and self._can_run()

    # ------------------------------------------------------------------ worker signals

    def _relay_event(self, ev: RunEvent) -> None:
        if self.closed or self._state is None or self._state.cancel.is_set():
            return
        if ev.kind == "progress":
            self.progress.set_fraction(ev.fraction or 0.0, force=(ev.fraction or 0.0) >= 1.0)
        elif ev.kind == "stage":
            self._set_status(ev.text[:1].upper() + ev.text[1:] + "…")
        elif self._on_event is not None:
            self._on_event(ev)

    def _returned(self, out) -> None:
        if self.closed:
            return
        self._succeeded = out is not None
        self._on_returned(out)

    def _errored(self, exc) -> None:
        if not self.closed:
            self._set_status(f"{self._failure}: {exc}")

    def _finished(self) -> None:
        state = self._state
        _finish_task(self.viewer, self._task, state is not None and state.cancel.is_set())
        self._worker, self._task, self._state = None, None, None
        callbacks, self._when_done = self._when_done, []
        if not self.closed:
            self._cancel_button.enabled = False
            self.refresh_buttons()
            self.progress.set_fraction(float(self._succeeded), force=True)
        for callback in callbacks:
            callback()


# ------------------------------------------------------------------ napari's task status


def _register_task(viewer, description: str, state: RunState):
    """Tell napari a long task runs: closing the window then asks first (when the user closes
    it) and cancels the run. napari's task-status API is private, so this is best effort."""
    register = getattr(getattr(viewer, "window", None), "_register_task_status", None)
    if register is None:
        return None
    try:
        from napari.utils.task_status import Status

        return register(PLUGIN, Status.BUSY, description, cancel_callback=state.close)
    except Exception:  # an older or newer napari without this hook: the widget's own hook remains
        return None


def _finish_task(viewer, task_id, cancelled: bool) -> None:
    if task_id is None:
        return
    try:
        from napari.utils.task_status import Status

        status = Status.CANCELLED if cancelled else Status.COMPLETED
        viewer.window._update_task_status(task_id, status)
    except Exception:
        pass

"""The Annotation project dock: a worklist over a cohort (issue #18), a thin view over
:class:`napari_lggseg.project.Project`.

* **Create or open** a project: a data source (LGG root, folder of NIfTI/DICOM cases) and a
  project folder. A project open elsewhere names its holder (take-over is offered only for a
  holder on another machine, which this one cannot check); a moved source lists the missing
  cases and Relink points the project at the folder put in "Data source".
* **The table** shows each case's status, tumour volume, uncertainty, the model that predicted it,
  when it was last edited and why it could not be read; the Dice only when asked.
* **Next / Previous / Done / double-click** open a case: the previous one is saved and its layers
  closed, the new one's images and mask (its last edit, else the prediction) appear. Predictions
  of the cases that need one are computed in the background, the next cases first, so Next
  finds them ready; the next case is also read ahead.
* **Autosave**: every edit of the case's mask is saved ~2 s after the last stroke, off the GUI
  thread, atomically, in the project folder; a folder that cannot be written says so here and
  the edits wait in memory, retried every few seconds.
* **Rounds** (#19): after every k done cases a fine-tuning round runs in the background, then the
  cases not yet opened are predicted again with its model.
* **Shortcuts** (napari key bindings, see ``_project_form.SHORTCUTS``), unbound when the dock
  closes.

The background work lives in :mod:`._project_work`; the form and the table in
:mod:`._project_form`.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import napari.viewer
from magicgui.widgets import PushButton
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QWidget

from ..layer_meta import unwrap_viewer
from ..project import Project, ProjectError, ProjectLockedError, ProjectWriteError
from ..project_store import may_take_over
from ..review import tracker_for
from ._common import refill_models, scrolling_body, status_label
from ._project_background import BackgroundMixin
from ._project_cases import RETRY_MS, CasesMixin
from ._project_form import CaseTable, project_form
from ._project_work import Autosaver, IOQueue, bind_shortcuts
from ._runner import RunController


class ProjectWidget(CasesMixin, BackgroundMixin, QWidget):
    """Annotation project: see the module docstring."""

    def __init__(self, viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        from ..warmup import for_segmentation

        for_segmentation()  # now, not in the first prediction's worker (see warmup.py)
        self.viewer = unwrap_viewer(viewer)
        self.tracker = tracker_for(self.viewer)
        self.project: Project | None = None
        self.current: str | None = None  # the case on screen
        self.opened = None  # its OpenedCase
        self.case_layers: list = []
        self.mask_layer = None
        self.round_minutes: float | None = None  # a round's budget; None: run_round's own
        self.last_open_seconds: float | None = None  # from Next until the case was on screen
        self.rounds_run = 0
        self._opening: str | None = None
        self._open_request: str | None = None
        self._open_started = 0.0
        self._data: dict = {}  # case id -> CaseData read ahead (the next two cases)
        self._read_tried: set[str] = set()
        self._segmenters: dict = {}
        self._uncertainty = None  # per-slice uncertainty of the open case's prediction
        self._run_request: str | None = None
        self._round_wanted = False
        self._docked = False
        self._paused = False  # Cancel pressed: no more background predictions until asked
        self._job = ("", None, False)  # kind, case, returned
        self._job_project = None
        self._removing = None  # the previous case's layers, removed once the new one shows
        self.form = f = project_form()
        self.table = CaseTable()
        self.status, self.work_status = status_label("status"), status_label("work")
        self.save_status = status_label("save_status")
        self.io = IOQueue()
        self.autosave = Autosaver(self._save_snapshot)
        self._retry = QTimer()
        self._retry.setInterval(RETRY_MS)
        self._retry.timeout.connect(self._retry_flush)
        self._hidden_run = PushButton(visible=False)  # the runner's; Run has its own rules
        self.runner = RunController(
            self.viewer, self, self._hidden_run, f.tools.cancel, self.work_status.setText
        )
        body = scrolling_body(self)
        for w in (
            f.native,
            self.runner.progress,
            self.status,
            self.work_status,
            self.save_status,
            self.table,
        ):
            body.addWidget(w)
        self._connect()
        refill_models(f.model_row.model)
        self._unbind = bind_shortcuts(
            self.viewer,
            {
                "next": self.next_case,
                "previous": self.previous_case,
                "done": self.done,
                "mark": self.mark_slice,
                "uncertain": self.next_uncertain_slice,
                "run": self.run,
            },
        )
        self.runner.on_close.append(self._on_close)
        self._update_buttons()

    def _connect(self) -> None:
        f = self.form
        f.folder_buttons.create.changed.connect(lambda *_: self.create_project())
        f.folder_buttons.open.changed.connect(lambda *_: self.open_project())
        f.folder_buttons.relink.changed.connect(lambda *_: self.relink())
        f.folder_buttons.take_over.changed.connect(lambda *_: self.open_project(take_over=True))
        f.model_row.model.changed.connect(self._on_model_changed)
        f.model_row.refresh_models.changed.connect(lambda *_: refill_models(f.model_row.model))
        f.order.changed.connect(self._on_order_changed)
        f.round_every.changed.connect(self._on_round_every_changed)
        f.show_dice.changed.connect(self._on_show_dice_changed)
        f.nav.previous.changed.connect(lambda *_: self.previous_case())
        f.nav.next.changed.connect(lambda *_: self.next_case())
        f.nav.done.changed.connect(lambda *_: self.done())
        f.tools.mark.changed.connect(lambda *_: self.mark_slice())
        f.tools.uncertain.changed.connect(lambda *_: self.next_uncertain_slice())
        f.tools.run.changed.connect(lambda *_: self.run())
        f.tools.cancel.changed.connect(lambda *_: setattr(self, "_paused", True))
        self.table.open_requested.connect(self.open_case)
        self.tracker.connect(self._on_review_changed)

    # ------------------------------------------------------------------ the project

    def create_project(self, source=None, folder=None) -> bool:
        """A new project over ``source`` (default: the form's) in ``folder``."""
        source, folder = source or self.form.source.value, folder or self.form.folder.value
        if not _chosen(source) or not _chosen(folder):
            self._say("Choose a data source and an empty project folder first.")
            return False
        self.close_project()
        try:
            project = Project.create(
                source,
                folder,
                order=self.form.order.value,
                round_every=int(self.form.round_every.value),
            )
        except ProjectError as exc:
            self._say(f"Cannot create the project: {exc}")
            return False
        self._adopt(project, f"Created a project of {len(project.rows())} cases in {folder}.")
        return True

    def open_project(self, folder=None, take_over: bool = False) -> bool:
        """Open the project in ``folder`` (default: the form's); its current case opens too."""
        folder = folder or self.form.folder.value
        if not _chosen(folder):
            self._say("Choose the project folder first.")
            return False
        self.close_project()
        self.form.folder_buttons.take_over.visible = False
        try:
            project = Project.open(folder, take_over=take_over)
        except ProjectLockedError as exc:
            self.form.folder.value = folder
            self.form.folder_buttons.take_over.visible = may_take_over(exc.holder)
            self._say(f"Cannot open the project: {exc}")
            return False
        except ProjectError as exc:
            self._say(f"Cannot open the project: {exc}")
            return False
        self._adopt(project, f"Opened the project in {folder}.")
        if project.current_case and not project.missing_cases:
            self.open_case(project.current_case)
        return True

    def _adopt(self, project: Project, message: str) -> None:
        self.project = project
        f, s = self.form, project.settings
        with f.order.changed.blocked(), f.round_every.changed.blocked():
            f.order.value, f.round_every.value = s.order, s.round_every
        with f.show_dice.changed.blocked():
            f.show_dice.value = s.show_dice
        f.source.value, f.folder.value = project.source.root, project.folder
        model = f.model_row.model
        if project.current_model in model.choices:
            with model.changed.blocked():
                model.value = project.current_model
        elif model.value is not None:
            if project.current_model is not None:
                message += f" Its model {project.current_model} is not in the store: "
                message += f"the cases not opened yet are predicted with {model.value}."
            project.use_model(model.value)
        self._say(message + self._missing_note())
        self._refresh()
        self._pump()

    def _missing_note(self) -> str:
        missing = self.project.missing_cases
        self.form.folder_buttons.relink.visible = bool(missing)
        if not missing:
            return ""
        return (
            f" {len(missing)} of its {len(self.project.rows())} cases are not in "
            f"{self.project.source.root} (moved?): put their new place in 'Data source' and "
            "press Relink."
        )

    def relink(self, folder=None) -> bool:
        """Point the project at its moved data (default: the folder in 'Data source')."""
        folder = folder or self.form.source.value
        if self.project is None or not _chosen(folder):
            return False
        try:
            new = self.project.relink(folder)
        except ProjectError as exc:
            self._say(f"Cannot relink: {exc}")
            return False
        self._read_tried.clear()
        self._say(f"Relinked to {folder}" + (f"; {len(new)} new case(s)." if new else "."))
        self._missing_note()
        self._refresh()
        self._pump()
        return True

    def close_project(self) -> None:
        """Save the open case, close its layers and the project (its lock is released)."""
        project = self.project
        if project is None:
            return
        self._save_all_now()
        self._close_case_layers()
        if not self.runner.closed:
            self.runner.cancel()
        self.current = self.opened = None
        self._data.clear()
        self._read_tried.clear()
        self.project = None
        try:
            project.close()
        except ProjectWriteError as exc:
            warnings.warn(f"{exc}; these edits are lost when napari closes", stacklevel=2)
            project.close(force=True)
        if not self.runner.closed:
            self.table.show_rows([], None, False)
            self._update_buttons()

    def _save_all_now(self) -> None:
        """On the GUI thread (closing): the queued saves and the open case's last edit."""
        snap = self.autosave.snapshot()
        leftovers = self.io.close()
        self.io = IOQueue()
        try:
            for task in leftovers:
                task.fn(*task.args)
            if snap is not None:
                self.project.save_edit(*snap)
        except ProjectError as exc:
            if self.runner.closed:
                warnings.warn(str(exc), stacklevel=2)
            else:
                self.save_status.setText(str(exc))

    # ------------------------------------------------------------------ settings
    # written through the file queue: the project file waits for a save or a read in progress,
    # which the GUI thread must not

    def _setting(self, change, *args) -> None:
        def applied(_):
            self._paused = False
            self._refresh()
            self._pump()

        self.io.submit("save", change, *args, on_done=applied, on_error=self._on_save_failed)

    def _on_model_changed(self, *_) -> None:
        name = self.form.model_row.model.value
        if self.project is not None and name and name != self.project.current_model:
            self._setting(self.project.use_model, name)

    def _on_order_changed(self, order) -> None:
        if self.project is not None:
            self._setting(self.project.set_order, order)

    def _on_round_every_changed(self, k) -> None:
        if self.project is not None:
            self._setting(self.project.set_round_every, int(k))

    def _on_show_dice_changed(self, show) -> None:
        if self.project is not None:
            self._setting(self.project.set_show_dice, bool(show))

    # ------------------------------------------------------------------ view

    @property
    def idle(self) -> bool:
        """Nothing running: no file work, no model job, no case being opened or closed (tests,
        scripts)."""
        busy = self.io.busy or self.runner.is_running or self._removing is not None
        return not (busy or self._opening is not None)

    def _refresh(self) -> None:
        if self.runner.closed:
            return
        if self.project is not None:
            self.table.show_rows(self.project.rows(), self.current, self.project.settings.show_dice)
        self._update_buttons()

    def _update_buttons(self) -> None:
        has, case = self.project is not None, self.current is not None
        f = self.form
        for button in (f.nav.next, f.nav.previous):
            button.enabled = has
        for button in (f.nav.done, f.tools.mark, f.tools.uncertain, f.tools.run):
            button.enabled = case

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def event(self, ev) -> bool:
        """Closing the dock (its x) takes this widget out of it without deleting it, so Qt's
        ``destroyed`` may come late or never: leaving the dock counts as closing."""
        if ev.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked and not self.runner.closed:
                self.runner.close()  # cancels the background work, then calls _on_close
        return super().event(ev)

    def _on_close(self) -> None:
        """The dock is going away (Qt deleted it): keys unbound, edits saved, project closed."""
        self._unbind()
        with contextlib.suppress(RuntimeError):
            self._retry.stop()
        self.tracker.disconnect(self._on_review_changed)
        self.close_project()
        self.autosave.stop()


def _chosen(path) -> bool:
    return path is not None and str(path) not in ("", ".") and Path(path).name != ""

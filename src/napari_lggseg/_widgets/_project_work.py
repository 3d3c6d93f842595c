"""The Annotation project dock's background work, none of it on the GUI thread: one queue for the
project's file work (autosave, opening a case, retrying a write), the autosave debounce, the jobs
the run controller runs (predictions, reading ahead, rounds) and the keyboard shortcuts.

The file queue runs one napari thread worker at a time, in the order asked, so a later autosave
never lands before an earlier one and a case opens only after the previous one is saved. The
model jobs run beside it, so opening the next case never waits for a prediction.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from ..layer_meta import Role, derive_meta, layer_kwargs, read_meta
from ..review import reviewed_slices
from ._project_form import SHORTCUTS
from ._runner import RunEvent

AUTOSAVE_MS = 2000  # after the last stroke: "lose at most the last couple of seconds"


# --------------------------------------------------------------------------- the file queue


@dataclass
class _Task:
    kind: str  # "save" (an edit, Done, a retry) or "open"
    fn: Callable
    args: tuple
    on_done: Callable | None
    on_error: Callable
    ended: threading.Event = field(default_factory=threading.Event)

    def run(self):
        try:
            return self.fn(*self.args)
        finally:
            self.ended.set()


class IOQueue:
    """Project file work in napari thread workers, one at a time, in the order submitted."""

    def __init__(self):
        self._tasks: deque[_Task] = deque()
        self._worker = None
        self._running: _Task | None = None
        self.closed = False

    @property
    def busy(self) -> bool:
        return self._worker is not None or bool(self._tasks)

    def submit(self, kind: str, fn: Callable, *args, on_done=None, on_error) -> None:
        if self.closed:
            return
        self._tasks.append(_Task(kind, fn, args, on_done, on_error))
        self._start_next()

    def _start_next(self) -> None:
        if self._worker is not None or not self._tasks or self.closed:
            return
        task = self._running = self._tasks.popleft()
        connect = {  # an "errored" handler: napari re-raises errors nobody handles
            "returned": lambda out: self._deliver(task.on_done, out),
            "errored": lambda exc: self._deliver(task.on_error, exc),
            "finished": self._finished,
        }
        self._worker = worker = create_worker(task.run, _start_thread=False, _connect=connect)
        worker.start()

    def _deliver(self, callback, value) -> None:
        if callback is not None and not self.closed:
            callback(value)

    def _finished(self) -> None:
        self._worker = self._running = None
        self._start_next()

    def close(self, wait_s: float = 60.0) -> list[_Task]:
        """Stop taking work and wait for the task in progress (a later save must not overtake
        it); returns the saves queued but not started, for the caller to run now."""
        self.closed = True
        if self._running is not None:
            self._running.ended.wait(wait_s)
        left = [t for t in self._tasks if t.kind == "save"]
        self._tasks.clear()
        return left


def save_job(project, case_id: str, mask, reviewed) -> str:
    project.save_edit(case_id, mask, reviewed)
    return case_id


def done_job(project, case_id: str, mask) -> str:
    project.done(case_id, mask)
    return case_id


def flush_job(project) -> None:
    project.flush()


# --------------------------------------------------------------------------- autosave


class Autosaver:
    """Saves the open case's mask ``AUTOSAVE_MS`` after its last edit: a QTimer on the GUI thread
    restarted by every stroke; the array is copied here and ``save(case_id, mask, reviewed)``
    writes it off the GUI thread. A mask equal to the last one saved is not written again."""

    def __init__(self, save: Callable):
        self._save = save
        self.timer = QTimer()  # no parent: it outlives a deleted dock until close() stops it
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTOSAVE_MS)
        self.timer.timeout.connect(self.save_now)
        self.layer = None
        self.case_id: str | None = None
        self._base: np.ndarray | None = None
        self._base_reviewed: list[int] = []
        self.sent = 0  # autosaves handed to the queue

    def watch(self, layer, case_id: str) -> None:
        self.unwatch()
        self.layer, self.case_id = layer, case_id
        self.rebase()
        layer.events.paint.connect(self.schedule)
        layer.events.data.connect(self.schedule)
        layer.events.set_data.connect(self._maybe)  # undo/redo; also every refresh

    def unwatch(self) -> None:
        self.stop()
        if self.layer is not None:
            self.layer.events.paint.disconnect(self.schedule)
            self.layer.events.data.disconnect(self.schedule)
            self.layer.events.set_data.disconnect(self._maybe)
        self.layer = self.case_id = None

    def rebase(self) -> None:
        """What the layer holds now counts as saved (it came from disk, or the program set it)."""
        if self.layer is not None:
            self._base = np.array(self.layer.data, copy=True)
            self._base_reviewed = reviewed_slices(self.layer)

    def schedule(self, *_) -> None:
        if self.layer is not None:
            self.timer.start()  # restarts: the save comes after the last stroke

    def _maybe(self, *_) -> None:
        if self.layer is not None and not self.timer.isActive():
            self.timer.start()  # never postpones a due save (refreshes come while scrolling)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # Qt deleted the timer (the app is quitting)
            self.timer.stop()

    def snapshot(self):
        """(case id, mask, reviewed slices) when the mask differs from the last one saved, and
        from now on it counts as saved; None when nothing changed."""
        self.stop()
        if self.layer is None:
            return None
        mask = np.array(self.layer.data, copy=True)
        reviewed = reviewed_slices(self.layer)
        if np.array_equal(mask, self._base) and reviewed == self._base_reviewed:
            return None
        self._base, self._base_reviewed = mask, reviewed
        return self.case_id, mask, reviewed

    def save_now(self) -> bool:
        snap = self.snapshot()
        if snap is not None:
            self.sent += 1
            self._save(*snap)
        return snap is not None


# --------------------------------------------------------------------------- opening a case


@dataclass
class Shown:
    """What the GUI thread adds for a case: layer tuples built in the worker (contrast limits
    and metadata cost tens of ms a layer), the mask layer's arguments, and what the Segment
    tumour dock needs to list the slices to check first."""

    opened: object  # project.OpenedCase
    layers: list  # (data, kwargs, kind) of the images (and the expert mask when shown)
    mask: tuple | None  # (data, kwargs) of the case's Labels layer, None until predicted
    saved_note: str | None = None  # why the previous case's edit waits in memory
    segmentation: object | None = None
    review: list = field(default_factory=list)


def case_layer_tuples(project, data, with_expert: bool) -> list:
    """The case's images as the reader would give them (metadata, contrast, geometry)."""
    from .._reader import case_layers, patient_layers

    if project.source.kind == "lgg":
        files = data.extra.get("slice_files", [])
        expert = data.expert_mask if with_expert else None
        return patient_layers(data.case_id, data.image, expert, data.path, files, False)
    tuples = case_layers(data.extra["case"], ground_truth_visible=False)
    return [t for t in tuples if with_expert or read_meta(t[1])["role"] != Role.GROUND_TRUTH]


def mask_tuple(project, case_id: str, layers: list, prediction, edit) -> tuple | None:
    """The Labels layer of the case: the person's last edit, else the model's prediction; with
    the plugin's metadata (File ▸ Save, review tracking and fine-tuning read it)."""
    if edit is None and prediction is None:
        return None
    flair = next(kw for _d, kw, kind in layers if read_meta(kw).get("sequence") == "FLAIR")
    role = Role.CORRECTIONS if edit is not None else Role.PREDICTION
    meta = derive_meta(
        read_meta(flair),
        role,
        model=(edit.model if edit is not None else None) or getattr(prediction, "model", None),
        reviewed_slices=list(edit.reviewed_slices) if edit is not None else [],
        edited=edit is not None,
        whole_volume_reviewed=bool(edit is not None and edit.whole_volume_reviewed),
        corrections_folder=str(project.correction_folder(case_id)),
    )
    placement = {k: flair[k] for k in ("scale", "translate") if k in flair}
    mask = (edit if edit is not None else prediction).mask
    kwargs = layer_kwargs(f"{case_id} {role}", meta, opacity=0.6, **placement)
    return np.asarray(mask, np.uint8), kwargs


def review_of(prediction) -> tuple[object | None, list]:
    """A Segmentation and its slices to check first, for the Segment tumour dock."""
    if prediction is None:
        return None, []
    from ..inference import Segmentation
    from ..uncertainty import slices_to_review

    prob = prediction.prob
    seg = Segmentation(prob, prediction.threshold, prediction.postprocess, prediction.model)
    return seg, slices_to_review(prob)


def open_job(project, snapshot, case_id: str, data, with_expert: bool, with_review: bool):
    """Save the previous case's last edit, then read the case and build its layers."""
    from ..project import ProjectWriteError

    note = None
    if snapshot is not None:
        try:
            project.save_edit(*snapshot)
        except ProjectWriteError as exc:  # kept in memory by the project; the dock says so
            note = str(exc)
    opened = project.open_case(case_id, data=data)
    layers = case_layer_tuples(project, opened.data, with_expert)
    mask = mask_tuple(project, case_id, layers, opened.prediction, opened.edit)
    seg, review = review_of(opened.prediction) if with_review else (None, [])
    return Shown(opened, layers, mask, note, seg, review)


# --------------------------------------------------------------------------- model jobs


@dataclass
class JobFailed:
    """A background job that could not do its work, and why in words (the run controller's
    workers re-raise exceptions in the GUI thread as tracebacks)."""

    message: str
    case_id: str | None = None


@dataclass
class Predicted:
    """A finished background job for one case: the data read (kept to open it fast), the
    prediction (None for a read-ahead), or why it failed (the row shows it too)."""

    case_id: str
    data: object | None
    prediction: object | None
    error: str | None = None
    review: tuple = (None, [])


def background_threads() -> int:
    """torch threads for predictions nobody waits for: one core less than torch's own choice,
    so the GUI thread keeps one (on 2 cores: the viewer stalled 100-150 ms per network batch
    while scrolling with 2)."""
    import torch

    return max(1, torch.get_num_threads() - 1)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` intra-op torch threads in this worker thread, then restore them."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def predict_job(project, case_id, model, device, cache, with_review, threads, state, emit):
    """Worker thread: predict one case with the project's model (loaded once per device);
    ``threads``: torch threads (None: torch's own, for the case the person waits for)."""
    from ..inference import Cancelled, Segmenter
    from ..models import ModelError
    from ..project import CaseReadError, ProjectError, ProjectWriteError

    def send(ev):
        if not state.closed:
            emit(ev)

    segmenter = cache.get((model, device))
    if segmenter is None:
        send(RunEvent("stage", f"loading model {model}"))
        try:
            segmenter = cache[(model, device)] = Segmenter.from_store(model, device)
        except (ModelError, ValueError) as exc:
            return JobFailed(f"cannot predict with {model}: {exc}", case_id)
    send(RunEvent("stage", f"predicting {case_id} with {model}"))
    data = None
    try:
        data = project.load_case(case_id)
        with torch_threads(threads):
            pred = project.predict(
                case_id,
                segmenter,
                progress=lambda i, n: send(RunEvent("progress", fraction=i / n)),
                cancel=state.cancel,
                data=data,
            )
    except Cancelled:
        return None
    except CaseReadError as exc:
        return Predicted(case_id, None, None, str(exc))
    except ProjectWriteError as exc:  # the prediction is kept in memory by the project
        return Predicted(case_id, data, project.prediction(case_id), str(exc))
    except ProjectError as exc:  # closed meanwhile
        return JobFailed(str(exc), case_id)
    return Predicted(case_id, data, pred, None, review_of(pred) if with_review else (None, []))


def read_job(project, case_id, state, emit):
    """Worker thread: read the next case ahead, so that Next shows it without reading."""
    from ..project import CaseReadError

    if not state.closed:
        emit(RunEvent("stage", f"reading {case_id} ahead"))
    try:
        return Predicted(case_id, project.load_case(case_id), None)
    except CaseReadError as exc:
        return Predicted(case_id, None, None, str(exc))


def rounds_available() -> bool:
    try:
        from ..project_rounds import run_round  # noqa: F401
    except ImportError:
        return False
    return True


def round_job(project, minutes, state, emit):
    """Worker thread: one fine-tuning round of the project (issue #19) through the one round
    function every path uses."""
    from ..models import ModelError
    from ..project import ProjectError
    from ..project_rounds import run_round

    def progress(ev=None, *rest):
        if state.closed:
            return
        fraction = None
        if isinstance(ev, dict):
            fraction = ev.get("fraction")
            if ev.get("total_steps"):
                fraction = max(fraction or 0.0, ev.get("step", 0) / ev["total_steps"])
        elif isinstance(ev, (int, float)) and rest:  # progress(i, n)
            fraction = ev / rest[0] if rest[0] else None
        if fraction is not None:
            emit(RunEvent("progress", fraction=float(fraction)))

    if not state.closed:
        n = len(project.done_cases())
        emit(RunEvent("stage", f"fine-tuning {project.current_model} on {n} done cases"))
    try:
        return run_round(project, minutes=minutes, progress=progress, cancel=state.cancel)
    except (ProjectError, ModelError, ValueError) as exc:
        return JobFailed(f"the fine-tuning round did not run: {exc}")


# --------------------------------------------------------------------------- shortcuts


def bind_shortcuts(viewer, actions: dict[str, Callable]) -> Callable[[], None]:
    """Bind each action's key of ``SHORTCUTS`` on the viewer (layers do not take these keys);
    returns the function that puts back what was bound before."""
    previous = {}
    for name, action in actions.items():
        key = SHORTCUTS[name]

        def pressed(_viewer, action=action):
            action()  # returns None: napari takes a returned generator for press/release

        previous[key] = viewer.bind_key(key, pressed, overwrite=True)

    def unbind() -> None:
        for key, old in previous.items():
            viewer.bind_key(key, old, overwrite=True)

    return unbind

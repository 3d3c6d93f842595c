"""Click correction on a viewer's layers: the Points layer of a mask's clicks, the queue of
clicks and undos, and the merge of each result into the Labels layer. No Qt; napari only through
the layers it is given. The dock (``_widgets/_clicks.py``) runs each job in a worker thread.

* A point added to "<patient> clicks" with napari's Points tool (add mode) is a click: it adds
  tumour (positive) or removes a false region (negative), as the dock's toggle says; Shift-click
  gives the other kind.
* Clicks queue: one job at a time runs :meth:`ClickSession.add_click`; the others wait (drawn
  hollow), so none is lost. A click outside the volume, outside the head or on a slice painted
  by hand is ignored: its point goes away and the status says why.
* The result is merged into the Labels layer, only the slices it changed, never a slice painted
  by hand. Painted slices come from the review record (:mod:`napari_lggseg.review`): the slices
  reviewed other than through clicks (painted with napari's tools, marked reviewed, saved
  reviewed) are locked.
* Undo (the dock's button, Ctrl-Z on the clicks layer) drops the last queued click, or takes
  back the last applied one exactly (:meth:`ClickSession.undo`), and removes its point.
* The mask's metadata carries the clicks (``clicks``, saved in the sidecar by the writer) and
  the slices they changed are reviewed; an undone click's slices stop being reviewed.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from .click_jobs import Click, ClickIgnored, ClickJob, ClickResult, check_click, network_input
from .layer_meta import Role, derive_meta, layer_kwargs, read_meta
from .review import reviewed_slices, touched_slices, tracker_for

POSITIVE_COLOUR = (0.0, 1.0, 0.0, 1.0)  # lime: adds tumour
NEGATIVE_COLOUR = (1.0, 0.0, 1.0, 1.0)  # magenta: removes a false region
QUEUED_FACE = (0.0, 0.0, 0.0, 0.0)  # a queued click is drawn hollow
NEGATIVE_KEY = "Shift"  # held while clicking: the other kind of click


class ClickController:
    """Click correction of one Labels layer: its clicks layer, queue, session and review record.

    ``make_session()`` gives a new :class:`ClickSession` (called in the worker: it may load the
    model); ``notify()`` is called when a job is waiting (the dock starts a worker);
    ``say(text)`` shows a status line; ``defer(fn)`` runs ``fn`` after the current napari event
    (a point is added inside napari's own mouse handler, which must finish first);
    ``results()`` gives the Segment tumour widget's results (see :func:`network_input`)."""

    def __init__(self, viewer, labels, make_session, notify, say, defer, results=None):
        self.viewer, self.labels = viewer, labels
        self.make_session, self._notify_job, self._say, self._defer = (
            make_session,
            notify,
            say,
            defer,
        )
        self._results = results or dict  # () -> the Segment tumour widget's results
        self.tracker = tracker_for(viewer)
        self.session = None
        self.positive = True  # the dock's toggle: what a plain click adds
        self.entries: list[Click] = []  # one per point of the clicks layer, in its order
        self.timings: list[dict] = []  # per applied click: worker and merge ms (benchmarks)
        self.closed = False
        self._queue: deque = deque()  # (kind, Click) waiting for the worker
        self._busy = False  # a job is in the worker
        self._started = False  # the session holds this layer's mask
        self._generation = 0  # bumped when the mask's data is replaced as a whole
        self._quiet = False  # this controller is changing the points layer
        self._press_positive: bool | None = None  # the kind of the click being made
        lgg = read_meta(labels)
        self._earlier = [list(c) for c in lgg.get("clicks") or []]  # clicks that cannot be undone
        self._by_clicks = {int(z) for z in lgg.get("click_slices") or []}  # reviewed by clicks
        self._earlier_slices = set(self._by_clicks)  # ... by clicks that cannot be undone
        self._painted: set[int] = set()  # slices napari's tools painted since clicking began
        self.points = self._clicks_layer()
        self._connect()

    # ------------------------------------------------------------------ layers

    def _clicks_layer(self):
        labels = self.labels
        name = f"{read_meta(labels)['patient_id']} clicks"
        meta = derive_meta(read_meta(labels), Role.CLICKS, mask_layer=labels.name)
        size = max(4.0, float(np.shape(labels.data)[-1]) / 40)
        points = self.viewer.add_points(
            np.empty((0, labels.ndim)),
            ndim=labels.ndim,
            size=size,
            border_width=0.3,
            face_color=[POSITIVE_COLOUR],
            border_color=[POSITIVE_COLOUR],
            scale=labels.scale,
            translate=labels.translate,
            rotate=labels.rotate,
            shear=labels.shear,
            affine=labels.affine.affine_matrix,
            **layer_kwargs(name, meta),
        )
        points.mode = "add"
        points.mouse_drag_callbacks.insert(0, self._on_press)
        from app_model.types import KeyCode, KeyMod

        points.bind_key(KeyMod.CtrlCmd | KeyCode.KeyZ, lambda _layer: self.undo(), overwrite=True)
        return points

    def _connect(self) -> None:
        self.points.events.data.connect(self._on_points_data)
        self.labels.events.paint.connect(self._on_paint)
        self.labels.events.data.connect(self._on_replaced)
        self.viewer.layers.events.removed.connect(self._on_removed)

    def close(self, why: str = "") -> None:
        """Stop: queued clicks are dropped (said in ``why``), applied ones stay in the mask."""
        if self.closed:
            return
        self.closed = True
        self.points.events.data.disconnect(self._on_points_data)
        self.labels.events.paint.disconnect(self._on_paint)
        self.labels.events.data.disconnect(self._on_replaced)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        dropped = sum(c.state in ("queued", "running") for c in self.entries)
        self._queue.clear()
        if self.points in self.viewer.layers and self.labels not in self.viewer.layers:
            self.viewer.layers.remove(self.points)
        if why:
            self.say(why + (f"; {dropped} queued click(s) dropped" if dropped else "") + ".")

    def say(self, text: str) -> None:
        self._say(text[:1].upper() + text[1:])

    def _on_removed(self, event) -> None:
        if event.value is self.labels:
            self.close(f"'{self.labels.name}' was closed: click correction on it stopped")
        elif event.value is self.points:
            self.close(
                f"the clicks layer of '{self.labels.name}' was closed: its clicks stay in the "
                "mask, start again to click more"
            )

    # ------------------------------------------------------------------ the review record

    def locked_slices(self) -> list[int]:
        """Slices painted by hand: reviewed other than through clicks (napari's tools, marked
        reviewed, reviewed in a saved folder)."""
        return sorted(set(reviewed_slices(self.labels)) - self._by_clicks)

    def _on_paint(self, event) -> None:
        slices = touched_slices(event.value, np.shape(self.labels.data))
        self._painted |= slices
        self._by_clicks -= slices  # painted now: the paint wins from here on
        self._earlier_slices -= slices
        self._save_click_slices()

    def _on_replaced(self, event) -> None:
        """The mask was replaced as a whole (a new run, a re-threshold, a script): clicks so far
        stay recorded but cannot be undone; the next click starts afresh on the new mask."""
        self._generation += 1
        if self._started:
            self._earlier = self._all_clicks()
            self._earlier_slices = set(self._by_clicks)
            for c in self.entries:
                if c.state in ("applied", "undoing"):
                    c.state = "earlier"
        self._started = False

    def _all_clicks(self) -> list[list]:
        current = self.session.clicks if (self.session is not None and self._started) else []
        return self._earlier + current

    def _save_click_slices(self) -> None:
        read_meta(self.labels)["click_slices"] = sorted(self._by_clicks)

    def _record(self, clicks: list, click_slices: list) -> None:
        """The mask's metadata after a click or undo: its clicks, and the slices they changed
        reviewed (an undone click's slices no longer, unless reviewed otherwise)."""
        lgg = read_meta(self.labels)
        others = set(reviewed_slices(self.labels)) - self._by_clicks
        want = (set(click_slices) | self._earlier_slices) - others
        lgg["reviewed_slices"] = sorted(others | want)
        self._by_clicks = want
        lgg["clicks"] = self._earlier + [list(c) for c in clicks]
        self._save_click_slices()
        self.tracker._notify(self.labels)  # the docks refresh their reviewed counts

    # ------------------------------------------------------------------ points -> clicks

    def _on_press(self, layer, event) -> None:
        """napari's mouse press on the clicks layer (before its add mode makes the point):
        the modifier held decides the kind."""
        self._press_positive = self.positive != (NEGATIVE_KEY in event.modifiers)

    def _on_points_data(self, event) -> None:
        if self._quiet or self.closed:
            return
        action = str(getattr(event, "action", ""))
        if action == "added":
            n_new = len(event.data_indices)
            kind = self.positive if self._press_positive is None else self._press_positive
            self._press_positive = None
            for zyx in np.asarray(self.points.data)[-n_new:]:
                z, y, x = (int(round(float(c))) for c in zyx[-3:])
                self.entries.append(Click(z, y, x, kind))
            self._defer(self._take_new_points)
        elif action in ("removed", "changed"):
            self.say("The points show the clicks made: use Undo (Ctrl-Z) to take one back.")
            self._defer(self._redraw)

    def _take_new_points(self) -> None:
        """Queue the new points' clicks; ignore (and remove) those that cannot apply."""
        if self.closed:
            return
        shape, locked = np.shape(self.labels.data), set(self.locked_slices())
        for c in [c for c in self.entries if c.state == "queued" and not self._is_queued(c)]:
            try:
                check_click(c.z, c.y, c.x, shape, locked)
            except ClickIgnored as exc:
                self.entries.remove(c)
                self.say(f"{exc}.")
                continue
            self._queue.append(("click", c))
        self._redraw()
        if self._queue:
            self._notify_job()

    def _is_queued(self, click: Click) -> bool:
        return any(c is click for _, c in self._queue)

    def _redraw(self) -> None:
        """The clicks layer from ``entries``: applied clicks filled, queued ones hollow. Only
        the colours are set when the points are where the entries say (setting a Points layer's
        data costs the GUI thread tens of ms: napari recomputes the viewer's dims)."""
        if self.closed or self.points not in self.viewer.layers:
            return
        points = self.points
        lead = [0.0] * (points.ndim - 3)
        want = np.array([lead + [c.z, c.y, c.x] for c in self.entries], float)
        want = want.reshape(-1, points.ndim)
        edge = [POSITIVE_COLOUR if c.positive else NEGATIVE_COLOUR for c in self.entries]
        face = [
            QUEUED_FACE if c.state in ("queued", "running") else e
            for c, e in zip(self.entries, edge)
        ]
        self._quiet = True
        try:
            points.selected_data = set()
            now = np.asarray(points.data)
            if now.shape != want.shape or not np.array_equal(np.round(now), want):
                points.data = want
            if self.entries:
                if not np.array_equal(points.border_color, edge):
                    points.border_color = np.array(edge)
                if not np.array_equal(points.face_color, face):
                    points.face_color = np.array(face)
        finally:
            self._quiet = False

    def set_positive(self, positive: bool) -> None:
        """The dock's toggle: what a plain click adds; napari's layer controls show its colour."""
        self.positive = bool(positive)
        colour = POSITIVE_COLOUR if self.positive else NEGATIVE_COLOUR
        self._quiet = True
        try:
            self.points.selected_data = set()  # the current colour would repaint selected points
            self.points.current_face_color = colour
            self.points.current_border_color = colour
        finally:
            self._quiet = False

    def add_click(self, z: int, y: int, x: int, positive: bool | None = None) -> None:
        """A click from code (a script, the benchmark): as if the point were added in napari."""
        self._press_positive = positive
        self.points.add([z, y, x])

    # ------------------------------------------------------------------ undo

    def undo(self) -> None:
        """Drop the last queued click, or take back the last applied one (after the clicks
        before it in the queue); a click made before the mask was replaced cannot be undone."""
        if self.closed:
            return
        live = [c for c in self.entries if c.state != "undoing"]
        if not live:
            self.say("Nothing to undo.")
            return
        last = live[-1]
        if last.state == "queued":
            self._queue = deque(op for op in self._queue if op[1] is not last)
            self.entries.remove(last)
            self._redraw()
            self.say(f"Queued click at ({last.z}, {last.y}, {last.x}) dropped.")
        elif last.state == "earlier":
            self.say(
                f"'{self.labels.name}' was replaced (a new run or re-threshold) since this "
                "click: it cannot be undone; paint over it instead."
            )
        else:  # running or applied: undone in turn, after the running job
            last.state = "undoing"
            self._queue.append(("undo", last))
            self._notify_job()

    # ------------------------------------------------------------------ jobs

    def prepare(self) -> None:
        """Start the session now (model, volume on the network's grid), before the first click."""
        if not self._started and not self._queue and not self._busy:
            self._queue.append(("prepare", None))
            self._notify_job()

    @property
    def waiting(self) -> bool:
        return bool(self._queue) and not self._busy and not self.closed

    def take_job(self) -> ClickJob | None:
        """The next job for the worker (GUI thread), or None; at most one at a time."""
        while self.waiting:
            kind, click = self._queue.popleft()
            if kind != "prepare" and click not in self.entries:
                continue  # its click was ignored meanwhile: nothing to undo
            if kind == "undo" and not self._started:
                click.state = "earlier"
                self.say(f"'{self.labels.name}' was replaced since this click: not undone.")
                continue
            try:
                job = self._job(kind, click)
            except ValueError as exc:
                self._forget(click, ("Click ignored: " if click else "") + str(exc))
                continue
            if kind == "click":
                click.state = "running"
            self._busy = True
            return job
        return None

    def _job(self, kind: str, click: Click) -> ClickJob:
        locked = self.locked_slices()
        start = None
        if not self._started:
            inp, spacing = network_input(self.viewer.layers, self.labels, self._results())
            start = (inp, np.asarray(self.labels.data) > 0, spacing)
        painted = sorted(self._painted)
        planes = np.asarray(self.labels.data)[painted] > 0 if painted else None
        return ClickJob(kind, click, self._generation, locked, (painted, planes), start)

    def finish(self, result: ClickResult) -> None:
        """GUI thread: merge a job's result into the mask (or drop it, with the reason)."""
        t0 = time.perf_counter()
        self._busy = False
        job, click = result.job, result.job.click
        self.session = result.session
        if self.closed:
            return
        if job.generation != self._generation:  # replaced while the job ran: drop it
            self._forget(click, f"'{self.labels.name}' was replaced meanwhile: click dropped")
            return
        self._started = True
        if job.kind == "prepare":
            self.say(f"Ready: click on '{self.labels.name}' (the '{self.points.name}' layer).")
            return self._next()
        if result.ignored:
            self._forget(click, result.ignored)
            return
        merged = self._merge(result.planes)
        if job.kind == "click":
            click.state = "applied"
        else:
            self.entries.remove(click)
        self._record(result.clicks, result.click_slices)
        self._redraw()
        end = time.perf_counter()
        if job.kind == "click":
            self.timings.append(
                dict(worker_ms=1000 * result.seconds, merge_ms=1000 * (end - t0),
                     total_ms=1000 * (end - click.added_at),
                     cpu_ms=1000 * (time.process_time() - click.added_cpu))
            )  # fmt: skip
        what = "Click" if job.kind == "click" else "Undo"
        where = f"slices {_ranges(merged)}" if merged else "no slice"
        self.say(f"{what} at ({click.z}, {click.y}, {click.x}): changed {where} "
                 f"in {1000 * result.seconds:.0f} ms; {self.summary()}.")  # fmt: skip
        self._next()

    def _next(self) -> None:
        if self._queue:
            self._notify_job()

    def fail(self, job: ClickJob, exc: BaseException) -> None:
        """GUI thread: the job raised (a bad volume, a model that cannot load)."""
        self._busy = False
        if not self.closed:
            self._forget(job.click, f"Click correction failed: {exc}")
            self._next()

    def _forget(self, click: Click | None, why: str) -> None:
        if click is None:
            pass
        elif click in self.entries and (click.state in ("queued", "running")):
            self.entries.remove(click)
        elif click.state == "undoing":
            click.state = "applied"
        self._redraw()
        self.say(why + ".")

    def _merge(self, planes: dict) -> list[int]:
        """Write the changed slices into the Labels layer (not as the person's edit); a slice
        painted while the job ran keeps its paint. Returns the slices written."""
        labels, locked = self.labels, set(self.locked_slices())
        data = labels.data
        written = []
        with self.tracker.programmatic(labels):
            for z, plane in sorted(planes.items()):
                if z in locked:
                    continue
                now = np.asarray(data[z])
                data[z] = np.where(plane, np.where(now > 0, now, 1), 0).astype(now.dtype)
                written.append(int(z))
            if written:
                labels.refresh()
        return written

    def summary(self) -> str:
        n = len(self._all_clicks())
        return f"{n} click{'s' if n != 1 else ''}, {len(self._by_clicks)} slice(s) reviewed by them"


def _ranges(zs: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out, start = [], None
    for i, z in enumerate(zs):
        if start is None:
            start = z
        if i + 1 == len(zs) or zs[i + 1] != z + 1:
            out.append(f"{start}" if start == z else f"{start}-{z}")
            start = None
    return ", ".join(out)

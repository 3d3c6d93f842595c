"""One click correction job: the click, what the worker needs for it (taken from the viewer on
the GUI thread), and what it gives back; which clicks are refused (:func:`check_click`, worded
once for :class:`napari_lggseg.interactive.ClickSession` and the viewer) and which layers a click
works on. No Qt, no torch; napari only through the layers it is given.
:mod:`napari_lggseg.click_layers` queues the jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .layer_meta import Role, is_paintable, read_meta


class ClickIgnored(ValueError):
    """A click that changes nothing, and why (outside the volume or the head, a painted slice)."""


def check_click(z: int, y: int, x: int, shape, locked=()) -> None:
    """Raise :class:`ClickIgnored` when a click at voxel (z, y, x) of a (Z, H, W) volume cannot
    apply: outside the volume, or on a slice painted by hand (``locked``). The one wording of
    both, for the session and the viewer (which checks before queueing a click)."""
    if not all(0 <= c < n for c, n in zip((z, y, x), shape)):
        raise ClickIgnored(
            f"click at ({z}, {y}, {x}) is outside the volume {tuple(shape)}: ignored"
        )
    if z in locked:
        raise ClickIgnored(
            f"slice {z} was painted by hand (or marked reviewed): the paint wins, click ignored"
        )


@dataclass
class Click:
    """One point of the clicks layer: voxel indices, kind, and where it stands."""

    z: int
    y: int
    x: int
    positive: bool
    state: str = "queued"  # queued | running | applied | undoing | earlier (cannot be undone)
    added_at: float = field(default_factory=time.perf_counter)
    added_cpu: float = field(default_factory=time.process_time)  # all threads (benchmarks)


@dataclass
class ClickJob:
    """What the worker does for one click or undo, with everything it needs from the viewer
    taken on the GUI thread (the worker never reads a layer)."""

    kind: str  # "click" | "undo" | "prepare" (start the session before the first click)
    click: Click | None
    generation: int  # the mask's version when the job was taken (a replaced mask drops it)
    locked: list[int]
    painted: tuple[list[int], np.ndarray | None]  # slices painted by hand and their content now
    start: tuple | None = None  # (RunInput, mask, spacing) when the session must start afresh

    def run(self, session, make_session: Callable) -> ClickResult:
        """Worker thread: (start,) sync the painted slices, click or undo."""
        t0 = time.perf_counter()
        session = session if session is not None else make_session()
        if self.start is not None:
            inp, mask, spacing = self.start
            session.start(inp.volume(), mask=mask, spacing=spacing, locked_slices=self.locked)
        else:
            slices, planes = self.painted
            session.set_slices(slices, planes if planes is not None else [])
            session.set_locked(self.locked)
        c = self.click
        if self.kind == "prepare":
            return ClickResult(self, session, seconds=time.perf_counter() - t0)
        try:
            mask = (
                session.add_click(c.z, c.y, c.x, c.positive)
                if self.kind == "click"
                else session.undo()
            )
        except ClickIgnored as exc:
            return ClickResult(self, session, ignored=str(exc), seconds=time.perf_counter() - t0)
        changed = list(session.last_changed)
        return ClickResult(
            self,
            session,
            planes=dict(zip(changed, mask[changed])),
            clicks=session.clicks,
            click_slices=session.changed_slices,
            seconds=time.perf_counter() - t0,
        )


@dataclass
class ClickResult:
    job: ClickJob
    session: object
    planes: dict = field(default_factory=dict)  # slice -> new (H, W) bool mask
    clicks: list = field(default_factory=list)  # the session's clicks after the job
    click_slices: list = field(default_factory=list)  # slices the session's clicks changed
    ignored: str = ""
    seconds: float = 0.0  # in the worker


def mask_layers(layers) -> list:
    """The Labels layers a click can correct: patients' predictions and corrections."""
    roles = (Role.PREDICTION.value, Role.CORRECTIONS.value)
    return [
        lyr for lyr in layers if (read_meta(lyr) or {}).get("role") in roles and is_paintable(lyr)
    ]


def network_input(layers, labels, results=None):
    """(RunInput, spacing) the mask was made from: the Segment tumour run that made it
    (``results``: its session's results, mapped layers included), else the patient's open
    images, taken as a segmentation run takes them."""
    from .patients import capture, find_patients
    from .session import scan_spacing

    lgg = read_meta(labels)
    res = (results or {}).get(lgg["patient_id"])
    if res is not None and res.layer is labels:
        inp = res.inp
    else:
        patient = find_patients(layers).get(lgg["patient_id"])
        if patient is None or patient.flair is None:
            raise ValueError(
                f"the images of {lgg['patient_id']} are not open: open the patient (or "
                "segment it) to correct its mask with clicks"
            )
        inp = capture(patient)
    if np.shape(inp.flair) != np.shape(labels.data):
        raise ValueError(
            f"'{labels.name}' has shape {np.shape(labels.data)}, its images "
            f"{np.shape(inp.flair)}: not the same grid"
        )
    source = inp.source() if inp.source is not None else None
    spacing = inp.meta.get("spacing") or (scan_spacing(source) if source is not None else None)
    return inp, spacing

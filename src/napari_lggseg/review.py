"""Which slices of a mask a person has checked: napari edits -> ``reviewed_slices``. No Qt.

A Labels layer of an LGG patient (a prediction, a corrections folder or the ground truth) keeps
the 0-based slices the person has looked at in ``layer.metadata["lggseg"]["reviewed_slices"]``, a
plain sorted list of ints: the writer saves it in the corrections sidecar and fine-tuning learns
from those slices only. A slice becomes reviewed when

* napari's tools change it (brush, eraser, fill, polygon: ``Labels.events.paint``), or
* the person says so ("Mark slice reviewed" in the Segment tumour widget).

Replacing a layer's whole ``data`` (from the console or a script) is not taken as a review: the
layer is flagged ``edited`` (so a new segmentation never silently replaces it) but no slice is
claimed, because nobody can tell which slices a person actually looked at.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable

import numpy as np

from .layer_meta import MASK_ROLES, read_meta, unwrap_viewer


def is_tracked(layer) -> bool:
    """A Labels layer of an LGG patient whose slices can be reviewed."""
    lgg = read_meta(layer)
    return (
        bool(lgg)
        and lgg.get("role") in MASK_ROLES
        and hasattr(getattr(layer, "events", None), "paint")
    )


def reviewed_slices(layer) -> list[int]:
    lgg = read_meta(layer) or {}
    return sorted(int(z) for z in lgg.get("reviewed_slices") or ())


def mark_reviewed(layer, slices: Iterable[int]) -> list[int]:
    """Add ``slices`` (0-based, inside the volume) to the layer's reviewed slices; returns the
    ones that were new."""
    lgg = read_meta(layer)
    if lgg is None:
        raise ValueError(
            f"layer '{getattr(layer, 'name', layer)}' is not an LGG patient's mask (no 'lggseg' metadata)"
        )
    n = int(np.shape(layer.data)[0])
    before = set(reviewed_slices(layer))
    wanted = {int(z) for z in slices if 0 <= int(z) < n}
    new = sorted(wanted - before)
    if new:
        lgg["reviewed_slices"] = sorted(before | wanted)
    return new


def is_touched(layer) -> bool:
    """The person has reviewed or edited this mask: replacing it would lose their work."""
    lgg = read_meta(layer) or {}
    return bool(lgg.get("reviewed_slices")) or bool(lgg.get("edited"))


def touched_slices(atoms, shape: tuple[int, ...] | None = None) -> set[int]:
    """Slices (axis 0) changed by one ``Labels.events.paint`` value: a list of history atoms,
    either napari's masked atoms (``slice_key``, ``mask``) or ``(indices, old, new)`` tuples."""
    out: set[int] = set()
    for atom in atoms or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            zs = key[0]
            start = zs.start or 0
            stop = zs.stop if zs.stop is not None else (shape[0] if shape else start + 1)
            mask = getattr(atom, "mask", None)
            if mask is not None and np.ndim(mask) == len(key):
                changed = np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1)
                out.update(start + int(i) for i in np.flatnonzero(changed))
            else:
                out.update(range(start, stop))
            continue
        try:
            indices = atom[0]
        except (TypeError, IndexError):
            continue
        first = indices[0] if isinstance(indices, tuple) else indices
        if isinstance(first, slice):
            start = first.start or 0
            stop = first.stop if first.stop is not None else (shape[0] if shape else start + 1)
            out.update(range(start, stop))
        else:
            out.update(int(z) for z in np.unique(np.asarray(first)).ravel())
    return out


class ReviewTracker:
    """Follows a viewer's LGG Labels layers and records what napari's tools change.

    Listeners (:meth:`connect`) are called with the layer whenever its reviewed slices or edited
    flag change (the widgets refresh their counts from them).
    """

    def __init__(self, layers):
        self._quiet: set[int] = set()  # ids of layers whose data this program is setting
        self._connected: dict[int, weakref.ref] = {}
        self._listeners: list = []  # weak references: a closed widget must not be kept alive
        layers.events.inserted.connect(self._on_inserted)
        layers.events.removed.connect(self._on_removed)
        for layer in list(layers):
            self.track(layer)

    def track(self, layer) -> None:
        if not is_tracked(layer) or id(layer) in self._connected:
            return
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)
        self._connected[id(layer)] = weakref.ref(layer)

    def _on_inserted(self, event) -> None:
        self.track(event.value)

    def _on_removed(self, event) -> None:
        layer = event.value
        if self._connected.pop(id(layer), None) is not None:
            layer.events.paint.disconnect(self._on_paint)
            layer.events.data.disconnect(self._on_data)

    @contextlib.contextmanager
    def programmatic(self, layer):
        """Set ``layer.data`` inside this block without it counting as the person's edit."""
        self._quiet.add(id(layer))
        try:
            yield
        finally:
            self._quiet.discard(id(layer))

    def _on_paint(self, event) -> None:
        layer = event.source
        if id(layer) in self._quiet or read_meta(layer) is None:
            return
        slices = touched_slices(event.value, np.shape(layer.data))
        lgg = read_meta(layer)
        was_edited = bool(lgg.get("edited"))
        lgg["edited"] = True
        if mark_reviewed(layer, slices) or not was_edited:
            self._notify(layer)

    def _on_data(self, event) -> None:
        layer = event.source
        lgg = read_meta(layer)
        if id(layer) in self._quiet or lgg is None or lgg.get("edited"):
            return
        lgg["edited"] = True
        self._notify(layer)

    def mark(self, layer, slices: Iterable[int]) -> list[int]:
        """ "Mark slice reviewed": the person checked these slices without changing them."""
        new = mark_reviewed(layer, slices)
        if new:
            self._notify(layer)
        return new

    def connect(self, callback: Callable) -> None:
        """Call ``callback(layer)`` on every change; held weakly when it is a bound method."""
        try:
            ref = weakref.WeakMethod(callback)
        except TypeError:  # a function or a builtin's method: held strongly

            def ref():
                return callback

        self._listeners.append(ref)

    def disconnect(self, callback: Callable) -> None:
        self._listeners = [r for r in self._listeners if r() not in (None, callback)]

    def _notify(self, layer) -> None:
        alive = []
        for ref in self._listeners:
            cb = ref()
            if cb is not None:
                alive.append(ref)
                cb(layer)
        self._listeners = alive


_TRACKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tracker_for(viewer) -> ReviewTracker:
    """The one tracker of ``viewer`` (created on first use; lives as long as the viewer)."""
    viewer = unwrap_viewer(viewer)
    tracker = _TRACKERS.get(viewer)
    if tracker is None:
        tracker = _TRACKERS[viewer] = ReviewTracker(viewer.layers)
    return tracker

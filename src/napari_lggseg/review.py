"""Which slices of a mask a person has checked: napari edits -> ``reviewed_slices``. No Qt.

A Labels layer of an LGG patient (a prediction, a corrections folder or the ground truth) keeps
the 0-based slices the person has looked at in ``layer.metadata["lggseg"]["reviewed_slices"]``, a
plain sorted list of ints: the writer saves it in the corrections sidecar and fine-tuning learns
from those slices only. A slice becomes reviewed when

* napari's tools change it (brush, eraser, fill, polygon: ``Labels.events.paint``), or
* the person says so ("Mark slice reviewed" in the Segment tumour widget).

Undo follows the data: a slice reviewed only through napari's tools stops being reviewed when
its edits are undone (Ctrl-Z), i.e. when the region it painted holds what it held before the first
stroke again, and is reviewed again after a redo; so an undone edit is never learned from. Slices
the person marked by hand (or that came reviewed from a corrections folder) stay reviewed.

Replacing a layer's whole ``data`` (from the console or a script) is not taken as a review: the
layer is flagged ``edited`` (so a new segmentation never silently replaces it) but no slice is
claimed, because nobody can tell which slices a person actually looked at.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .layer_meta import MASK_ROLES, is_paintable, read_meta, unwrap_viewer


def is_tracked(layer) -> bool:
    """A Labels layer of an LGG patient whose slices can be reviewed."""
    lgg = read_meta(layer)
    return bool(lgg) and lgg.get("role") in MASK_ROLES and is_paintable(layer)


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


def _z_range(atom, n: int) -> tuple[int, int]:
    key = getattr(atom, "slice_key", None)
    first = key[0] if key is not None else atom[0][0] if isinstance(atom[0], tuple) else atom[0]
    if isinstance(first, slice):
        return first.start or 0, first.stop if first.stop is not None else n
    zs = np.asarray(first)
    return int(zs.min()), int(zs.max()) + 1


def _yx_box(atoms, shape) -> tuple[int, int, int, int]:
    """The (y0, y1, x0, x1) box around everything a stroke changed, in-plane."""
    y0, y1, x0, x1 = shape[-2], 0, shape[-1], 0
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        index = key if key is not None else atom[0]
        for axis, lo_hi in ((-2, (0, 1)), (-1, (2, 3))):
            ix = index[axis]
            if isinstance(ix, slice):
                lo, hi = ix.start or 0, ix.stop if ix.stop is not None else shape[axis]
            else:
                lo, hi = int(np.min(ix)), int(np.max(ix)) + 1
            if lo_hi[0] == 0:
                y0, y1 = min(y0, lo), max(y1, hi)
            else:
                x0, x1 = min(x0, lo), max(x1, hi)
    return y0, y1, x0, x1


def slices_before(data, atoms, slices: Iterable[int]) -> dict[int, np.ndarray]:
    """What ``slices`` held before the edit ``atoms`` (one ``Labels.events.paint`` value) was
    applied, rebuilt by undoing the atoms on a copy, as napari's own undo does."""
    atoms = list(atoms or ())
    n = int(np.shape(data)[0])
    ranges = [_z_range(a, n) for a in atoms]
    wanted = sorted(set(slices))
    lo = min([r[0] for r in ranges] + wanted)
    hi = max([r[1] for r in ranges] + [z + 1 for z in wanted])
    sub = np.array(data[lo:hi])
    for atom in reversed(atoms):
        key = getattr(atom, "slice_key", None)
        if key is not None:
            z0, z1 = _z_range(atom, n)
            region = sub[(slice(z0 - lo, z1 - lo), *key[1:])]
            if atom.mask is None:
                region[...] = atom.old_values
            else:
                region[atom.mask] = atom.old_values
            continue
        index, old = atom[0], atom[1]
        index = index if isinstance(index, tuple) else (index,)
        first = index[0]
        first = (
            slice((first.start or 0) - lo, None if first.stop is None else first.stop - lo)
            if isinstance(first, slice)
            else np.asarray(first) - lo
        )
        sub[(first, *index[1:])] = old
    return {z: sub[z - lo].copy() for z in wanted}


@dataclass
class _Painted:
    """One slice napari's tools changed: what it held before its first stroke, the in-plane box
    its strokes touched, and whether it is reviewed whatever happens to the edits (marked by
    hand, or reviewed before it was painted)."""

    before: np.ndarray
    box: tuple[int, int, int, int]
    by_hand: bool

    def undone(self, data, z: int) -> bool:
        y0, y1, x0, x1 = self.box
        return np.array_equal(np.asarray(data[z, y0:y1, x0:x1]), self.before[y0:y1, x0:x1])


class ReviewTracker:
    """Follows a viewer's LGG Labels layers and records what napari's tools change.

    Listeners (:meth:`connect`) are called with the layer whenever its reviewed slices or edited
    flag change (the widgets refresh their counts from them).
    """

    def __init__(self, layers):
        self._quiet: set[int] = set()  # ids of layers whose data this program is setting
        self._connected: dict[int, weakref.ref] = {}
        self._painted: dict[int, dict[int, _Painted]] = {}  # layer id -> slice -> its edit
        self._replaced: set[int] = set()  # ids of layers whose whole data was replaced
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
        layer.events.set_data.connect(self._on_refresh)  # napari's undo/redo end in a refresh
        self._connected[id(layer)] = weakref.ref(layer)

    def _on_inserted(self, event) -> None:
        self.track(event.value)

    def _on_removed(self, event) -> None:
        layer = event.value
        if self._connected.pop(id(layer), None) is not None:
            layer.events.paint.disconnect(self._on_paint)
            layer.events.data.disconnect(self._on_data)
            layer.events.set_data.disconnect(self._on_refresh)
            self._painted.pop(id(layer), None)
            self._replaced.discard(id(layer))

    @contextlib.contextmanager
    def programmatic(self, layer):
        """Set ``layer.data`` inside this block without it counting as the person's edit."""
        self._quiet.add(id(layer))
        try:
            yield
        finally:
            self._quiet.discard(id(layer))
            # the slices whose edits are undone now hold the program's new mask: forget them
            record = self._painted.get(id(layer), {})
            done = set(reviewed_slices(layer))
            for z in [z for z, p in record.items() if z not in done and not p.by_hand]:
                del record[z]

    def _on_paint(self, event) -> None:
        layer = event.source
        if id(layer) in self._quiet or read_meta(layer) is None:
            return
        slices = touched_slices(event.value, np.shape(layer.data))
        self._remember(layer, event.value, slices)
        lgg = read_meta(layer)
        was_edited = bool(lgg.get("edited"))
        lgg["edited"] = True
        if mark_reviewed(layer, slices) or not was_edited:
            self._notify(layer)

    def _remember(self, layer, atoms, slices: set[int]) -> None:
        """Keep what newly painted slices held before this stroke, so an undo can be seen."""
        shape = np.shape(layer.data)
        if len(shape) != 3 or not slices or id(layer) in self._replaced:
            return
        record = self._painted.setdefault(id(layer), {})
        box = _yx_box(atoms, shape)
        for z in slices & record.keys():
            b = record[z].box
            record[z].box = (
                min(b[0], box[0]),
                max(b[1], box[1]),
                min(b[2], box[2]),
                max(b[3], box[3]),
            )
        new = slices - record.keys()
        if not new:
            return
        done = set(reviewed_slices(layer))
        try:
            before = slices_before(layer.data, atoms, new)
        except Exception:  # an edit napari records differently: its slices just stay reviewed
            return
        for z, content in before.items():
            record[z] = _Painted(content, box, by_hand=z in done)

    def _on_refresh(self, event) -> None:
        """After napari's undo or redo: a slice is reviewed through its edits only while they are
        there."""
        layer = event.source
        record = self._painted.get(id(layer))
        lgg = read_meta(layer)
        if not record or id(layer) in self._quiet or lgg is None:
            return
        done = set(reviewed_slices(layer))
        now = set(done)
        undone = {z for z, p in record.items() if p.undone(layer.data, z)}
        for z, p in record.items():
            if not p.by_hand:
                (now.discard if z in undone else now.add)(z)
        edited = bool(len(undone) < len(record) or id(layer) in self._replaced)
        if now == done and edited == bool(lgg.get("edited")):
            return
        lgg["reviewed_slices"] = sorted(now)
        lgg["edited"] = edited
        self._notify(layer)

    def _on_data(self, event) -> None:
        layer = event.source
        lgg = read_meta(layer)
        if id(layer) in self._quiet or lgg is None:
            return
        self._replaced.add(id(layer))
        self._painted.pop(id(layer), None)  # an undo can no longer be told from the new data
        if lgg.get("edited"):
            return
        lgg["edited"] = True
        self._notify(layer)

    def mark(self, layer, slices: Iterable[int]) -> list[int]:
        """ "Mark slice reviewed": the person checked these slices without changing them."""
        new = mark_reviewed(layer, slices)
        record = self._painted.get(id(layer), {})
        for z in slices:
            if int(z) in record:
                record[int(z)].by_hand = True
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

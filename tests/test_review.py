"""Reviewed-slice tracking on real napari Labels layers (no Qt, no window)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Labels

from napari_lggseg.review import (
    ReviewTracker,
    is_touched,
    mark_reviewed,
    reviewed_slices,
    touched_slices,
)


def _prediction(n=6, size=20, role="prediction") -> Labels:
    meta = {
        "patient_id": "P",
        "folder": None,
        "slice_files": [],
        "role": role,
        "model": "m",
        "reviewed_slices": [],
    }
    return Labels(
        np.zeros((n, size, size), np.uint8), name="P prediction", metadata={"lggseg": meta}
    )


def _tracked(layer):
    viewer = ViewerModel()
    tracker = ReviewTracker(viewer.layers)
    viewer.add_layer(layer)
    seen = []
    tracker.connect(seen.append)
    return viewer, tracker, seen


def test_brush_marks_only_the_painted_slice():
    layer = _prediction()
    viewer, tracker, seen = _tracked(layer)
    layer.selected_label = 1
    layer.paint((3, 10, 10), 1)
    assert reviewed_slices(layer) == [3]
    assert layer.metadata["lggseg"]["reviewed_slices"] == [3]
    assert all(type(z) is int for z in layer.metadata["lggseg"]["reviewed_slices"])
    assert seen == [layer]


def test_3d_brush_and_fill_mark_every_slice_they_change():
    layer = _prediction()
    viewer, tracker, _ = _tracked(layer)  # keep the tracker alive (napari holds it weakly)
    layer.n_edit_dimensions = 3
    layer.brush_size = 3
    layer.paint((2, 10, 10), 1)  # a ball: slices 1..3
    assert reviewed_slices(layer) == [1, 2, 3]
    layer.data[5, 0:5, 0:5] = 1  # a region only on slice 5, filled in 3-D: only slice 5 changes
    layer.n_edit_dimensions = 3
    layer.fill((5, 1, 1), 2)
    assert reviewed_slices(layer) == [1, 2, 3, 5]


def test_data_setitem_atoms_and_unknown_values():
    atoms = [((np.array([4, 4, 0]), np.array([1, 2, 3]), np.array([1, 1, 1])), np.zeros(3), 1)]
    assert touched_slices(atoms) == {0, 4}
    assert touched_slices([object()]) == set()


def test_replacing_data_flags_edited_without_claiming_slices():
    layer = _prediction()
    viewer, tracker, seen = _tracked(layer)
    assert not is_touched(layer)
    layer.data = np.ones_like(layer.data)
    assert reviewed_slices(layer) == [] and layer.metadata["lggseg"]["edited"] is True
    assert is_touched(layer) and seen == [layer]


def test_programmatic_changes_are_not_the_persons():
    layer = _prediction()
    viewer, tracker, _ = _tracked(layer)
    with tracker.programmatic(layer):
        layer.data = np.ones_like(layer.data)
        layer.paint((1, 5, 5), 0)
    assert not is_touched(layer)


def test_mark_reviewed_and_removed_layers():
    layer = _prediction()
    viewer, tracker, seen = _tracked(layer)
    assert tracker.mark(layer, [4, 2, 99, -1]) == [2, 4]  # outside the volume: ignored
    assert tracker.mark(layer, [2]) == []
    assert reviewed_slices(layer) == [2, 4] and len(seen) == 1
    viewer.layers.remove(layer)
    layer.paint((0, 5, 5), 1)  # no longer tracked
    assert reviewed_slices(layer) == [2, 4]
    with pytest.raises(ValueError, match="no 'lggseg' metadata"):
        mark_reviewed(Labels(np.zeros((2, 4, 4), np.uint8)), [0])


def test_images_and_foreign_labels_are_not_tracked():
    viewer = ViewerModel()
    tracker = ReviewTracker(viewer.layers)
    plain = viewer.add_labels(np.zeros((3, 8, 8), np.uint8))
    plain.paint((1, 4, 4), 1)
    assert "lggseg" not in plain.metadata and tracker._connected == {}


# ------------------------------------------------------------------ undo (issue 13)


def test_undoing_the_only_edit_of_a_slice_unmarks_it_and_redo_marks_it_again():
    layer = _prediction()
    viewer, tracker, seen = _tracked(layer)
    layer.selected_label = 1
    layer.brush_size = 3
    layer.paint((2, 10, 10), 1)
    layer.paint((4, 10, 10), 1)
    assert reviewed_slices(layer) == [2, 4]
    layer.undo()  # Ctrl-Z: the stroke on slice 4 is gone, so is its review
    assert not layer.data[4].any()
    assert reviewed_slices(layer) == [2], "an undone edit must not be learned from"
    assert layer in seen[-1:]
    layer.undo()
    assert reviewed_slices(layer) == [] and not is_touched(layer), "nothing of the person's left"
    layer.redo()
    assert reviewed_slices(layer) == [2] and is_touched(layer)


def test_undo_keeps_slices_marked_by_hand_and_slices_with_other_edits():
    layer = _prediction()
    viewer, tracker, _ = _tracked(layer)
    layer.selected_label = 1
    layer.brush_size = 3
    tracker.mark(layer, [3])  # "Mark slice reviewed": the person said so
    layer.paint((3, 10, 10), 1)
    layer.paint((5, 4, 4), 1)
    layer.paint((5, 15, 15), 1)  # two strokes on slice 5
    layer.undo()  # undoes only the second stroke on 5
    assert reviewed_slices(layer) == [3, 5]
    layer.undo()
    layer.undo()  # the stroke on 3: marked by hand, stays reviewed
    assert reviewed_slices(layer) == [3]

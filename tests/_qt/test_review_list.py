"""Segment tumour's "Check these slices first" list in a real napari viewer (pytest-qt, Xvfb):
ranked in the worker, most uncertain first, a click goes to the slice, a painted slice is ticked,
and the list follows the patient it was computed for."""

from __future__ import annotations

import re
import threading

import pytest
from qtpy.QtCore import Qt

from napari_lggseg import uncertainty
from napari_lggseg.layer_meta import PLUGIN
from napari_lggseg.synthetic import SYNTH_PATIENT_ID

TIMEOUT = 20000  # ms
SCORE = re.compile(r"^(✓ )?slice (\d+) \(file (\S+)\): ~(\d+) uncertain voxels$")


@pytest.fixture
def ranking_threads(monkeypatch):
    """The threads slices_to_review ran on."""
    threads = []
    rank = uncertainty.slices_to_review

    def recorded(*a, **k):
        threads.append(threading.current_thread())
        return rank(*a, **k)

    monkeypatch.setattr(uncertainty, "slices_to_review", recorded)
    return threads


def _entries(widget) -> list[tuple[bool, int, str, int]]:
    """(ticked, slice, file, uncertain voxels) of each row, as the person reads them."""
    out = []
    for row in widget.review.rows():
        m = SCORE.match(row.text)
        assert m, row.text
        assert bool(m[1]) == row.reviewed and int(m[2]) == row.z
        out.append((bool(m[1]), int(m[2]), m[3], int(m[4])))
    return out


def _segmented(make_napari_viewer, qtbot, model):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_patient")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    widget.select_model(model)
    assert widget.review.list_widget.count() == 0 and not widget.review.list_widget.isVisibleTo(
        widget
    )
    qtbot.mouseClick(widget.run_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    return viewer, widget, widget.result_layer(SYNTH_PATIENT_ID)


def test_review_list_ranks_goes_to_and_ticks_slices(
    make_napari_viewer, qtbot, tiny_model_store, ranking_threads
):
    viewer, widget, pred = _segmented(make_napari_viewer, qtbot, tiny_model_store)
    assert pred is not None
    assert (
        ranking_threads and threading.main_thread() not in ranking_threads
    )  # ranked in the worker

    entries = _entries(widget)
    ranked = widget.review_slices()
    assert entries and widget.review.list_widget.isVisibleTo(widget)
    assert [z for _, z, _, _ in entries] == [z for z, _ in ranked]
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True) and scores[-1] >= 5.0  # most uncertain first
    assert [v for *_, v in entries] == [round(s) for s in scores]
    files = pred.metadata["lggseg"]["slice_files"]
    assert all(f == files[z] and f == f"{SYNTH_PATIENT_ID}_{z + 1}.tif" for _, z, f, _ in entries)
    assert not any(ticked for ticked, *_ in entries)

    # a click on an entry shows that slice
    row = next(r for r, (_, z, _, _) in enumerate(entries) if z != viewer.dims.current_step[0])
    z = entries[row][1]
    item = widget.review.list_widget.item(row)
    widget.review.list_widget.setCurrentRow(row)
    widget.review.list_widget.itemClicked.emit(item)
    assert viewer.dims.current_step[0] == z
    assert widget.current_slice(pred) == z
    # activating (Enter, double-click) another entry does the same
    other = next(r for r in range(len(entries)) if entries[r][1] != z)
    widget.review.list_widget.itemActivated.emit(widget.review.list_widget.item(other))
    assert viewer.dims.current_step[0] == entries[other][1]

    # painting the slice makes it reviewed, and the list ticks it
    widget.review.list_widget.itemClicked.emit(item)
    pred.selected_label = 1
    pred.brush_size = 5
    pred.paint((z, 100, 100), 1)
    assert z in pred.metadata["lggseg"]["reviewed_slices"]
    ticked = {zz for t, zz, _, _ in _entries(widget) if t}
    assert ticked == {z}
    rows = widget.review.rows()
    assert rows[row].tooltip.endswith("; reviewed")
    assert rows[other].tooltip.endswith("; not reviewed yet")

    # the list depends on the probabilities only: a new threshold keeps it
    widget.set_threshold(0.8)
    assert widget.review_slices() == ranked and len(_entries(widget)) == len(entries)


def test_review_list_belongs_to_its_patient(make_napari_viewer, qtbot, tiny_model_store):
    from napari_lggseg._reader import patient_layers
    from napari_lggseg.synthetic import make_synthetic_patient

    viewer, widget, pred = _segmented(make_napari_viewer, qtbot, tiny_model_store)
    ranked = widget.review_slices()
    image, mask = make_synthetic_patient(seed=5, n_slices=12, size=96)
    for data, kwargs, kind in patient_layers("SYNTH_OTHER_0002", image, mask):
        getattr(viewer, f"add_{kind}")(data, **kwargs)

    widget.set_patient("SYNTH_OTHER_0002")  # not segmented yet: no list
    assert widget.review.list_widget.count() == 0 and not widget.review.list_widget.isVisibleTo(
        widget
    )
    assert widget.review_slices() == []
    widget.set_patient(SYNTH_PATIENT_ID)  # back: its own list again
    assert widget.review_slices() == ranked and widget.review.list_widget.count() == len(ranked)

    viewer.layers.remove(pred)  # the result is gone, and so is its list
    assert widget.review.list_widget.count() == 0 and widget.review_slices() == []

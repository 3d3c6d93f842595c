"""The Click correction dock in a real napari viewer (pytest-qt, Xvfb) with the shipped
interactive model (lgg-clicks): clicks made with napari's Points tool (real mouse clicks on the
canvas), merged into the mask in a worker, undone with Ctrl-Z, saved in the sidecar.

A synthetic patient written as LGG TIFFs (and a synthetic NIfTI case) runs without data; the real
patient test runs when ../shared/lgg/kaggle_3m is there.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_lggseg import interactive
from napari_lggseg.click_sim import next_click
from napari_lggseg.layer_meta import PLUGIN, Role, derive_meta, layer_kwargs, read_meta

TIMEOUT = 30000  # ms
WINDOW = 3  # lgg-clicks recomputes the slices within 3 of a click


# --------------------------------------------------------------------------- helpers


def _open_patient(viewer, folder):
    viewer.open(folder, plugin=PLUGIN)
    flair = next(lyr for lyr in viewer.layers if (read_meta(lyr) or {}).get("sequence") == "FLAIR")
    truth = next(lyr for lyr in viewer.layers if read_meta(lyr)["role"] == Role.GROUND_TRUTH)
    return flair, np.asarray(truth.data) > 0


def _add_prediction(viewer, flair, mask):
    """A prediction layer as Segment tumour makes it (its metadata derived from the FLAIR's)."""
    meta = derive_meta(read_meta(flair), Role.PREDICTION, model="lgg-fast", reviewed_slices=[])
    name = f"{meta['patient_id']} prediction"
    return viewer.add_labels(
        mask.astype(np.uint8),
        **layer_kwargs(name, meta),
        scale=flair.scale,
        translate=flair.translate,
        opacity=0.6,
    )


def _dock(viewer, qtbot, widget=None):
    if widget is None:
        _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Click correction")
    ctrl = widget.start()
    assert ctrl is not None, widget.status.text()
    qtbot.waitUntil(lambda: "Ready" in widget.status.text(), timeout=TIMEOUT)
    return widget, ctrl


def _click(viewer, qtbot, points, zyx, shift=False):
    """A real mouse click on the canvas at voxel ``zyx`` of ``points``' grid (slice shown
    first), in napari's add mode."""
    z, y, x = zyx
    viewer.dims.set_point(0, points.data_to_world([z, y, x])[0])
    canvas = viewer.window._qt_viewer.canvas
    world = points.data_to_world([z, y, x])
    px = canvas.view.scene.transform.map([world[2], world[1]])[:2]
    qtbot.wait(10)
    modifier = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    qtbot.mouseClick(
        canvas.native, Qt.MouseButton.LeftButton, modifier, QPoint(int(px[0]), int(px[1]))
    )


def _wait_idle(qtbot, widget, ctrl, n_applied=None):
    def done():
        states = [c.state for c in ctrl.entries]
        idle = not widget.is_busy and all(s in ("applied", "earlier") for s in states)
        return idle and (n_applied is None or len(states) == n_applied)

    qtbot.waitUntil(done, timeout=TIMEOUT)


def _centre(truth) -> int:
    return int(np.argmax(truth.sum(axis=(1, 2))))


def _far_from(z, shape_z):
    return [k for k in range(shape_z) if abs(k - z) > WINDOW]


@pytest.fixture
def synthetic_folder(make_lgg_patient):
    """A synthetic patient (16 slices of 128 x 128) written as LGG TIFFs."""
    return make_lgg_patient(n=16, size=128, synthetic=True, seed=21)


# --------------------------------------------------------------------------- tests


def test_dock_is_listed_and_its_modules_import_light():
    """The manifest names the dock; the Qt-free core (click_layers, click_jobs) imports neither
    Qt nor napari, and the dock's module no torch (it loads when the dock is built)."""
    import subprocess
    import sys

    code = (
        "import sys, napari_lggseg.click_layers, napari_lggseg.click_jobs; "
        "print(sorted(m for m in ('qtpy', 'PyQt6', 'napari', 'torch') if m in sys.modules)); "
        "import napari_lggseg._widgets._clicks; "
        "print(sorted(m for m in ('torch', 'napari_lggseg.interactive') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "[]"], out
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    names = [w.display_name for w in pm.get_manifest(PLUGIN).contributions.widgets]
    assert "Click correction" in names


def test_click_adds_missed_tumour_near_it_and_undo_restores_exactly(
    make_napari_viewer, qtbot, synthetic_folder
):
    viewer = make_napari_viewer()
    flair, truth = _open_patient(viewer, synthetic_folder)
    zc = _centre(truth)
    start = truth.copy()
    start[zc - 1 : zc + 2] = False  # the model missed three slices
    labels = _add_prediction(viewer, flair, start)
    widget, ctrl = _dock(viewer, qtbot)
    points = ctrl.points
    assert points.name == f"{read_meta(labels)['patient_id']} clicks"
    assert viewer.layers.selection.active is points and points.mode == "add"

    (z, y, x), positive = next_click(start, truth)
    assert positive and abs(z - zc) <= 1
    _click(viewer, qtbot, points, (z, y, x))
    _wait_idle(qtbot, widget, ctrl, n_applied=1)
    after = np.asarray(labels.data) > 0
    assert (after & truth)[zc - 1 : zc + 2].sum() > 0.5 * truth[zc - 1 : zc + 2].sum()
    assert after[z, y, x]  # tumour at the click
    assert np.array_equal(after[_far_from(z, 16)], start[_far_from(z, 16)])  # not far from it
    np.testing.assert_array_equal(np.round(points.data), [[z, y, x]])  # where it was clicked
    meta = read_meta(labels)
    assert meta["clicks"] == [[z, y, x, True]]
    changed = sorted({int(k) for k in np.nonzero((after != start).any(axis=(1, 2)))[0]})
    assert meta["reviewed_slices"] == changed and "Click at" in widget.status.text()

    # Ctrl-Z on the clicks layer (napari's key handling): the mask exactly as before, no point
    viewer.window._qt_viewer.canvas._key_map_handler.press_key("Control-Z")
    qtbot.waitUntil(lambda: not ctrl.entries and not widget.is_busy, timeout=TIMEOUT)
    assert np.array_equal(np.asarray(labels.data) > 0, start)
    assert len(points.data) == 0
    assert meta["clicks"] == [] and meta["reviewed_slices"] == []

    # click again, then paint over a slice it changed: undo takes the click back, not the paint
    _click(viewer, qtbot, points, (z, y, x))
    _wait_idle(qtbot, widget, ctrl, n_applied=1)
    assert np.array_equal(np.asarray(labels.data) > 0, after)
    labels.selected_label, labels.brush_size = 1, 5
    labels.paint((z + 1, 10, 10), 1)
    painted = np.asarray(labels.data[z + 1]).copy()
    widget.undo()
    qtbot.waitUntil(lambda: not ctrl.entries and not widget.is_busy, timeout=TIMEOUT)
    undone = np.asarray(labels.data) > 0
    others = [k for k in range(16) if k != z + 1]
    assert np.array_equal(undone[others], start[others])
    assert np.array_equal(np.asarray(labels.data[z + 1]), painted)
    assert meta["reviewed_slices"] == [z + 1]  # reviewed by the paint, not by the click


def test_negative_click_painted_slice_outside_click_and_the_sidecar(
    make_napari_viewer, qtbot, synthetic_folder, tmp_path
):
    from napari_lggseg.lgg_io import read_corrections

    viewer = make_napari_viewer()
    flair, truth = _open_patient(viewer, synthetic_folder)
    zc = _centre(truth)
    ys, xs = np.nonzero(truth[zc])
    cy, cx = 127 - int(ys.mean()), 127 - int(xs.mean())  # mirrored across the head: no tumour
    yy, xx = np.mgrid[:128, :128]
    false = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 64) & ~truth[zc]
    start = truth.copy()
    start[zc - 1 : zc + 2] |= false  # a false region on three slices
    labels = _add_prediction(viewer, flair, start)
    _d, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Click correction")
    # the person paints slice zc + 1 by hand (napari's brush) before clicking
    labels.selected_label, labels.brush_size = 1, 5
    labels.paint((zc + 1, 10, 10), 1)
    painted = np.asarray(labels.data[zc + 1]).copy()
    assert read_meta(labels)["reviewed_slices"] == [zc + 1]
    widget, ctrl = _dock(viewer, qtbot, widget)
    points = ctrl.points

    _click(viewer, qtbot, points, (zc, cy, cx), shift=True)  # Shift: a negative click
    _wait_idle(qtbot, widget, ctrl, n_applied=1)
    after = np.asarray(labels.data) > 0
    assert after[zc][false].sum() < 0.25 * false.sum()  # the false region went
    assert np.array_equal(np.asarray(labels.data[zc + 1]), painted)  # the paint was kept
    assert read_meta(labels)["clicks"] == [[zc, cy, cx, False]]
    assert tuple(points.border_color[0]) == pytest.approx((1.0, 0.0, 1.0, 1.0))

    # a click on the painted slice, one outside the volume: ignored, said, their points removed
    _click(viewer, qtbot, points, (zc + 1, cy, cx))
    qtbot.waitUntil(lambda: "paint wins" in widget.status.text(), timeout=TIMEOUT)
    ctrl.add_click(zc, 130, 5)
    qtbot.waitUntil(lambda: "outside the volume" in widget.status.text(), timeout=TIMEOUT)
    _wait_idle(qtbot, widget, ctrl, n_applied=1)
    assert len(points.data) == 1 and np.array_equal(np.asarray(labels.data) > 0, after)

    out = tmp_path / "corrected"
    labels.save(str(out), plugin=PLUGIN)
    corr = read_corrections(out)
    assert corr.extra["clicks"] == [[zc, cy, cx, False]]
    changed = {int(k) for k in np.nonzero((after != start).any(axis=(1, 2)))[0]}
    assert changed and set(corr.reviewed_slices) == changed | {zc + 1}
    np.testing.assert_array_equal(corr.mask > 0, after)
    # reopened and saved again, the corrections keep their clicks
    reopened = viewer.open(out, plugin=PLUGIN)[-1]
    assert read_meta(reopened)["clicks"] == [[zc, cy, cx, False]]
    again = tmp_path / "corrected-again"
    reopened.save(str(again), plugin=PLUGIN)
    assert read_corrections(again).extra["clicks"] == [[zc, cy, cx, False]]


class Gate:
    """Holds the worker inside its next click until the test releases it."""

    def __init__(self):
        self.reached = threading.Event()
        self.release = threading.Event()


@pytest.fixture
def gate(monkeypatch):
    g = Gate()
    add_click = interactive.ClickSession.add_click

    def held(self, *a, **k):
        g.reached.set()
        assert g.release.wait(30), "the test never released the worker"
        return add_click(self, *a, **k)

    monkeypatch.setattr(interactive.ClickSession, "add_click", held)
    yield g
    g.release.set()


def test_clicks_queue_while_one_computes_and_closing_the_mask_mid_click(
    make_napari_viewer, qtbot, synthetic_folder, gate
):
    viewer = make_napari_viewer()
    flair, truth = _open_patient(viewer, synthetic_folder)
    zc = _centre(truth)
    start = truth.copy()
    start[zc - 1 : zc + 2] = False
    labels = _add_prediction(viewer, flair, start)
    widget, ctrl = _dock(viewer, qtbot)
    (z, y, x), _ = next_click(start, truth)
    ctrl.add_click(z, y, x)
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    ctrl.add_click(z + 1, y, x)  # queued while the first computes
    ctrl.add_click(z - 1, y, x)
    qtbot.waitUntil(lambda: len(ctrl.entries) == 3, timeout=TIMEOUT)
    assert [c.state for c in ctrl.entries] == ["running", "queued", "queued"]
    ctrl.undo()  # drops the last queued click
    assert [c.state for c in ctrl.entries] == ["running", "queued"]
    gate.release.set()
    _wait_idle(qtbot, widget, ctrl, n_applied=2)
    assert read_meta(labels)["clicks"] == [[z, y, x, True], [z + 1, y, x, True]]

    # the mask replaced as a whole (a re-threshold, a script): earlier clicks stay recorded but
    # cannot be undone; the next click works on the new mask
    labels.data = np.asarray(labels.data).copy()
    ctrl.undo()
    assert "cannot be undone" in widget.status.text() and len(ctrl.points.data) == 2
    ctrl.add_click(z, y - 2, x)
    _wait_idle(qtbot, widget, ctrl, n_applied=3)
    assert read_meta(labels)["clicks"][-1] == [z, y - 2, x, True]
    assert len(read_meta(labels)["clicks"]) == 3

    # the mask is closed while a click computes: no traceback, the click is dropped, said
    gate.reached.clear()
    gate.release.clear()
    ctrl.add_click(z, y + 2, x)
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    viewer.layers.remove(labels)
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_busy and widget._worker is None, timeout=TIMEOUT)
    assert "was closed" in widget.status.text()
    assert ctrl.closed and ctrl.points not in viewer.layers
    assert widget.mask_layer is None
    widget.start()
    assert "No mask to correct" in widget.status.text()


def test_nifti_case_clicks_reach_the_mask_sidecar(make_napari_viewer, qtbot, tmp_path):
    from nifti_cases import affine_for, write_case

    shape = (40, 36, 24)
    folder = write_case(tmp_path / "cases" / "C1", affine_for("RAS", (2.0, 2.0, 4.0), shape), shape)
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    flair = viewer.layers["C1 FLAIR"]
    truth = np.asarray(viewer.layers["C1 ground truth"].data) > 0
    zc = _centre(truth)
    start = truth.copy()
    start[zc] = False
    labels = _add_prediction(viewer, flair, start)
    assert read_meta(labels)["scan_source"]
    widget, ctrl = _dock(viewer, qtbot)
    (z, y, x), positive = next_click(start, truth)
    _click(viewer, qtbot, ctrl.points, (z, y, x))
    _wait_idle(qtbot, widget, ctrl, n_applied=1)
    assert read_meta(labels)["clicks"] == [[z, y, x, True]]

    out = tmp_path / "masks"
    labels.save(str(out), plugin=PLUGIN)
    sidecar = json.loads((out / "C1_mask.json").read_text())
    assert sidecar["clicks"] == [[z, y, x, True]] and sidecar["kind"] == "corrections"
    assert set(sidecar["reviewed_slices"]) == set(read_meta(labels)["reviewed_slices"])
    reopened = viewer.open(out / "C1_mask.nii.gz", plugin=PLUGIN)[-1]
    assert read_meta(reopened)["clicks"] == [[z, y, x, True]]


def test_real_patient_click_and_undo(make_napari_viewer, qtbot, real_patient):
    """A real LGG patient segmented by Segment tumour (lgg-fast), corrected with the next click
    of the simulated protocol."""
    viewer = make_napari_viewer()
    _flair, truth = _open_patient(viewer, real_patient)
    _d, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    seg.select_model("lgg-fast")
    assert seg.run()
    qtbot.waitUntil(lambda: not seg.is_running, timeout=60000)
    labels = seg.result_layer()
    widget, ctrl = _dock(viewer, qtbot)
    assert widget.mask_layer is labels
    before = np.asarray(labels.data).copy()
    (z, y, x), positive = next_click(before > 0, truth)
    _click(viewer, qtbot, ctrl.points, (z, y, x), shift=not positive)
    _wait_idle(qtbot, widget, ctrl, n_applied=1)
    after = np.asarray(labels.data)
    diff = (after > 0) != (before > 0)
    assert diff.any() and diff[z].any()
    assert not diff[_far_from(z, len(before))].any()
    zs, ys, xs = np.nonzero(diff)
    assert np.hypot(ys - y, xs - x).min() < 10  # the change is where the person clicked
    assert read_meta(labels)["clicks"] == [[z, y, x, positive]]
    widget.undo()
    qtbot.waitUntil(lambda: not ctrl.entries and not widget.is_busy, timeout=TIMEOUT)
    assert np.array_equal(np.asarray(labels.data), before)

"""The Segment tumour widget in a real napari viewer (pytest-qt, Xvfb), with the tiny model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_lggseg import inference
from napari_lggseg._widgets._forms import MAP_LAYERS
from napari_lggseg.layer_meta import PLUGIN
from napari_lggseg.metrics import dice
from napari_lggseg.synthetic import SYNTH_PATIENT_ID

TIMEOUT = 20000  # ms


class Gate:
    """Holds the worker inside its first network batch until the test releases it."""

    def __init__(self):
        self.reached = threading.Event()
        self.release = threading.Event()
        self.batches = 0


@pytest.fixture
def gate(monkeypatch):
    g = Gate()
    forward = inference.Segmenter._forward

    def held(self, xb):
        g.batches += 1
        g.reached.set()
        assert g.release.wait(30), "the test never released the worker"
        return forward(self, xb)

    monkeypatch.setattr(inference.Segmenter, "_forward", held)
    yield g
    g.release.set()


@pytest.fixture
def count_segment(monkeypatch):
    """How many times the network ran (Segmenter.segment calls)."""
    calls = []
    segment = inference.Segmenter.segment

    def counted(self, *a, **k):
        calls.append(1)
        return segment(self, *a, **k)

    monkeypatch.setattr(inference.Segmenter, "segment", counted)
    return calls


def _open(make_napari_viewer, tiny_model_store):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_patient")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    widget.select_model(tiny_model_store)
    return viewer, widget


def _add_other_patient(viewer, pid="SYNTH_OTHER_0002"):
    from napari_lggseg._reader import patient_layers
    from napari_lggseg.synthetic import make_synthetic_patient

    image, mask = make_synthetic_patient(seed=5, n_slices=12, size=128)
    for data, kwargs, kind in patient_layers(pid, image, mask):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return pid


def _predictions(viewer):
    return [
        lyr for lyr in viewer.layers if lyr.metadata.get("lggseg", {}).get("role") == "prediction"
    ]


def _wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)


def test_widgets_package_imports_neither_qt_nor_torch():
    """napari imports the widgets package to list the plugin's menu: it must import no Qt
    binding and no torch; the widget modules themselves load torch and matplotlib only when a
    widget is built."""
    import subprocess
    import sys

    heavy = "('torch', 'matplotlib', 'napari_lggseg.inference')"
    qt = "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')"
    code = (
        "import sys, napari_lggseg._widgets; "
        f"print(sorted(m for m in {heavy} + {qt} if m in sys.modules)); "
        "from napari_lggseg._widgets import _segment, _finetune; "
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["[]", "[]"], out


def test_segment_sample_then_rethreshold_without_rerun(
    make_napari_viewer, qtbot, tiny_model_store, count_segment
):
    viewer, widget = _open(make_napari_viewer, tiny_model_store)
    assert widget.patient_id == SYNTH_PATIENT_ID
    qtbot.mouseClick(widget.run_button.native, Qt.MouseButton.LeftButton)
    _wait_done(qtbot, widget)

    (pred,) = _predictions(viewer)
    meta = pred.metadata["lggseg"]
    assert pred.name == f"{SYNTH_PATIENT_ID} prediction"
    assert meta["patient_id"] == SYNTH_PATIENT_ID and meta["model"] == tiny_model_store
    assert (
        meta["reviewed_slices"] == []
        and meta["folder"] is None
        and len(meta["slice_files"]) == pred.data.shape[0]
    )
    truth = np.asarray(viewer.layers[f"{SYNTH_PATIENT_ID} ground truth"].data) > 0
    assert pred.data.shape == truth.shape and pred.data.dtype == np.uint8
    d = dice(np.asarray(pred.data) > 0, truth)
    assert d >= 0.5
    assert widget.last_dice == pytest.approx(d) and f"{d:.3f}" in widget.dice_label.text()
    assert f"{int((np.asarray(pred.data) > 0).sum()):,} voxels" in widget.volume_label.text()
    assert widget.progress.fraction == 1.0
    assert count_segment == [1]

    before = np.asarray(pred.data).copy()
    widget.set_threshold(0.9)
    after = np.asarray(pred.data)
    assert count_segment == [1]  # no second run of the network
    assert _predictions(viewer) == [pred]
    assert (
        after.sum() < before.sum() and not (after & ~before).any()
    )  # a higher threshold only removes
    assert pred.metadata["lggseg"]["reviewed_slices"] == [] and not pred.metadata["lggseg"].get(
        "edited"
    )

    spacing = widget.form.spacing_row
    spacing.use_spacing.value = True
    spacing.spacing_z.value, spacing.spacing_y.value, spacing.spacing_x.value = 2.0, 0.5, 0.5
    ml = int((after > 0).sum()) * 0.5 / 1000
    assert f"{ml:.2f} mL" in widget.volume_label.text()


def test_result_stays_with_the_patient_the_run_started_on(
    make_napari_viewer, qtbot, tiny_model_store, gate
):
    viewer, widget = _open(make_napari_viewer, tiny_model_store)
    other = _add_other_patient(viewer)
    widget.set_patient(SYNTH_PATIENT_ID)
    assert widget.run()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    # mid-run: the person selects the other patient's layer; the widget follows for the next run
    viewer.layers.selection.active = viewer.layers[f"{other} FLAIR"]
    assert widget.patient_id == other
    gate.release.set()
    _wait_done(qtbot, widget)

    (pred,) = _predictions(viewer)
    assert pred.metadata["lggseg"]["patient_id"] == SYNTH_PATIENT_ID
    assert pred.name == f"{SYNTH_PATIENT_ID} prediction"
    assert pred.data.shape == viewer.layers[f"{SYNTH_PATIENT_ID} FLAIR"].data.shape
    assert widget.result_layer(SYNTH_PATIENT_ID) is pred and widget.result_layer(other) is None
    assert (
        widget.patient_id == other
    )  # the widget stays on the person's new choice for the next run
    assert (
        viewer.layers.selection.active is viewer.layers[f"{other} FLAIR"]
    )  # their layer stays active
    assert SYNTH_PATIENT_ID in widget.status.text()


def test_patient_closed_mid_run_still_gets_its_prediction(
    make_napari_viewer, qtbot, tiny_model_store, gate
):
    viewer, widget = _open(make_napari_viewer, tiny_model_store)
    shape = viewer.layers[f"{SYNTH_PATIENT_ID} FLAIR"].data.shape
    assert widget.run()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)
    for name in [lyr.name for lyr in viewer.layers]:
        viewer.layers.remove(name)
    gate.release.set()
    _wait_done(qtbot, widget)
    (pred,) = _predictions(viewer)
    assert pred.metadata["lggseg"]["patient_id"] == SYNTH_PATIENT_ID and pred.data.shape == shape
    assert "images were closed during the run" in widget.status.text()


def test_cancel_stops_within_a_batch_and_leaves_the_viewer_alone(
    make_napari_viewer, qtbot, tiny_model_store, gate
):
    viewer, widget = _open(make_napari_viewer, tiny_model_store)
    names = [lyr.name for lyr in viewer.layers]
    assert widget.run()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT)

    # the GUI keeps working while the worker is held inside a batch: a dims change posted to the
    # event loop is processed
    target = viewer.dims.current_step[0] - 3
    QTimer.singleShot(0, lambda: viewer.dims.set_current_step(0, target))
    qtbot.waitUntil(lambda: viewer.dims.current_step[0] == target, timeout=TIMEOUT)
    assert widget.is_running

    qtbot.mouseClick(widget.cancel_button.native, Qt.MouseButton.LeftButton)
    gate.release.set()
    _wait_done(qtbot, widget)
    assert gate.batches == 1  # the 24 slices need two batches: the second never ran
    assert [lyr.name for lyr in viewer.layers] == names
    assert "Cancelled" in widget.status.text()
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.progress.fraction == 0.0


def test_edits_are_reviewed_and_never_overwritten(make_napari_viewer, qtbot, tiny_model_store):
    viewer, widget = _open(make_napari_viewer, tiny_model_store)
    assert widget.run()
    _wait_done(qtbot, widget)
    (pred,) = _predictions(viewer)

    pred.selected_label = 1
    pred.brush_size = 9
    pred.paint((3, 40, 40), 1)  # napari's brush: fires Labels.events.paint
    viewer.dims.set_current_step(0, 7)
    qtbot.mouseClick(widget.review.mark_button.native, Qt.MouseButton.LeftButton)
    assert pred.metadata["lggseg"]["reviewed_slices"] == [3, 7]
    assert "2 reviewed slice(s)" in widget.review.reviewed_label.value

    # re-thresholding keeps the reviewed slices as the person left them
    edited = np.asarray(pred.data).copy()
    widget.set_threshold(0.95)
    np.testing.assert_array_equal(np.asarray(pred.data)[[3, 7]], edited[[3, 7]])
    assert pred.data[3, 40, 40] == 1

    # a new run goes to a new, versioned layer; the edited one is untouched
    edited = np.asarray(pred.data).copy()
    assert widget.run()
    _wait_done(qtbot, widget)
    first, second = _predictions(viewer)
    assert first is pred and second.name == f"{SYNTH_PATIENT_ID} prediction 2"
    np.testing.assert_array_equal(np.asarray(pred.data), edited)
    assert pred.metadata["lggseg"]["reviewed_slices"] == [3, 7]
    assert (
        second.metadata["lggseg"]["reviewed_slices"] == []
        and "kept your edited" in widget.status.text()
    )

    # an untouched prediction is simply updated on the next run
    assert widget.run()
    _wait_done(qtbot, widget)
    assert len(_predictions(viewer)) == 2 and "updated" in widget.status.text()


def test_reviewed_slices_reach_the_corrections_sidecar(
    make_napari_viewer, qtbot, tiny_model_store, make_lgg_patient, tmp_path
):
    from napari_lggseg.lgg_io import read_corrections

    folder = make_lgg_patient(n=10, size=64)
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    widget.select_model(tiny_model_store)
    assert widget.run()
    _wait_done(qtbot, widget)
    (pred,) = _predictions(viewer)
    pred.selected_label = 1
    pred.paint((2, 30, 30), 1)
    viewer.dims.set_current_step(0, 6)
    widget.mark_current_slice()

    out = tmp_path / "corrected"
    pred.save(str(out), plugin=PLUGIN)
    corr = read_corrections(out)
    assert corr.reviewed_slices == [2, 6] and corr.model == tiny_model_store
    np.testing.assert_array_equal(corr.mask > 0, np.asarray(pred.data) > 0)


def test_mapped_image_layers_and_missing_sequences(make_napari_viewer, qtbot, tiny_model_store):
    """Any open image layer can be FLAIR; without pre/post-contrast the widget says FLAIR stands in."""
    from napari_lggseg.synthetic import make_synthetic_patient

    image, _ = make_synthetic_patient(seed=2, n_slices=10, size=96)
    viewer = make_napari_viewer()
    viewer.add_image(image[..., 1], name="my flair")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    widget.select_model(tiny_model_store)
    widget.form.patient.value = MAP_LAYERS
    assert widget.form.mapping.native.isVisibleTo(widget)
    assert widget.form.mapping.flair_layer.value == "my flair"
    assert widget.run()
    _wait_done(qtbot, widget)
    (pred,) = _predictions(viewer)
    assert pred.name == "my flair prediction" and pred.data.shape == image.shape[:3]
    assert "pre- and post-contrast missing: using FLAIR only" in widget.sequences_label.text()
    # issue 13: layers from no patient folder were never closed, so the status must not say so
    assert "closed" not in widget.status.text(), widget.status.text()


def test_the_dock_fits_napari_default_window_after_a_run(
    make_napari_viewer, qtbot, tiny_model_store
):
    """At the size napari opens with on a fresh profile (1089 x 630) the Segment tumour dock
    needs no sideways scrolling after a run, for a long LGG patient id too: status lines wrap,
    combo boxes shrink and elide, the spacing boxes stay narrow."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1089, 630)
    pid = _add_other_patient(viewer, "TCGA_HT_A61A_20000127")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    widget.select_model(tiny_model_store)
    widget.set_patient(pid)
    widget.form.spacing_row.use_spacing.value = True  # the volume line says mL too
    assert widget.run()
    _wait_done(qtbot, widget)
    for _ in range(10):
        QApplication.processEvents()
    assert widget.result_layer(pid) is not None and widget.review.rows()
    assert f"added '{pid} prediction'" in widget.status.text()
    scroll = widget.findChild(QScrollArea)
    body, view = scroll.widget(), scroll.viewport()
    assert body.minimumSizeHint().width() <= view.width(), (body.minimumSizeHint(), view.width())
    assert body.width() <= view.width() and not scroll.horizontalScrollBar().isVisible()

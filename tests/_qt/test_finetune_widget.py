"""The Fine-tune widget in a real napari viewer: corrections -> a new model -> a new prediction."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt, QThreadPool

from napari_lggseg import models, training
from napari_lggseg.layer_meta import PLUGIN
from napari_lggseg.synthetic import SYNTH_PATIENT_ID

TIMEOUT = 30000  # ms
N_PAINTED = 3


@pytest.fixture
def store(tiny_model_store, tmp_path, monkeypatch):
    """A model store of this test's own, holding a copy of the tiny model."""
    root = tmp_path / "store"
    root.mkdir()
    shutil.copytree(models.get_model(tiny_model_store).path, root / tiny_model_store)
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(root))
    return root


@pytest.fixture
def held_training(monkeypatch):
    """Holds the training loop inside its first step until the test releases it."""
    reached, release = threading.Event(), threading.Event()
    loss = training.seg_loss

    def held(*a, **k):
        reached.set()
        assert release.wait(30), "the test never released the worker"
        return loss(*a, **k)

    monkeypatch.setattr(training, "seg_loss", held)
    yield reached, release
    release.set()


def _corrected_viewer(make_napari_viewer, qtbot, model, size=None):
    """The sample, segmented with ``model``, with three slices corrected with napari's brush:
    each loses the edge of its predicted region (erased with label 0). ``size``: the window
    shown at that size."""
    viewer = make_napari_viewer(show=size is not None)
    if size is not None:
        viewer.window._qt_window.resize(*size)
    viewer.open_sample(PLUGIN, "synthetic_patient")
    _d, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    _d, ft = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune", tabify=True)
    seg.select_model(model)
    assert seg.run()
    qtbot.waitUntil(lambda: not seg.is_running, timeout=TIMEOUT)
    pred = seg.result_layer(SYNTH_PATIENT_ID)
    mask = np.asarray(pred.data) > 0
    painted = [int(z) for z in np.flatnonzero(mask.any(axis=(1, 2)))[1 : 1 + N_PAINTED]]
    pred.brush_size = 5
    for z in painted:
        ys, xs = np.nonzero(mask[z])
        pred.paint((z, ys[0], xs[0]), 0)
    return viewer, seg, ft, pred, painted


def _names() -> set[str]:
    return {i.name for i in models.list_models()}


def test_finetune_from_painted_corrections(make_napari_viewer, qtbot, store, tiny_model_store):
    viewer, seg, ft, pred, painted = _corrected_viewer(make_napari_viewer, qtbot, tiny_model_store)
    assert len(painted) == N_PAINTED and pred.metadata["lggseg"]["reviewed_slices"] == painted
    assert ft.candidates.count() == 1
    assert ft.candidates.item(0).text().startswith(f"{SYNTH_PATIENT_ID}: 3 reviewed slices")
    assert ft.candidates.item(0).checkState() == Qt.CheckState.Checked
    assert (
        ft.form.base_row.base_model.value == tiny_model_store
    )  # the model that made the prediction
    assert "1 round = 3 epochs" in ft.budget_note.text()

    ft.set_budget(2, "epochs")
    ft.form.model_name.value = "tiny-corrected"
    qtbot.mouseClick(ft.run_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not ft.is_running, timeout=TIMEOUT)

    assert ft.new_model == "tiny-corrected", ft.status.text()
    info = models.get_model("tiny-corrected")
    card = info.card
    assert card["parent"] == tiny_model_store
    assert card["training_data"]["slices_corrected_by_hand"] == N_PAINTED
    assert card["corrected_slices"] == {SYNTH_PATIENT_ID: N_PAINTED}
    assert card["validation"] == "Dice on corrected slices"
    finished = [h for h in card["history"] if h["epoch"] >= 1]
    assert len(finished) == 2
    assert ft.plot.points() == {"loss": 2, "dice": 2}
    assert ft.plot.epochs("loss") == [1, 2]
    assert ft.plot.dice_label == "Dice on corrected slices"
    assert (
        "slices it learned from" in ft.status.text()
    )  # a rising curve here says nothing of other patients

    # selected in Segment tumour, and one click segments the patient with it
    assert seg.model_name == "tiny-corrected"
    qtbot.mouseClick(ft.segment_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not seg.is_running, timeout=TIMEOUT)
    new = seg.result_layer(SYNTH_PATIENT_ID)
    assert new is not pred and new.metadata["lggseg"]["model"] == "tiny-corrected"
    assert new.metadata["lggseg"]["patient_id"] == SYNTH_PATIENT_ID

    # a second model asked for under the same name gets a new version, never replacing the first
    ft.set_budget(1, "epochs")
    assert ft.run()
    qtbot.waitUntil(lambda: not ft.is_running, timeout=TIMEOUT)
    assert ft.new_model == "tiny-corrected-v2" and "tiny-corrected" in _names()


def test_nothing_to_learn_from_says_so(make_napari_viewer, store, tiny_model_store):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_patient")
    _d, ft = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    assert "No reviewed slices yet" in ft.candidates.item(0).text()
    assert not ft.run()
    assert "tick at least one patient" in ft.status.text()


def test_cancel_saves_nothing(make_napari_viewer, qtbot, store, tiny_model_store, held_training):
    reached, release = held_training
    viewer, seg, ft, pred, painted = _corrected_viewer(make_napari_viewer, qtbot, tiny_model_store)
    before = _names()
    assert ft.run()
    qtbot.waitUntil(reached.is_set, timeout=TIMEOUT)
    qtbot.mouseClick(ft.cancel_button.native, Qt.MouseButton.LeftButton)
    release.set()
    qtbot.waitUntil(lambda: not ft.is_running, timeout=TIMEOUT)
    assert _names() == before and ft.new_model is None
    assert "Cancelled: no model was saved" in ft.status.text()
    assert not ft.segment_button.enabled and ft.run_button.enabled


def test_closing_the_viewer_mid_run(
    make_napari_viewer, qtbot, store, tiny_model_store, held_training
):
    reached, release = held_training
    viewer, seg, ft, pred, painted = _corrected_viewer(make_napari_viewer, qtbot, tiny_model_store)
    before = sorted(p.name for p in store.iterdir())
    assert ft.run()
    qtbot.waitUntil(reached.is_set, timeout=TIMEOUT)
    viewer.close()
    # the close cancelled the run, and the widget delivers nothing more
    qtbot.waitUntil(lambda: ft.runner.closed and ft.runner.cancelling, timeout=TIMEOUT)
    release.set()
    assert QThreadPool.globalInstance().waitForDone(TIMEOUT)
    qtbot.wait(50)  # deliver the worker's last signals: nothing may be touched or raised
    assert sorted(p.name for p in store.iterdir()) == before  # no model, no staging folder


def test_a_model_the_store_cannot_take_is_saved_elsewhere_and_the_status_says_where(
    make_napari_viewer, qtbot, store, tiny_model_store, tmp_path, monkeypatch
):
    """Issue 13: the disk fills while the store writes the model; the trained model is not lost."""
    import errno

    unsaved = tmp_path / "unsaved"
    monkeypatch.setenv("LGGSEG_UNSAVED_DIR", str(unsaved))
    viewer, seg, ft, pred, painted = _corrected_viewer(make_napari_viewer, qtbot, tiny_model_store)
    before = _names()

    def full_disk(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(store / "tiny-full"))

    monkeypatch.setattr(models, "save_model", full_disk)
    ft.set_budget(1, "epochs")
    ft.form.model_name.value = "tiny-full"
    assert ft.run()
    qtbot.waitUntil(lambda: not ft.is_running, timeout=TIMEOUT)

    status = ft.status.text()
    folder = unsaved / "tiny-full"
    assert (folder / "model.safetensors").is_file() and (folder / "card.json").is_file(), status
    assert str(folder) in status and "lggseg models import" in status, status
    assert "failed" not in status.lower(), "the training worked: only the store did not"
    assert ft.new_model is None and not ft.segment_button.enabled and _names() == before
    assert ft.result is not None and ft.run_button.enabled


def test_the_dock_fits_napari_default_window_after_a_run(
    make_napari_viewer, qtbot, store, tiny_model_store
):
    """At napari's default window size (1089 x 630) the Fine-tune dock needs no sideways
    scrolling after a run: its status, budget sentence and candidate list wrap or shrink."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer, seg, ft, _pred, _painted = _corrected_viewer(
        make_napari_viewer, qtbot, tiny_model_store, size=(1089, 630)
    )
    ft.set_budget(1, "epochs")
    ft.form.model_name.value = "tiny-fits"
    assert ft.run()
    qtbot.waitUntil(lambda: not ft.is_running, timeout=TIMEOUT)
    assert ft.new_model == "tiny-fits", ft.status.text()
    for _ in range(10):
        QApplication.processEvents()
    scroll = ft.findChild(QScrollArea)
    body, view = scroll.widget(), scroll.viewport()
    assert body.minimumSizeHint().width() <= view.width(), (body.minimumSizeHint(), view.width())
    assert not scroll.horizontalScrollBar().isVisible()

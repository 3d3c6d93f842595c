"""The Annotation project dock in a real napari viewer (pytest-qt, Xvfb), on synthetic LGG
patients written to disk, with the tiny model: the table, Next in both orders, double-click,
autosave, kill-and-restore in a real process, the lock, relinking, an unreadable case, a round."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import BAD_PATIENTS, write_lgg_patient
from qtpy.QtCore import Qt

from napari_lggseg import lgg_io
from napari_lggseg.layer_meta import PLUGIN, read_meta
from napari_lggseg.project import Project
from napari_lggseg.uncertainty import slices_to_review

TIMEOUT = 60000  # ms; the machine is shared
IDS = [f"TCGA_AA_{i:04d}_20000101" for i in range(1, 5)]
DOCK = "Annotation project"


@pytest.fixture
def cohort(tmp_path) -> Path:
    """Four small synthetic patients (8 slices, 64 px) in the LGG layout."""
    root = tmp_path / "data"
    for seed, pid in enumerate(IDS, start=1):
        write_lgg_patient(root, pid, n=8, size=64, seed=seed, synthetic=True)
    return root


def _dock(make_napari_viewer, model: str):
    viewer = make_napari_viewer()
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, DOCK)
    widget.form.model_row.model.value = model
    widget.form.device.value = "cpu"
    return viewer, widget


def _settle(qtbot, widget, predicted: bool = True) -> None:
    """Wait until the background work is over (and, by default, every case is predicted)."""

    def ready():
        p = widget.project
        return widget.idle and (not predicted or not p.cases_to_repredict())

    qtbot.waitUntil(ready, timeout=TIMEOUT)


def _create(qtbot, widget, cohort, folder, **settings):
    widget.form.source.value, widget.form.folder.value = cohort, folder
    for name, value in settings.items():
        getattr(widget.form, name).value = value
    qtbot.mouseClick(widget.form.folder_buttons.create.native, Qt.MouseButton.LeftButton)
    assert widget.project is not None, widget.status.text()
    _settle(qtbot, widget)


def _click(qtbot, button) -> None:
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _open_and_wait(qtbot, widget, press) -> str:
    before = widget.current
    press()
    qtbot.waitUntil(
        lambda: widget.current != before and widget.mask_layer is not None and widget.idle,
        timeout=TIMEOUT,
    )
    return widget.current


def _case_layers(viewer, case_id):
    return [lyr for lyr in viewer.layers if (read_meta(lyr) or {}).get("patient_id") == case_id]


# --------------------------------------------------------------------------- the table


def test_the_table_lists_the_cases_predicted_in_the_background_dice_hidden(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project")
    table = widget.table
    assert table.ids == IDS
    for case_id in IDS:
        assert table.text(case_id, "status") == "predicted"
        assert table.text(case_id, "model") == tiny_model_store
        assert table.text(case_id, "uncertainty") and table.text(case_id, "volume").endswith("vx")
        assert (tmp_path / "project" / "predictions" / f"{case_id}.npz").is_file()
    assert table.isColumnHidden(table.horizontalHeader().count() - 2), "Dice hidden by default"
    assert not table.text(IDS[0], "Dice")
    widget.form.show_dice.value = True
    qtbot.waitUntil(lambda: not table.isColumnHidden(table.horizontalHeader().count() - 2))
    assert 0.0 <= float(table.text(IDS[0], "Dice")) <= 1.0
    state = json.loads((tmp_path / "project" / "lggseg_project.json").read_text())
    assert state["settings"]["show_dice"] is True
    assert _case_layers(viewer, IDS[0]) == [], "nothing opens before Next"


# --------------------------------------------------------------------------- Next


def test_next_as_listed_saves_nothing_unedited_and_closes_the_previous_case(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project")
    nxt = widget.form.nav.next
    assert _open_and_wait(qtbot, widget, lambda: _click(qtbot, nxt)) == IDS[0]
    layers = _case_layers(viewer, IDS[0])
    roles = sorted(read_meta(lyr)["role"] for lyr in layers)
    assert roles == ["image", "image", "image", "prediction"], roles
    pred = widget.mask_layer
    meta = read_meta(pred)
    assert meta["model"] == tiny_model_store and meta["folder"] == str(cohort / IDS[0])
    stored = widget.project.prediction(IDS[0])
    np.testing.assert_array_equal(pred.data, stored.mask)
    assert widget.table.text(IDS[0], "status") == "in review"
    assert _open_and_wait(qtbot, widget, lambda: _click(qtbot, nxt)) == IDS[1]
    assert _case_layers(viewer, IDS[0]) == [], "the previous case's layers are closed"
    assert not (tmp_path / "project" / "corrections" / IDS[0]).exists(), "nothing was edited"
    _click(qtbot, widget.form.nav.previous)
    qtbot.waitUntil(lambda: widget.current == IDS[0] and widget.idle, timeout=TIMEOUT)


def test_next_most_uncertain_first_and_the_keyboard(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project", order="uncertain")
    scores = {i: widget.project.record(i).uncertainty for i in IDS}
    expected = sorted(IDS, key=lambda i: -scores[i])
    assert widget.table.ids == expected, "the table follows the order"
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()

    def shift_n():
        qtbot.keyClick(canvas, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)

    seen = [_open_and_wait(qtbot, widget, shift_n) for _ in range(3)]
    assert seen == expected[:3]
    assert "Shift+N" in widget.form.nav.next.tooltip


def test_double_click_opens_a_case_segment_tumour_lists_its_slices(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _seg_dock, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    _create(qtbot, widget, cohort, tmp_path / "project")
    table = widget.table
    rect = table.visualItemRect(table.item(table.row_of(IDS[2]), 0))
    assert rect.isValid()
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: widget.current == IDS[2] and widget.idle, timeout=TIMEOUT)
    assert widget.mask_layer is not None and _case_layers(viewer, IDS[2])
    # the case's mask is Segment tumour's result for it: its slices to check, Mark slice
    assert seg.result_layer(IDS[2]) is widget.mask_layer
    stored = widget.project.prediction(IDS[2])
    expected = [z for z, _ in slices_to_review(stored.prob)]
    assert [z for z, _ in seg.review_slices(IDS[2])] == expected


# --------------------------------------------------------------------------- autosave


def _paint(layer, z: int, value: int = 1) -> None:
    """A stroke through napari's edit API: its paint event fires as for the brush."""
    layer.brush_size = 6
    layer.paint((z, 32, 32), value)


def test_an_edit_is_autosaved_after_the_last_stroke_and_done_marks_the_case(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project")
    _open_and_wait(qtbot, widget, widget.next_case)
    folder = tmp_path / "project" / "corrections" / IDS[0]
    _paint(widget.mask_layer, 3, 0)
    _paint(widget.mask_layer, 5, 1)
    qtbot.waitUntil(lambda: (folder / lgg_io.SIDECAR).is_file() and widget.idle, timeout=TIMEOUT)
    saved = lgg_io.read_corrections(folder)
    np.testing.assert_array_equal(saved.mask, np.asarray(widget.mask_layer.data) > 0)
    assert saved.reviewed_slices == [3, 5] and not saved.whole_volume_reviewed
    assert saved.model == tiny_model_store
    assert widget.table.text(IDS[0], "last edited")
    _paint(widget.mask_layer, 6, 1)
    painted = np.asarray(widget.mask_layer.data).copy()
    _click(qtbot, widget.form.nav.done)  # saves at once (no debounce) and opens the next case
    qtbot.waitUntil(lambda: widget.current == IDS[1] and widget.idle, timeout=TIMEOUT)
    saved = lgg_io.read_corrections(folder)
    assert saved.whole_volume_reviewed and saved.reviewed_slices == list(range(8))
    np.testing.assert_array_equal(saved.mask, painted > 0)
    assert widget.table.text(IDS[0], "status") == "done"


def test_an_unwritable_folder_keeps_the_edit_in_memory_and_retries(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path, monkeypatch
):
    import errno

    import tifffile

    from napari_lggseg import project_store

    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project")
    _open_and_wait(qtbot, widget, widget.next_case)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tifffile, "imwrite", full)
    monkeypatch.setattr(project_store, "write_bytes_atomic", full)
    _paint(widget.mask_layer, 2, 1)
    qtbot.waitUntil(lambda: "disk is full" in widget.save_status.text(), timeout=TIMEOUT)
    assert widget.project.pending_edits == [IDS[0]]
    assert widget.table.text(IDS[0], "status") == "in review (unsaved)"
    monkeypatch.undo()  # room again: the retry writes it
    folder = tmp_path / "project" / "corrections" / IDS[0]
    qtbot.waitUntil(lambda: "All edits saved" in widget.save_status.text(), timeout=TIMEOUT)
    assert widget.project.pending_edits == []
    assert lgg_io.read_corrections(folder).reviewed_slices == [2]


_CHILD = textwrap.dedent(
    """
    import sys, time
    import napari
    from qtpy.QtWidgets import QApplication

    folder, model = sys.argv[1], sys.argv[2]
    viewer = napari.Viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-lggseg", "Annotation project")
    widget.form.model_row.model.value = model
    app = QApplication.instance()

    def wait(cond):
        while not cond():
            app.processEvents()
            time.sleep(0.01)

    assert widget.open_project(folder), widget.status.text()
    widget.next_case()
    wait(lambda: widget.mask_layer is not None and widget.idle)
    layer = widget.mask_layer
    layer.brush_size = 6
    layer.paint((4, 20, 20), 1)
    layer.paint((4, 44, 44), 0)
    print("painted", int((layer.data > 0).sum()), flush=True)
    wait(lambda: widget.autosave.sent == 1 and widget.idle)
    print("autosaved", flush=True)
    layer.paint((6, 30, 30), 1)  # after the last autosave: may be lost
    while True:
        app.processEvents()
        time.sleep(0.01)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_napari_after_an_autosave_and_reopen_restores_the_edit(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    """A real napari process opens the project, paints, autosaves and is SIGKILLed; reopening
    the project in this viewer shows the edit up to that autosave (the dead process's lock is
    taken over)."""
    folder = tmp_path / "project"
    Project.create(cohort, folder).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(folder), tiny_model_store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    try:
        painted = None
        for line in proc.stdout:
            if line.startswith("painted"):
                painted = int(line.split()[1])
            if line.strip() == "autosaved":
                break
        else:
            pytest.fail(f"the child ended: {proc.stderr.read()[-3000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    assert widget.open_project(folder), widget.status.text()
    qtbot.waitUntil(
        lambda: widget.current == IDS[0] and widget.mask_layer is not None, timeout=TIMEOUT
    )
    layer = widget.mask_layer
    assert read_meta(layer)["role"] == "corrections" and layer.name == f"{IDS[0]} corrections"
    assert int((np.asarray(layer.data) > 0).sum()) == painted
    assert read_meta(layer)["reviewed_slices"] == [4]
    _settle(qtbot, widget)


# --------------------------------------------------------------------------- faults


def test_a_project_open_elsewhere_names_its_holder(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    folder = tmp_path / "project"
    Project.create(cohort, folder).close()
    code = "import sys,time; from napari_lggseg.project import Project; p = Project.open(sys.argv[1]); print('ready', flush=True); time.sleep(120)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
    )
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    try:
        assert proc.stdout.readline().strip() == "ready"
        widget.form.folder.value = folder
        _click(qtbot, widget.form.folder_buttons.open)
        assert widget.project is None
        assert f"process {proc.pid}" in widget.status.text()
        assert socket.gethostname() in widget.status.text()
        assert widget.form.folder_buttons.take_over.native.isHidden(), "a live holder keeps it"
    finally:
        proc.kill()
        proc.wait()
    lock = {"pid": 1, "host": "other-machine", "user": "ann", "since": "2026", "token": "x"}
    (folder / ".lggseg_project.lock").write_text(json.dumps(lock))
    _click(qtbot, widget.form.folder_buttons.open)
    assert "ann on other-machine" in widget.status.text()
    take_over = widget.form.folder_buttons.take_over
    assert not take_over.native.isHidden()
    _click(qtbot, take_over)
    assert widget.project is not None, widget.status.text()
    _settle(qtbot, widget)


def test_relink_after_the_data_moved(make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path):
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project")
    widget.close_project()
    moved = tmp_path / "archive" / "cohort"
    moved.parent.mkdir()
    shutil.move(cohort, moved)
    assert widget.open_project(tmp_path / "project")
    assert "4 of its 4 cases are not in" in widget.status.text()
    relink = widget.form.folder_buttons.relink
    assert not relink.native.isHidden()
    assert widget.table.text(IDS[0], "error") == "missing from the data source"
    assert not widget.next_case(), "nothing to open while every case is missing"
    widget.form.source.value = moved
    _click(qtbot, relink)
    assert widget.project.missing_cases == [] and relink.native.isHidden(), widget.status.text()
    assert _open_and_wait(qtbot, widget, widget.next_case) == IDS[0]
    assert read_meta(widget.mask_layer)["folder"] == str(moved / IDS[0])


def test_a_case_that_fails_to_read_shows_its_error_and_the_rest_work(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    breaker, words = BAD_PATIENTS["truncated TIFF"]
    broken_id = "TCGA_XX_0001_20000101"  # the name the breakers expect
    breaker(write_lgg_patient(cohort, broken_id, n=8, size=64, synthetic=True))
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project")
    assert words in widget.table.text(broken_id, "error")  # found by the background prediction
    assert f"{broken_id}_3.tif" in widget.table.text(broken_id, "error")
    widget.open_case(broken_id)
    qtbot.waitUntil(lambda: widget.idle, timeout=TIMEOUT)
    assert widget.current is None and words in widget.status.text()
    seen = [_open_and_wait(qtbot, widget, widget.next_case) for _ in range(len(IDS))]
    assert seen == IDS, "Next skips the unreadable case; the others all open"


# --------------------------------------------------------------------------- rounds (#19)


def test_a_round_after_k_done_cases_repredicts_the_cases_not_opened(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    from napari_lggseg.models import delete_model

    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    widget.round_minutes = 0.05  # a tiny budget: the test checks the wiring, not the learning
    _create(qtbot, widget, cohort, tmp_path / "project", round_every=2)
    assert widget.project.settings.round_every == 2
    _open_and_wait(qtbot, widget, widget.next_case)
    for _ in range(2):
        _paint(widget.mask_layer, 4, 1)
        _open_and_wait(qtbot, widget, widget.done)  # Done opens the next case
    assert widget.current == IDS[2]
    qtbot.waitUntil(lambda: widget.rounds_run == 1, timeout=4 * TIMEOUT)
    _settle(qtbot, widget)
    project = widget.project
    (only,) = project.rounds
    assert only.trained_on == IDS[:2] and only.parent == tiny_model_store
    assert project.current_model == only.model != tiny_model_store
    assert widget.form.model_row.model.value == only.model
    assert widget.table.text(IDS[3], "model") == only.model, "not opened: predicted again"
    assert widget.table.text(IDS[0], "model") == tiny_model_store, "done cases keep theirs"
    assert widget.table.text(IDS[2], "model") == tiny_model_store, "so does the open one"
    try:
        widget.close_project()
    finally:
        delete_model(only.model)


def test_closing_the_dock_saves_the_edit_unbinds_the_keys_and_releases_the_lock(
    make_napari_viewer, qtbot, tiny_model_store, cohort, tmp_path
):
    viewer, widget = _dock(make_napari_viewer, tiny_model_store)
    _create(qtbot, widget, cohort, tmp_path / "project")
    _open_and_wait(qtbot, widget, widget.next_case)
    assert "Shift+N" in {str(k) for k in viewer.keymap}
    _paint(widget.mask_layer, 1, 1)  # closed before the debounce: saved at close
    viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.runner.closed, timeout=TIMEOUT)
    assert not {"Shift+N", "Shift+D", "Shift+U"} & {str(k) for k in viewer.keymap}
    assert not (tmp_path / "project" / ".lggseg_project.lock").exists()
    saved = lgg_io.read_corrections(tmp_path / "project" / "corrections" / IDS[0])
    assert saved.reviewed_slices == [1]

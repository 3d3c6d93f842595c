"""The annotation project's core (no viewer): table, order, autosave, kill, lock, relink, faults."""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import BAD_PATIENTS, tree_hashes, write_lgg_patient

from napari_lggseg import lgg_io, project_store
from napari_lggseg.project import (
    CaseReadError,
    Project,
    ProjectError,
    ProjectFormatError,
    ProjectLockedError,
    ProjectWriteError,
)

# four patients; the slice count sets the fake model's uncertainty (see FakeSegmenter)
SLICES = {"TCGA_AA_0001_20000101": 6, "TCGA_AA_0002_20000101": 10, "TCGA_BB_0003_20000101": 8}
SLICES["TCGA_BB_0004_20000101"] = 12
IDS = sorted(SLICES)
BY_UNCERTAINTY = sorted(IDS, key=lambda i: -SLICES[i])


class FakeSegmenter:
    """Stands in for inference.Segmenter: a 4x4 block at p=0.5 and a 3x3 tumour on every slice,
    so a case's uncertainty grows with its slice count."""

    name = "fake-model"
    default_postprocess = "none"
    recipe = None
    device = "cpu"

    def probabilities(self, volume, progress=None, cancel=None):
        prob = np.zeros(np.shape(volume)[:3], np.float32)
        prob[:, :4, :4] = 0.5
        prob[:, 10:13, 10:13] = 0.99
        return prob, None

    def segment(self, image, progress=None, cancel=None):
        prob, _ = self.probabilities(image)
        mask = (prob >= 0.5).astype(np.uint8)
        return SimpleNamespace(
            prob=prob, mask=mask, model=self.name, threshold=0.5, postprocess="none"
        )


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    for seed, (pid, n) in enumerate(sorted(SLICES.items())):
        write_lgg_patient(root, pid, n=n, size=32, seed=seed)
    return root


@pytest.fixture
def project(data, tmp_path):
    proj = Project.create(data, tmp_path / "project")
    yield proj
    proj.close(force=True)


def _mask(proj: Project, case_id: str, voxels: int) -> np.ndarray:
    """A mask of the case's shape with its first ``voxels`` voxels set (the count identifies it)."""
    z, h, w = proj.record(case_id).shape or proj.load_case(case_id).image.shape[:3]
    m = np.zeros(z * h * w, np.uint8)
    m[:voxels] = 1
    return m.reshape(z, h, w)


# --------------------------------------------------------------------------- create / open


def test_create_writes_a_versioned_file_with_a_relative_source(data, tmp_path):
    before = tree_hashes(data)
    with Project.create(data, tmp_path / "project") as proj:
        assert [r.case_id for r in proj.rows()] == IDS and {r.status for r in proj.rows()} == {
            "new"
        }
        proj.predict(IDS[0], FakeSegmenter())
        proj.save_edit(IDS[0], _mask(proj, IDS[0], 7), [1])
        proj.done(IDS[1], _mask(proj, IDS[1], 3))
    state = json.loads((tmp_path / "project" / "lggseg_project.json").read_text())
    assert state["format"] == "napari-lggseg project" and state["version"] == 1
    assert state["source"]["path"] == os.path.join("..", "data")
    assert [c["case_id"] for c in state["cases"]] == IDS
    assert tree_hashes(data) == before, "the project wrote into its source"
    assert not (tmp_path / "project" / ".lggseg_project.lock").exists(), "close releases the lock"
    with Project.open(tmp_path / "project") as proj:
        assert [r.status for r in proj.rows()] == ["in review", "done", "new", "new"]
        assert proj.record(IDS[0]).model == "fake-model"


def test_project_moved_together_with_its_data_still_finds_it(data, tmp_path):
    Project.create(data, tmp_path / "project").close()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(data, moved / "data")
    shutil.move(tmp_path / "project", moved / "project")
    with Project.open(moved / "project") as proj:
        assert proj.missing_cases == [] and proj.source.root == moved / "project" / ".." / "data"


def test_refuses_non_projects_newer_versions_and_a_folder_inside_the_source(data, tmp_path):
    with pytest.raises(ProjectFormatError, match="not an annotation project"):
        Project.open(tmp_path)
    with pytest.raises(ProjectError, match="outside the data source"):
        Project.create(data, data / "project")
    Project.create(data, tmp_path / "p").close()
    path = tmp_path / "p" / "lggseg_project.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), version=2)))
    with pytest.raises(ProjectFormatError, match="newer"):
        Project.open(tmp_path / "p")
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(data, tmp_path / "p")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="new or empty"):
        Project.create(data, tmp_path / "busy")


# --------------------------------------------------------------------------- order


def test_next_follows_the_listed_order_skipping_done_cases_and_wrapping(project):
    assert project.next_case() == IDS[0]
    assert project.next_case(IDS[0]) == IDS[1]
    project.done(IDS[1], _mask(project, IDS[1], 1))
    assert project.next_case(IDS[0]) == IDS[2], "a done case is skipped"
    assert project.next_case(IDS[3]) == IDS[0], "Next wraps so no unfinished case is passed over"
    assert project.previous_case(IDS[2]) == IDS[1], "Previous goes back to a done case too"
    assert project.previous_case(IDS[0]) is None
    for case_id in IDS:
        project.done(case_id, _mask(project, case_id, 1))
    assert project.next_case(IDS[0]) is None


def test_next_most_uncertain_first(project):
    seg = FakeSegmenter()
    for case_id in IDS[:3]:
        project.predict(case_id, seg)
    project.set_order("uncertain")
    scored = sorted(IDS[:3], key=lambda i: -SLICES[i])
    assert project.ordered_ids() == [*scored, IDS[3]], "unscored cases come last"
    project.predict(IDS[3], seg)
    assert project.ordered_ids() == BY_UNCERTAINTY
    expected = [(16 * 0.5 + 9 * 0.01) * SLICES[i] for i in BY_UNCERTAINTY]  # sum of min(p, 1-p)
    assert [project.record(i).uncertainty for i in BY_UNCERTAINTY] == pytest.approx(expected)
    assert project.next_case() == BY_UNCERTAINTY[0]
    assert project.next_case(BY_UNCERTAINTY[0]) == BY_UNCERTAINTY[1]
    assert project.previous_case(BY_UNCERTAINTY[1]) == BY_UNCERTAINTY[0]


def test_the_order_is_kept_in_the_project_file(project):
    project.set_order("uncertain")
    project.close()
    with Project.open(project.folder) as again:
        assert again.settings.order == "uncertain"
    with pytest.raises(ValueError, match="unknown order"):
        again.set_order("random")


# --------------------------------------------------------------------------- predictions


def test_predict_with_a_real_model_fills_the_row_and_keeps_dice_hidden(
    project,
    tiny_model_store,  # noqa: F811
):
    from napari_lggseg.inference import Segmenter

    seg = Segmenter.from_store(tiny_model_store, device="cpu")
    assert project.cases_to_prefetch(n=2) == IDS[:2]
    pred = project.predict(IDS[0], seg)
    row = project.record(IDS[0])
    assert row.status == "predicted" and row.model == tiny_model_store
    assert row.uncertainty == pytest.approx(pred.uncertainty) and row.uncertainty > 0
    assert row.dice is not None and row.has_expert and row.volume_voxels == pred.mask.sum()
    assert row.volume_ml is None, "LGG slices carry no voxel size"
    assert project.rows()[0].dice is None, "Dice is hidden unless asked"
    assert project.rows(show_dice=True)[0].dice == row.dice
    assert project.cases_to_prefetch(after=IDS[0], n=2) == IDS[1:3]
    project.close()
    with Project.open(project.folder) as again:
        opened = again.open_case(IDS[0])
        np.testing.assert_array_equal(opened.prediction.mask, pred.mask)
        assert (opened.prediction.prob_u8 >= 128).sum() == (
            seg.segment(opened.data.image).prob >= 0.5
        ).sum()
        assert opened.edit is None and again.record(IDS[0]).status == "in review"


def test_spacing_gives_the_volume_in_millilitres(data, tmp_path):
    with Project.create(data, tmp_path / "p", spacing=(2.0, 1.0, 1.0)) as proj:
        proj.predict(IDS[0], FakeSegmenter())
        # 16 voxels at p=0.5 plus 9 tumour voxels per slice, 2 mm^3 each
        assert proj.record(IDS[0]).volume_ml == pytest.approx(25 * SLICES[IDS[0]] * 2 / 1000)


# --------------------------------------------------------------------------- autosave


def test_autosave_and_reopen_restore_every_edit_in_the_case_format(project):
    a, b = IDS[0], IDS[1]
    project.predict(a, FakeSegmenter())
    project.save_edit(a, _mask(project, a, 5), [0])
    project.save_edit(a, _mask(project, a, 9), [0, 3])  # the later autosave replaces the first
    project.done(b, _mask(project, b, 4))
    folder = project.correction_folder(a)
    corr = lgg_io.read_corrections(folder)  # a plain corrections folder: training reads it
    assert corr.mask.sum() == 9 and corr.reviewed_slices == [0, 3] and corr.model == "fake-model"
    assert lgg_io.read_corrections(project.correction_folder(b)).whole_volume_reviewed
    project.close()
    with Project.open(project.folder) as again:
        edit = again.open_case(a).edit
        assert edit.mask.sum() == 9 and edit.reviewed_slices == [0, 3]
        assert again.record(a).status == "in review" and again.record(a).last_edited
        assert again.record(b).status == "done" and again.edit(b).whole_volume_reviewed
        assert again.current_case == a


def test_done_without_an_edit_takes_the_prediction(project):
    project.predict(IDS[2], FakeSegmenter())
    project.done(IDS[2])
    saved = project.edit(IDS[2])
    assert saved.whole_volume_reviewed and saved.mask.sum() == 25 * SLICES[IDS[2]]
    with pytest.raises(ProjectError, match="nothing to mark done"):
        project.done(IDS[3])


def test_a_mask_of_another_shape_is_refused_not_queued(project):
    project.load_case(IDS[0])
    with pytest.raises(ValueError, match="another case"):
        project.save_edit(IDS[0], np.zeros((3, 32, 32), np.uint8))
    assert project.pending_edits == []


def test_table_rebuilt_from_the_corrections_after_a_kill_before_the_table_write(project):
    project.save_edit(IDS[0], _mask(project, IDS[0], 2), [1])
    state = project.folder / "lggseg_project.json"
    stale = json.loads(state.read_text())
    project.done(IDS[0], _mask(project, IDS[0], 2))
    project.close()
    state.write_text(json.dumps(stale))  # as if killed between the edit and the table write
    with Project.open(project.folder) as again:
        assert again.record(IDS[0]).status == "done"


# --------------------------------------------------------------------------- kill


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import tifffile
    from napari_lggseg.project import Project

    folder, case_id, stall = sys.argv[1], sys.argv[2], sys.argv[3]
    proj = Project.open(folder)
    z, h, w = proj.load_case(case_id).image.shape[:3]
    state = {"i": 0, "written": 0}

    def hang(what):
        print("stalled " + what, flush=True)
        time.sleep(120)

    real_imwrite, real_replace = tifffile.imwrite, os.replace

    def imwrite(*args, **kwargs):  # stall with half the new slices written
        real_imwrite(*args, **kwargs)
        state["written"] += 1
        if stall == "slices" and state["i"] == 3 and state["written"] == z // 2:
            hang("slices")

    def replace(src, dst):  # stall with the old folder moved aside, the new one not in yet
        real_replace(src, dst)
        if stall == "swap" and state["i"] == 3 and str(dst).endswith("-old"):
            hang("swap")

    tifffile.imwrite, os.replace = imwrite, replace
    while True:
        state["i"] += 1
        state["written"] = 0
        i = state["i"]
        m = np.zeros(z * h * w, np.uint8)
        m[:i] = 1
        print(f"writing {i}", flush=True)
        proj.save_edit(case_id, m.reshape(z, h, w), [i % z])
        print(f"saved {i}", flush=True)
    """
)


def _run_and_kill(folder: Path, case_id: str, stall: str, kill_after: str, delay: float = 0):
    """Run the autosave loop in a real process, SIGKILL it when it prints ``kill_after``; returns
    the last iteration it reported saved."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(folder), case_id, stall],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    saved = 0
    try:
        while True:
            line = lines.get(timeout=120).strip()
            if line.startswith("saved"):
                saved = int(line.split()[1])
            if line == kill_after:
                threading.Event().wait(delay)
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while not lines.empty():  # lines printed between our read and the kill
        line = lines.get().strip()
        if line.startswith("saved"):
            saved = int(line.split()[1])
    return saved


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.parametrize("stall", ["slices", "swap"])
def test_a_kill_mid_autosave_leaves_the_previous_autosave(project, stall):
    """The child stalls inside its third autosave (half its slices staged, or the old folder
    moved aside) and is killed there: reopening gives the second autosave whole."""
    case_id = IDS[3]
    project.close()
    saved = _run_and_kill(project.folder, case_id, stall, f"stalled {stall}")
    assert saved == 2
    with Project.open(project.folder) as again:  # the dead child's lock is taken over
        edit = again.edit(case_id)
        assert edit.mask.sum() == 2 and edit.reviewed_slices == [2]
        leftovers = list((again.folder / "corrections").glob(".*"))
        assert leftovers == [], f"staging folders left behind: {leftovers}"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kills_at_random_moments_of_an_autosave_loop_lose_at_most_the_last_save(data, tmp_path):
    write_lgg_patient(data, "TCGA_CC_0005_20000101", n=24, size=128, seed=9)  # slow saves
    Project.create(data, tmp_path / "p").close()
    for n, delay in enumerate((0.0, 0.004, 0.012, 0.03)):
        saved = _run_and_kill(
            tmp_path / "p", "TCGA_CC_0005_20000101", "", f"writing {n + 3}", delay
        )
        with Project.open(tmp_path / "p") as again:
            edit = again.edit("TCGA_CC_0005_20000101")
            assert edit.mask.sum() in (saved, saved + 1), (saved, edit.mask.sum())
            assert edit.reviewed_slices == [int(edit.mask.sum()) % 24]


# --------------------------------------------------------------------------- lock


def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(project):
    project.close()
    code = "import sys,time; from napari_lggseg.project import Project; p = Project.open(sys.argv[1]); print('ready', flush=True); time.sleep(120)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(project.folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(ProjectLockedError) as info:
            Project.open(project.folder)
        assert info.value.holder.pid == proc.pid
        assert f"process {proc.pid}" in str(info.value) and socket.gethostname() in str(info.value)
    finally:
        proc.kill()
        proc.wait()
    with Project.open(project.folder) as again:  # the holder died: its lock is stale
        assert project_store.read_lock(again.folder).pid == os.getpid()
        with pytest.raises(ProjectLockedError, match="in this napari"):
            Project.open(project.folder)


def test_a_lock_of_another_host_needs_take_over(project):
    project.close()
    lock = {"pid": 1, "host": "other-machine", "user": "ann", "since": "2026", "token": "x"}
    (project.folder / ".lggseg_project.lock").write_text(json.dumps(lock))
    with pytest.raises(ProjectLockedError, match="ann on other-machine"):
        Project.open(project.folder)
    Project.open(project.folder, take_over=True).close()
    (project.folder / ".lggseg_project.lock").write_text("{damaged")
    Project.open(project.folder).close()  # a damaged lock names nobody: taken over


def test_a_reused_pid_does_not_keep_a_stale_lock(project):
    project.close()
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "user": "x", "since": "?"}
    lock.update(token="old", started="1")
    (project.folder / ".lggseg_project.lock").write_text(json.dumps(lock))
    if not Path("/proc").is_dir():
        pytest.skip("no /proc to read process start times")
    Project.open(project.folder).close()  # our pid, but another process's start time
    assert project_store.read_lock(project.folder) is None


# --------------------------------------------------------------------------- relink


def test_relink_after_the_source_moved(project, data, tmp_path):
    project.save_edit(IDS[0], _mask(project, IDS[0], 6), [2])
    project.close()
    new_home = tmp_path / "archive" / "cohort"
    new_home.parent.mkdir()
    shutil.move(data, new_home)
    with Project.open(project.folder) as again:
        assert again.missing_cases == IDS
        assert again.next_case() is None
        with pytest.raises(CaseReadError, match="relink"):
            again.open_case(IDS[0])
        other = tmp_path / "other"
        write_lgg_patient(other, "TCGA_ZZ_0009_20000101", n=4)
        with pytest.raises(ProjectError, match="lacks 4 of this project's 4 cases"):
            again.relink(other)
        assert again.relink(new_home) == []
        assert again.missing_cases == [] and again.next_case() == IDS[0]
        assert again.open_case(IDS[0]).edit.mask.sum() == 6
    state = json.loads((project.folder / "lggseg_project.json").read_text())
    assert state["source"]["path"] == os.path.join("..", "archive", "cohort")
    with Project.open(project.folder) as third:
        assert third.missing_cases == [] and third.record(IDS[0]).error is None


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    "code, words",
    [(errno.ENOSPC, "disk is full"), (errno.EACCES, "read-only")],
)
def test_unwritable_project_keeps_edits_in_memory_until_they_can_be_saved(
    project, monkeypatch, code, words
):
    import tifffile

    project.load_case(IDS[0])

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tifffile, "imwrite", failing)
    monkeypatch.setattr(project_store, "write_bytes_atomic", failing)
    with pytest.raises(ProjectWriteError, match=words) as info:
        project.save_edit(IDS[0], _mask(project, IDS[0], 3), [0])
    assert "kept in memory" in str(info.value) and str(project.folder) in str(info.value)
    with pytest.raises(ProjectWriteError):
        project.save_edit(IDS[0], _mask(project, IDS[0], 4), [1])  # newer edit replaces it
    assert project.pending_edits == [IDS[0]] and project.record(IDS[0]).pending
    assert project.edit(IDS[0]).mask.sum() == 4, "the queued edit is what the viewer gets back"
    with pytest.raises(ProjectWriteError):
        project.close()
    assert not project.closed, "close refuses while edits would be lost"
    monkeypatch.undo()  # the disk has room again
    project.flush()
    assert project.pending_edits == []
    project.close()
    with Project.open(project.folder) as again:
        assert again.edit(IDS[0]).mask.sum() == 4 and again.record(IDS[0]).status == "in review"


def test_read_only_project_folder_is_reported_at_open(project, monkeypatch):
    project.close()

    def denied(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(project_store, "_create_exclusive", denied)
    with pytest.raises(ProjectWriteError, match="read-only"):
        Project.open(project.folder)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_project_folder_for_real(project):
    project.close()
    os.chmod(project.folder, 0o555)
    try:
        with pytest.raises(ProjectWriteError, match="read-only"):
            Project.open(project.folder)
    finally:
        os.chmod(project.folder, 0o755)


def test_a_case_that_fails_to_read_is_marked_and_the_rest_go_on(data, tmp_path):
    gap, words = BAD_PATIENTS["gap in slice numbers"]
    broken = write_lgg_patient(data, "TCGA_XX_0001_20000101", n=8)
    gap(broken)
    pixels = write_lgg_patient(data, "TCGA_YY_0001_20000101", n=8)
    p = pixels / "TCGA_YY_0001_20000101_3.tif"
    good_bytes = p.read_bytes()
    p.write_bytes(good_bytes[: len(good_bytes) // 3])
    with Project.create(data, tmp_path / "p") as proj:
        assert words in proj.record("TCGA_XX_0001_20000101").error  # names only, found at create
        with pytest.raises(CaseReadError, match="cannot read this TIFF"):
            proj.predict("TCGA_YY_0001_20000101", FakeSegmenter())  # pixels, found on reading
        row = proj.record("TCGA_YY_0001_20000101")
        assert "TCGA_YY_0001_20000101_3.tif" in row.error
        order = [proj.next_case()]
        while (nxt := proj.next_case(order[-1])) not in (None, order[0]):
            order.append(nxt)
        assert order == IDS, "unreadable cases are skipped, the others all come"
        p.write_bytes(good_bytes)  # fixed on disk: reading it again clears the mark
        proj.open_case("TCGA_YY_0001_20000101")
        assert proj.record("TCGA_YY_0001_20000101").error is None


def test_a_background_prefetch_and_autosaves_at_once(project):
    """The widget predicts in a worker thread while the GUI thread autosaves: nothing is lost."""
    project.load_case(IDS[0])
    errors = []

    def prefetch():
        try:
            for case_id in IDS[1:]:
                project.predict(case_id, FakeSegmenter())
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    worker = threading.Thread(target=prefetch)
    worker.start()
    for n in range(1, 30):
        project.save_edit(IDS[0], _mask(project, IDS[0], n), [n % 6])
    worker.join()
    assert errors == []
    project.close()
    with Project.open(project.folder) as again:
        assert again.edit(IDS[0]).mask.sum() == 29
        assert [r.status for r in again.rows()] == ["in review"] + ["predicted"] * 3


# --------------------------------------------------------------------------- rounds (#19)


def test_round_hooks_count_done_cases_and_list_cases_to_repredict(project):
    seg = FakeSegmenter()
    for case_id in IDS:
        project.predict(case_id, seg)
    assert project.current_model == "fake-model" and project.cases_to_repredict() == []
    for case_id in IDS[:2]:
        project.done(case_id)
    assert project.done_count_since_last_round == 2 and not project.round_due()
    project.open_case(IDS[2])
    project.done(IDS[2])
    assert project.round_due() and project.done_cases() == IDS[:3]
    r = project.record_round("fake-model-ft", trained_on=project.done_cases())
    assert r.parent == "fake-model" and project.current_model == "fake-model-ft"
    assert project.done_count_since_last_round == 0 and not project.round_due()
    assert project.cases_to_repredict() == [IDS[3]], "only cases not opened yet"
    project.record_model(IDS[3], "fake-model-ft")
    assert project.cases_to_repredict() == []
    project.use_model("other-model")
    assert project.cases_to_repredict() == [IDS[3]] == project.cases_to_prefetch(n=5)
    project.use_model("fake-model-ft")
    project.close()
    with Project.open(project.folder) as again:
        assert again.rounds[-1].trained_on == IDS[:3] and again.current_model == "fake-model-ft"
        assert again.record(IDS[3]).model == "fake-model-ft"
        again.settings.round_every = 0
        again.done(IDS[3])
        assert again.done_count_since_last_round == 1 and not again.round_due()


# --------------------------------------------------------------------------- NIfTI cases


def test_a_nifti_project_saves_masks_on_the_scans_grid_and_survives_a_relink(tmp_path):
    import nibabel as nib
    from nifti_cases import affine_for, write_case

    from napari_lggseg.cases import read_case

    data = tmp_path / "scans"
    affine = affine_for("LPS", spacing=(1.0, 1.0, 3.0), shape=(32, 32, 12))
    for name in ("Case_A", "Case_B"):
        write_case(data / name, affine=affine, shape=(32, 32, 12), sequences=("FLAIR", "T2"))
    before = tree_hashes(data)
    with Project.create(data, tmp_path / "p") as proj:
        assert proj.source.kind == "nifti" and [r.case_id for r in proj.rows()] == [
            "Case_A",
            "Case_B",
        ]
        pred = proj.predict("Case_A", FakeSegmenter())
        row = proj.record("Case_A")
        assert row.has_expert and row.dice is not None
        assert row.volume_ml == pytest.approx(pred.mask.sum() * 3.0 / 1000), (
            "spacing from the header"
        )
        edit = pred.mask.copy()
        edit[2, 20:24, 20:24] = 1
        proj.save_edit("Case_A", edit, [2])
    saved = list((tmp_path / "p" / "corrections" / "Case_A").iterdir())
    assert sorted(p.name for p in saved) == ["Case_A_mask.json", "Case_A_mask.nii.gz"]
    mask_img = nib.load(tmp_path / "p" / "corrections" / "Case_A" / "Case_A_mask.nii.gz")
    np.testing.assert_allclose(mask_img.affine, affine), "the mask keeps the scan's geometry"
    assert tree_hashes(data) == before
    shutil.move(data, tmp_path / "moved")
    with Project.open(tmp_path / "p") as again:
        assert again.missing_cases == ["Case_A", "Case_B"]
        again.relink(tmp_path / "moved")
        opened = again.open_case("Case_A")
        np.testing.assert_array_equal(opened.edit.mask, edit)
        assert opened.edit.reviewed_slices == [2] and opened.data.spacing[0] == pytest.approx(3.0)
        assert read_case(tmp_path / "moved" / "Case_A").shape == opened.edit.mask.shape


# --------------------------------------------------------------------------- what the widget needs


def test_settings_of_the_view_are_kept_in_the_project_file(project):
    project.set_show_dice(True)
    project.set_round_every(0)
    with pytest.raises(ValueError, match="k >= 0"):
        project.set_round_every(-1)
    project.close()
    with Project.open(project.folder) as again:
        assert again.settings.show_dice and again.settings.round_every == 0
        assert not again.round_due()


def test_a_case_read_ahead_is_not_read_again(project, monkeypatch):
    """The widget reads the next case while it predicts it, then opens it from memory."""
    reads = []
    load = project.source.load
    monkeypatch.setattr(project.source, "load", lambda cid: reads.append(cid) or load(cid))
    data = project.load_case(IDS[1])
    project.predict(IDS[1], FakeSegmenter(), data=data)
    opened = project.open_case(IDS[1], data=data)
    assert reads == [IDS[1]] and opened.data is data and opened.prediction is not None


def test_a_closed_project_writes_nothing_more(project):
    """A background prediction that ends after the project was closed must not write into a
    folder whose lock it no longer holds."""
    project.close()
    state = project.folder / "lggseg_project.json"
    before = state.read_bytes()
    with pytest.raises(ProjectError, match="was closed"):
        project.predict(IDS[0], FakeSegmenter())
    project._save_state_or_mark()
    assert state.read_bytes() == before and not project.prediction_path(IDS[0]).exists()


def test_take_over_is_offered_only_for_a_holder_this_machine_cannot_check():
    here = project_store.LockHolder(os.getpid(), socket.gethostname(), "me", "now", "t")
    there = project_store.LockHolder(1, "other-machine", "ann", "now", "t")
    assert project_store.may_take_over(there)
    assert not project_store.may_take_over(here) and not project_store.may_take_over(None)


def test_a_case_opened_before_its_prediction_gets_the_model_an_edited_one_keeps_its_own(project):
    """The widget opens a case at once and predicts it after: the row names that model; a case
    the person edited keeps the model their edit began from."""
    project.open_case(IDS[0])
    project.predict(IDS[0], FakeSegmenter())
    assert project.record(IDS[0]).model == "fake-model"
    assert project.record(IDS[0]).volume_voxels == 25 * SLICES[IDS[0]]
    project.save_edit(IDS[0], _mask(project, IDS[0], 3), [0])
    other = FakeSegmenter()
    other.name = "other-model"
    project.predict(IDS[0], other)
    assert (
        project.record(IDS[0]).model == "fake-model" and project.record(IDS[0]).volume_voxels == 3
    )

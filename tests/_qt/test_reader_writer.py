"""The reader, writer and sample data in a real napari viewer (under Xvfb via pytest-xvfb)."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import BAD_PATIENTS, PATIENT_ID, tree_hashes, write_lgg_patient

from napari_lggseg._reader import get_reader, prefer_lggseg_reader
from napari_lggseg.lgg_io import SEQUENCES, LGGWriteError, is_corrections_folder, read_corrections

PLUGIN = "napari-lggseg"


def _expected_names(pid: str, mask: bool = True) -> list[str]:
    names = [f"{pid} pre-contrast", f"{pid} post-contrast", f"{pid} FLAIR"]
    return names + [f"{pid} ground truth"] if mask else names


def _check_patient_layers(viewer, folder: Path, pid: str | None = None) -> None:
    """The layers the reader must make, checked against tifffile's own reading of the slices."""
    pid = pid or folder.name
    n = len(
        [
            p
            for p in folder.iterdir()
            if p.name.endswith(".tif") and not p.name.endswith("_mask.tif")
        ]
    )
    assert [layer.name for layer in viewer.layers] == _expected_names(pid)
    image = np.stack([tifffile.imread(folder / f"{pid}_{i}.tif") for i in range(1, n + 1)])
    mask = np.stack([tifffile.imread(folder / f"{pid}_{i}_mask.tif") for i in range(1, n + 1)]) > 0
    for layer in viewer.layers[:3]:
        meta = layer.metadata["lggseg"]
        c = SEQUENCES.index(meta["sequence"])
        assert layer.name == f"{pid} {meta['sequence']}"
        assert layer.data.shape == image.shape[:3] and not layer.rgb
        np.testing.assert_array_equal(np.asarray(layer.data), image[..., c])
        assert layer.visible == (meta["sequence"] == "FLAIR")
        assert layer.colormap.name == "gray"
        lo, hi = layer.contrast_limits
        assert 0 <= lo < hi <= 255
        assert meta["role"] == "image" and meta["patient_id"] == pid
        assert meta["folder"] == str(folder)
        assert meta["slice_files"] == [f"{pid}_{i}.tif" for i in range(1, n + 1)]
        assert isinstance(meta["missing_sequences"], list)
    labels = viewer.layers[-1]
    assert labels._type_string == "labels"
    np.testing.assert_array_equal(np.asarray(labels.data) > 0, mask)
    assert labels.metadata["lggseg"]["role"] == "ground truth"


# --------------------------------------------------------------------------- reading


def test_open_real_patient(make_napari_viewer, real_patient):
    viewer = make_napari_viewer()
    viewer.open(real_patient, plugin=PLUGIN)
    _check_patient_layers(viewer, real_patient)
    assert viewer.dims.range[0].stop - viewer.dims.range[0].start + 1 == len(viewer.layers[0].data)


def test_open_real_patient_without_plugin_argument(make_napari_viewer, real_patient, kaggle_root):
    """Drag and drop / File > Open (``plugin=None``) reach this reader once the data folder is
    registered; ``viewer.open(path)`` keeps napari's own default (see the next test)."""
    viewer = make_napari_viewer()
    prefer_lggseg_reader(kaggle_root)
    viewer.open(real_patient, plugin=None)
    _check_patient_layers(viewer, real_patient)


def test_what_napari_does_without_plugin(make_napari_viewer, make_lgg_patient, tmp_path):
    """Documents napari's behaviour, which the README describes: if this changes, update both."""
    from napari.components import ViewerModel
    from napari.errors import MultipleReaderError

    viewer = make_napari_viewer()
    # 1. viewer.open(path) defaults to plugin="napari": the builtin reader stacks every TIFF of the
    #    folder as one RGB layer (in the dataset, where masks sit beside the slices, it interleaves
    #    images and masks: 2N planes, or an error when the shapes clash)
    assert inspect.signature(ViewerModel.open).parameters["plugin"].default == "napari"
    no_masks = make_lgg_patient(name="TCGA_NM_0009_20000101", n=12, masks=False)
    layers = viewer.open(no_masks)
    assert len(layers) == 1 and layers[0].rgb and "lggseg" not in layers[0].metadata
    assert layers[0].data.shape == (12, 32, 32, 3)
    viewer.layers.clear()
    folder = make_lgg_patient(n=4)
    # 2. plugin=None (what drag and drop and File > Open use): two readers claim it, so napari
    #    asks (a dialog in the GUI, MultipleReaderError from Python) and lists this plugin
    with pytest.raises(MultipleReaderError) as info:
        viewer.open(folder, plugin=None)
    assert PLUGIN in info.value.available_plugins
    # 3. with the preference this plugin's helper stores, no question: our layers
    pattern = prefer_lggseg_reader(tmp_path / "data")
    assert pattern.endswith("*")
    viewer.open(folder, plugin=None)
    _check_patient_layers(viewer, folder)
    viewer.layers.clear()
    viewer.open(folder / f"{PATIENT_ID}_3.tif", plugin=None)
    _check_patient_layers(viewer, folder)
    viewer.layers.clear()
    # ... and the GUI path (what a drop on the canvas calls) opens it without a dialog
    viewer.window._qt_viewer._qt_open([str(folder)], stack=False)
    _check_patient_layers(viewer, folder)


def test_other_tiffs_and_folders_are_left_to_napari(make_napari_viewer, tmp_path):
    from napari.plugins import _npe2

    make_napari_viewer()  # registers the plugins
    photo = tmp_path / "photo.tif"
    tifffile.imwrite(photo, np.zeros((8, 8), np.uint8))
    other = tmp_path / "stack_2020.tif"
    tifffile.imwrite(other, np.zeros((8, 8), np.uint8))
    assert PLUGIN not in _npe2.get_readers(str(photo))
    assert get_reader(str(photo)) is None
    assert get_reader(str(other)) is None  # offered by pattern, but its folder is not a patient
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "missing")) is None
    assert get_reader([str(photo), str(other)]) is None


def test_open_one_slice_opens_the_patient(make_napari_viewer, make_lgg_patient):
    folder = make_lgg_patient(n=12)
    viewer = make_napari_viewer()
    viewer.open(folder / f"{PATIENT_ID}_10.tif", plugin=PLUGIN)
    _check_patient_layers(viewer, folder)
    viewer.layers.clear()
    viewer.open(folder / f"{PATIENT_ID}_2_mask.tif", plugin=PLUGIN)
    _check_patient_layers(viewer, folder)


def test_open_root_opens_its_first_patient(make_napari_viewer, make_lgg_patient, tmp_path):
    make_lgg_patient(name="TCGA_BB_0002_20000101", n=3)
    first = make_lgg_patient(name="TCGA_AA_0001_20000101", n=4)
    viewer = make_napari_viewer()
    with pytest.warns(
        UserWarning, match="holds 2 patients; opened the first, TCGA_AA_0001_20000101"
    ):
        viewer.open(tmp_path / "data", plugin=PLUGIN)
    _check_patient_layers(viewer, first)


def test_patient_without_masks_has_no_labels(make_napari_viewer, make_lgg_patient):
    folder = make_lgg_patient(n=3, masks=False)
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == _expected_names(PATIENT_ID, mask=False)


# --------------------------------------------------------------------------- writing


def test_save_corrections_and_open_them(make_napari_viewer, make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=6)
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    labels = viewer.layers[f"{PATIENT_ID} ground truth"]
    edited = np.asarray(labels.data).copy()
    edited[2, 5:9, 5:9] = 1  # the person paints a bit more tumour on slice 3
    edited[4] = 0
    labels.data = edited
    labels.metadata["lggseg"]["reviewed_slices"] = [2, 4]
    labels.metadata["lggseg"]["model"] = "unit-test-model"
    viewer.layers.selection = {labels}
    out = tmp_path / "corrections" / PATIENT_ID
    before = tree_hashes(folder)

    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)

    assert written == [str(out / f"{PATIENT_ID}_{i}_mask.tif") for i in range(1, 7)] + [
        str(out / "lggseg_corrections.json")
    ]
    assert tree_hashes(folder) == before, "the dataset's expert masks must not change"
    corr = read_corrections(out)
    np.testing.assert_array_equal(corr.mask, edited)
    assert corr.reviewed_slices == [2, 4] and corr.model == "unit-test-model"
    assert corr.source_folder == folder.resolve()

    # open the corrections folder: images plus the corrections as Labels, metadata kept for resaving
    viewer.layers.clear()
    viewer.open(out, plugin=PLUGIN)
    names = [layer.name for layer in viewer.layers]
    assert names == _expected_names(PATIENT_ID) + [f"{PATIENT_ID} corrections"]
    corrected = viewer.layers[f"{PATIENT_ID} corrections"]
    np.testing.assert_array_equal(np.asarray(corrected.data), edited)
    meta = corrected.metadata["lggseg"]
    assert meta["role"] == "corrections" and meta["reviewed_slices"] == [2, 4]
    assert meta["model"] == "unit-test-model" and meta["folder"] == str(folder)
    assert not viewer.layers[f"{PATIENT_ID} ground truth"].visible

    # one slice of the corrections folder opens the same, and saving again over it works
    viewer.layers.clear()
    viewer.open(out / f"{PATIENT_ID}_1_mask.tif", plugin=PLUGIN)
    corrected = viewer.layers[f"{PATIENT_ID} corrections"]
    corrected.data = np.zeros_like(edited)
    viewer.layers.selection = {corrected}
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert not read_corrections(out).mask.any()
    assert read_corrections(out).reviewed_slices == [2, 4]


def test_writer_refuses_the_patient_folder(make_napari_viewer, make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=3)
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    labels = viewer.layers[-1]
    labels.data = np.ones_like(labels.data)
    viewer.layers.selection = {labels}
    before = tree_hashes(tmp_path)
    with pytest.raises(LGGWriteError, match="holds patient images"):
        viewer.layers.save(str(folder), selected=True, plugin=PLUGIN)
    assert tree_hashes(tmp_path) == before


def test_writer_reports_a_mask_of_another_shape(make_napari_viewer, make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=3)
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    meta = viewer.layers[-1].metadata
    layer = viewer.add_labels(np.zeros((2, 32, 32), np.uint8), name="cropped", metadata=meta)
    viewer.layers.selection = {layer}
    with pytest.raises(LGGWriteError, match="refusing to save a mask of another patient"):
        viewer.layers.save(str(tmp_path / "out"), selected=True, plugin=PLUGIN)
    assert not (tmp_path / "out").exists()


def test_writer_needs_an_lgg_layer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((3, 8, 8), np.uint8), name="my labels")
    viewer.layers.selection = {layer}
    # an OSError on purpose: napari's save hides a writer's ValueError behind "not a valid writer"
    with pytest.raises(LGGWriteError, match="'my labels' does not belong to an LGG patient"):
        viewer.layers.save(str(tmp_path / "out"), selected=True, plugin=PLUGIN)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- sample data


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_patient")
    pid = "SYNTH_LGG_0001"
    assert [layer.name for layer in viewer.layers] == _expected_names(pid)
    flair = viewer.layers[f"{pid} FLAIR"]
    mask = np.asarray(viewer.layers[f"{pid} ground truth"].data)
    assert flair.data.shape == mask.shape == (24, 256, 256)
    assert flair.visible and flair.metadata["lggseg"]["folder"] is None
    assert flair.metadata["lggseg"]["missing_sequences"] == []
    assert 3 <= mask.any(axis=(1, 2)).sum() < 24
    # the lesion is FLAIR-bright
    assert (
        np.asarray(flair.data)[mask > 0].mean()
        > np.asarray(flair.data)[(mask == 0) & (flair.data > 30)].mean() + 50
    )
    # and cannot be saved as corrections: it has no image folder
    viewer.layers.selection = {viewer.layers[-1]}
    with pytest.raises(LGGWriteError, match="no patient image folder"):
        viewer.layers.save("unused", selected=True, plugin=PLUGIN)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("case", list(BAD_PATIENTS))
def test_bad_input_gives_a_clear_error_and_napari_carries_on(make_napari_viewer, tmp_path, case):
    breaker, words = BAD_PATIENTS[case]
    folder = write_lgg_patient(tmp_path / "bad", n=8)
    bad_name = breaker(folder)
    good = write_lgg_patient(tmp_path / "good", name="TCGA_GG_0003_20000101", n=3)
    viewer = make_napari_viewer()
    assert get_reader(str(folder)) is not None, "an LGG-named folder is taken, to say what is wrong"
    before = tree_hashes(tmp_path)
    with pytest.raises(Exception) as info:
        viewer.open(folder, plugin=PLUGIN)
    assert bad_name in str(info.value) and words in str(info.value), str(info.value)
    assert len(viewer.layers) == 0
    assert tree_hashes(tmp_path) == before
    viewer.open(good, plugin=PLUGIN)  # napari carries on
    assert len(viewer.layers) == 4


def test_bad_input_in_the_gui_shows_the_message(make_napari_viewer, tmp_path, monkeypatch):
    """A drop of a broken patient: napari shows our message in its reader dialog, offering its
    other reader; the user cancels and the viewer carries on."""
    from napari._qt.dialogs import qt_reader_dialog

    folder = write_lgg_patient(tmp_path / "bad", n=8)
    bad_name = BAD_PATIENTS["gap in slice numbers"][0](folder)
    viewer = make_napari_viewer()
    prefer_lggseg_reader(tmp_path / "bad")
    shown = []

    def answer_cancel(dialog):  # stands in for the person clicking Cancel in the modal dialog
        shown.append(dialog.findChildren(qt_reader_dialog.QLabel)[0].text())
        return "", False

    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "get_user_choices", answer_cancel)
    viewer.window._qt_viewer._qt_open([str(folder)], stack=False)
    assert len(shown) == 1 and bad_name in shown[0] and "slice 3 is missing" in shown[0], shown
    assert len(viewer.layers) == 0


def test_sidecar_pointing_at_missing_folder(make_napari_viewer, make_lgg_patient, tmp_path):
    import shutil

    from napari_lggseg.lgg_io import write_corrections

    folder = make_lgg_patient(n=3)
    out = tmp_path / "corr"
    write_corrections(out, np.zeros((3, 32, 32), np.uint8), PATIENT_ID, folder)
    shutil.rmtree(folder)
    assert is_corrections_folder(out)
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="does not exist"):
        viewer.open(out, plugin=PLUGIN)
    assert len(viewer.layers) == 0


def test_reader_never_raises_on_odd_paths(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in ["", "\0bad", 12, None, [], [str(tmp_path)] * 2, "http://example.com/x_1.tif"]:
            assert get_reader(path) is None


# --------------------------------------------------------------------------- NIfTI scans

NIFTI_SHAPE = (40, 44, 30)  # file voxels (i, j, k)


def _nifti_case(tmp_path, name="C1", codes="RAS", spacing=(3.2, 3.4, 5.0), **kwargs) -> Path:
    from nifti_cases import affine_for, write_case

    affine = affine_for(codes, spacing, NIFTI_SHAPE)
    return write_case(tmp_path / "cases" / name, affine, NIFTI_SHAPE, **kwargs)


def _scan_names(cid: str, sequences=("pre-contrast", "post-contrast", "T2", "FLAIR")) -> list:
    return [f"{cid} {s}" for s in sequences]


def test_open_nifti_case_folder_with_its_geometry(make_napari_viewer, tmp_path):
    import nibabel as nib

    from napari_lggseg import cases

    folder = _nifti_case(tmp_path)
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="C1: stored as RAS"):  # what was done, said once
        viewer.open(folder, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == _scan_names("C1") + ["C1 ground truth"]
    case = cases.read_case(folder, all_sequences=True)
    flair = viewer.layers["C1 FLAIR"]
    assert flair.visible and not viewer.layers["C1 T2"].visible
    np.testing.assert_array_equal(np.asarray(flair.data), case.image[..., 1])
    for layer in viewer.layers:
        assert layer.data.shape == (30, 44, 40)
        assert tuple(layer.scale) == pytest.approx((5.0, 3.4, 3.2))  # mm, napari's (Z, Y, X)
        assert tuple(layer.translate) == pytest.approx(tuple(flair.translate))
        meta = layer.metadata["lggseg"]
        assert meta["patient_id"] == "C1" and meta["spacing"] == pytest.approx([5.0, 3.4, 3.2])
        assert meta["scan_source"] == str(folder.resolve())
        assert str(folder / "C1_flair.nii.gz") in meta["source_paths"]
        np.testing.assert_allclose(meta["affine"], case.model_affine)
    truth = viewer.layers["C1 ground truth"]
    assert truth.metadata["lggseg"]["role"] == "ground truth"
    np.testing.assert_array_equal(np.asarray(truth.data), case.label)
    # a world point (mm) falls on the same voxel of every layer: sequences and masks overlay
    lesion = np.argwhere(case.label)[0]
    world = flair.data_to_world(lesion)
    assert np.allclose(truth.world_to_data(world), lesion)
    # the world is the scan's LPS mm: the voxel's position from the file's own affine
    ijk = np.linalg.inv(case.affine) @ case.model_affine @ [*lesion, 1]
    ras = nib.load(folder / "C1_flair.nii.gz").affine @ np.rint(ijk)
    assert np.allclose(world, [ras[2], -ras[1], -ras[0]], atol=1e-6)
    # the 3-D view is not squashed: the world extent is the physical size
    viewer.dims.ndisplay = 3
    size = np.diff(flair.extent.world, axis=0)[0]
    assert size == pytest.approx(np.array([30 * 5.0, 44 * 3.4, 40 * 3.2]) - [5.0, 3.4, 3.2])


def test_open_nifti_file_root_and_flair_only(make_napari_viewer, tmp_path):
    from napari.plugins import _npe2

    folder = _nifti_case(tmp_path, codes="LPS")
    _nifti_case(tmp_path, "C2", codes="LPS")
    viewer = make_napari_viewer()
    assert PLUGIN in _npe2.get_readers(str(folder / "C1_t1ce.nii.gz"))
    viewer.open(folder / "C1_t1ce.nii.gz", plugin=PLUGIN)  # one sequence opens its case
    assert [layer.name for layer in viewer.layers] == _scan_names("C1") + ["C1 ground truth"]
    viewer.layers.clear()
    with pytest.warns(UserWarning, match="holds 2 cases; opened the first, C1"):
        viewer.open(folder.parent, plugin=PLUGIN)
    assert len(viewer.layers) == 5
    viewer.layers.clear()
    lone = tmp_path / "scan_7.nii.gz"
    (folder / "C1_flair.nii.gz").rename(lone)
    viewer.open(lone, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["scan_7 FLAIR"]
    meta = viewer.layers[0].metadata["lggseg"]
    assert meta["missing_sequences"] == ["pre-contrast", "post-contrast"]
    assert get_reader(str(tmp_path / "nothing.nii.gz")) is None
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "empty")) is None


def test_save_nifti_mask_in_the_scans_geometry_and_reopen(make_napari_viewer, tmp_path):
    import json

    import nibabel as nib

    folder = _nifti_case(tmp_path, codes="LAS", spacing=(3.0, 3.5, 4.0))
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    labels = viewer.layers["C1 ground truth"]
    edited = np.asarray(labels.data).copy()
    edited[12, 5:9, 5:9] = 1  # the person paints more tumour on one slice
    labels.data = edited
    labels.metadata["lggseg"]["reviewed_slices"] = [12]
    viewer.layers.selection = {labels}
    out = tmp_path / "masks" / "C1"
    before = tree_hashes(tmp_path / "cases")

    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)

    assert written == [str(out / "C1_mask.nii.gz"), str(out / "C1_mask.json")]
    assert tree_hashes(tmp_path / "cases") == before, "the scans must not change"
    mask, flair = nib.load(out / "C1_mask.nii.gz"), nib.load(folder / "C1_flair.nii.gz")
    np.testing.assert_array_equal(mask.affine, flair.affine)
    assert mask.header.get_qform(coded=True)[1] == flair.header.get_qform(coded=True)[1]
    assert mask.header.get_sform(coded=True)[1] == flair.header.get_sform(coded=True)[1]
    assert mask.shape == flair.shape and mask.get_data_dtype() == np.uint8
    # in the file's own voxel order: what ITK-SNAP or Slicer shows over the FLAIR
    truth = np.asanyarray(nib.load(folder / "C1_seg.nii.gz").dataobj) > 0
    file_mask = np.asanyarray(mask.dataobj)
    assert (file_mask > truth).sum() == 16 and (file_mask >= truth).all()
    sidecar = json.loads((out / "C1_mask.json").read_text())
    assert sidecar["kind"] == "corrections" and sidecar["reviewed_slices"] == [12]

    viewer.layers.clear()
    viewer.open(out, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers][-1] == "C1 corrections"
    corrected = viewer.layers["C1 corrections"]
    np.testing.assert_array_equal(np.asarray(corrected.data), edited)
    assert tuple(corrected.scale) == pytest.approx((4.0, 3.5, 3.0))
    assert corrected.metadata["lggseg"]["reviewed_slices"] == [12]
    assert not viewer.layers["C1 ground truth"].visible
    # and saving the reopened corrections again over themselves works
    viewer.layers.selection = {corrected}
    corrected.data = np.zeros_like(edited)
    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert written == [str(out / "C1_mask.nii.gz"), str(out / "C1_mask.json")]
    assert not np.asanyarray(nib.load(out / "C1_mask.nii.gz").dataobj).any()


def test_nifti_writer_refuses_the_case_folder(make_napari_viewer, tmp_path):
    folder = _nifti_case(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(folder, plugin=PLUGIN)
    viewer.layers.selection = {viewer.layers["C1 ground truth"]}
    before = tree_hashes(tmp_path)
    with pytest.raises(LGGWriteError, match="holds the scans of C1"):
        viewer.layers.save(str(folder), selected=True, plugin=PLUGIN)
    from napari_lggseg._writer import write_labels

    layer = viewer.layers["C1 ground truth"]
    with pytest.raises(LGGWriteError, match="give a folder name without an extension"):
        write_labels(
            str(tmp_path / "out" / "C1_mask.nii.gz"), layer.data, {"metadata": layer.metadata}
        )
    assert tree_hashes(tmp_path) == before


def test_bad_nifti_gives_a_clear_error_and_napari_carries_on(make_napari_viewer, tmp_path):
    folder = _nifti_case(tmp_path)
    (folder / "C1_t1.nii.gz").write_text("not a scan")
    good = _nifti_case(tmp_path, "C2")
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="C1_t1.nii.gz: not a readable NIfTI file"):
        viewer.open(folder, plugin=PLUGIN)
    assert len(viewer.layers) == 0
    viewer.open(good, plugin=PLUGIN)
    assert len(viewer.layers) == 5


BRATS_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "external" / "brats18"


def test_real_brats_case_opens_segments_saves_and_reopens(make_napari_viewer, tmp_path):
    """A real BraTS-2018 case: every sequence, a prediction made as the widget makes it (the
    layer's metadata derived from the FLAIR's), saved and reopened aligned with the expert label."""
    import nibabel as nib

    from napari_lggseg import cases
    from napari_lggseg.geometry import segment_case
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.layer_meta import Role, derive_meta, read_meta
    from napari_lggseg.metrics import dice

    root = BRATS_ROOT.resolve()
    if not root.is_dir():
        pytest.skip(f"real BraTS cases not present at {root}")
    case_dir = cases.find_cases(root)[0]
    cid = case_dir.name
    viewer = make_napari_viewer()
    viewer.open(case_dir, plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == _scan_names(cid) + [f"{cid} ground truth"]
    flair = viewer.layers[f"{cid} FLAIR"]
    assert flair.data.shape == (155, 240, 240) and tuple(flair.scale) == (1.0, 1.0, 1.0)
    case = cases.read_case(case_dir)
    seg = segment_case(Segmenter.from_store("lgg-fast", device="cpu"), case)
    meta = derive_meta(read_meta(flair), Role.PREDICTION, model=seg.model)
    pred = viewer.add_labels(
        seg.mask,
        name=f"{cid} prediction",
        metadata={"lggseg": meta},
        scale=flair.scale,
        translate=flair.translate,
    )
    viewer.layers.selection = {pred}
    out = tmp_path / "out" / cid
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    written = nib.load(out / f"{cid}_mask.nii.gz")
    np.testing.assert_array_equal(written.affine, nib.load(case.files["FLAIR"]).affine)
    truth = np.asanyarray(nib.load(case.files["label"]).dataobj) > 0
    assert dice(np.asanyarray(written.dataobj), truth) > 0.7
    viewer.layers.clear()
    viewer.open(out, plugin=PLUGIN)
    reopened = viewer.layers[f"{cid} prediction"]
    np.testing.assert_array_equal(np.asarray(reopened.data), seg.mask)

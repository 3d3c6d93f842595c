"""The layer schema (``layer_meta``) and the patients found from it (``patients``), on real napari
layers without a window."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels

from napari_lggseg._reader import patient_layers
from napari_lggseg.layer_meta import (
    MASK_ROLES,
    META_KEY,
    PLUGIN,
    Role,
    affine_of,
    derive_meta,
    layer_kwargs,
    make_meta,
    patient_id_of,
    read_meta,
    role_of,
    spacing_of,
    unwrap_viewer,
)
from napari_lggseg.patients import (
    capture,
    capture_mapping,
    find_patients,
    image_layers,
    training_candidates,
)


def test_public_modules_import_neither_qt_nor_napari():
    code = (
        "import sys, napari_lggseg.layer_meta, napari_lggseg.patients, napari_lggseg.review; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'torch')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_plugin_name_matches_the_manifest():
    from importlib.resources import files

    import yaml

    manifest = yaml.safe_load((files("napari_lggseg") / "napari.yaml").read_text())
    assert manifest["name"] == PLUGIN


def test_make_and_read_round_trip_on_a_layer():
    affine = np.diag([0.9, 0.8, 3.0, 1.0])
    meta = make_meta(
        "P1",
        Role.IMAGE,
        source_paths=["/data/p1_flair.nii.gz"],
        affine=affine,
        spacing=(3.0, 0.8, 0.9),
        sequence="FLAIR",
    )
    layer = Image(np.zeros((2, 4, 4)), **layer_kwargs("P1 FLAIR", meta))
    assert layer.name == "P1 FLAIR"
    assert read_meta(layer) is layer.metadata[META_KEY], "the live dict, so edits stick"
    assert role_of(layer) == "image" and role_of(layer) == Role.IMAGE
    assert patient_id_of(layer) == "P1"
    assert read_meta(layer)["source_paths"] == ["/data/p1_flair.nii.gz"]
    assert read_meta(layer)["sequence"] == "FLAIR"
    np.testing.assert_array_equal(affine_of(layer), affine)
    assert spacing_of(layer) == (3.0, 0.8, 0.9)
    assert type(read_meta(layer)["role"]) is str, "stored as a plain value"


def test_meta_without_geometry_has_none():
    layer = Labels(np.zeros((2, 4, 4), np.uint8), **layer_kwargs("x", make_meta("P", "prediction")))
    assert affine_of(layer) is None and spacing_of(layer) is None
    assert "source_paths" not in read_meta(layer)


def test_read_meta_of_foreign_layers_and_layer_tuples():
    assert read_meta(Image(np.zeros((3, 3)))) is None
    assert read_meta(Image(np.zeros((3, 3)), metadata={META_KEY: {"role": "image"}})) is None
    assert read_meta(Image(np.zeros((3, 3)), metadata={META_KEY: "junk"})) is None
    assert read_meta(object()) is None
    data, kwargs, _kind = patient_layers("P", np.zeros((2, 4, 4, 3), np.uint8), None)[0]
    assert read_meta(kwargs)["patient_id"] == "P"
    assert read_meta(kwargs["metadata"])["role"] == Role.IMAGE


def test_make_meta_refuses_bad_input():
    with pytest.raises(ValueError, match="patient id"):
        make_meta("", Role.IMAGE)
    with pytest.raises(ValueError):
        make_meta("P", "segmentation")
    with pytest.raises(ValueError, match="4x4"):
        make_meta("P", Role.IMAGE, affine=np.eye(3))


def test_derive_meta_copies_geometry_not_review_state():
    src = make_meta(
        "P", Role.IMAGE, folder="/d/P", slice_files=["P_1.tif"], spacing=(1, 1, 2),
        scan_source="/d/P.nii.gz", sequence="FLAIR",
    )  # fmt: skip
    src["reviewed_slices"] = [3]
    pred = derive_meta(src, Role.PREDICTION, model="m", reviewed_slices=[])
    assert pred["role"] == "prediction" and pred["model"] == "m"
    assert pred["folder"] == "/d/P" and pred["spacing"] == [1.0, 1.0, 2.0]
    assert pred["reviewed_slices"] == [] and pred["scan_source"] == "/d/P.nii.gz"
    assert "sequence" not in pred
    pred["slice_files"].append("x")
    assert src["slice_files"] == ["P_1.tif"], "a copy, not shared lists"


def test_mask_roles():
    assert set(MASK_ROLES) == {"prediction", "corrections", "ground truth"}


def test_unwrap_viewer_takes_the_viewer_out_of_napari_proxy():
    from napari.utils._proxies import PublicOnlyProxy

    viewer = ViewerModel()
    assert unwrap_viewer(PublicOnlyProxy(viewer)) is viewer
    assert unwrap_viewer(viewer) is viewer


# ------------------------------------------------------------------------------- patients


def _open_patient(viewer, pid="P", n=4, with_mask=True, folder="/data/P"):
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (n, 8, 8, 3), dtype=np.uint8)
    mask = np.zeros((n, 8, 8), np.uint8) if with_mask else None
    files = [f"{pid}_{i + 1}.tif" for i in range(n)]
    for data, kwargs, kind in patient_layers(pid, image, mask, folder, files):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return image


def test_find_patients_groups_layers_by_patient():
    viewer = ViewerModel()
    _open_patient(viewer, "A")
    _open_patient(viewer, "B", with_mask=False, folder=None)
    viewer.add_image(np.zeros((4, 8, 8)), name="not a patient")
    patients = find_patients(viewer.layers)
    assert list(patients) == ["A", "B"]
    a = patients["A"]
    assert set(a.images) == {"FLAIR", "pre-contrast", "post-contrast"}
    assert a.flair is viewer.layers["A FLAIR"]
    assert a.ground_truth is viewer.layers["A ground truth"]
    assert a.folder == "/data/P" and a.slice_files[0] == "A_1.tif"
    assert patients["B"].ground_truth is None and patients["B"].folder is None


def test_capture_binds_the_arrays_and_checks_flair():
    viewer = ViewerModel()
    image = _open_patient(viewer, "A")
    inp = capture(find_patients(viewer.layers)["A"])
    np.testing.assert_array_equal(inp.volume(), image)
    assert inp.truth is not None and inp.patient_id == "A"
    viewer.layers.remove("A FLAIR")
    with pytest.raises(ValueError, match="FLAIR layer is not open"):
        capture(find_patients(viewer.layers)["A"])


def test_capture_mapping_of_plain_layers():
    viewer = ViewerModel()
    f = viewer.add_image(np.ones((3, 5, 5)), name="flair scan")
    p = viewer.add_image(np.ones((3, 5, 6)), name="t1")
    viewer.add_image(np.ones((5, 5, 3)), name="photo", rgb=True)
    assert [lyr.name for lyr in image_layers(viewer.layers)] == ["flair scan", "t1"]
    inp = capture_mapping(f)
    assert inp.patient_id == "flair scan" and inp.folder is None
    with pytest.raises(ValueError, match="has shape"):
        capture_mapping(f, pre=p)
    with pytest.raises(ValueError, match="FLAIR"):
        capture_mapping(None)


def test_training_candidates_are_masks_with_reviewed_slices():
    viewer = ViewerModel()
    _open_patient(viewer, "A")
    gt = viewer.layers["A ground truth"]
    assert training_candidates(viewer.layers) == []
    read_meta(gt)["reviewed_slices"] = [2, 0]
    [(layer, patient, slices)] = training_candidates(viewer.layers)
    assert layer is gt and patient.patient_id == "A" and slices == [0, 2]

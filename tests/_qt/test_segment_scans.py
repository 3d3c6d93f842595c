"""Segment tumour on scans (NIfTI from the plugin's reader, or another reader's layers mapped
through "Map image layers…"), and the Shape panel, in a real napari viewer with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from nifti_cases import affine_for, write_case

from napari_lggseg._widgets._forms import MAP_LAYERS
from napari_lggseg._widgets._shape_panel import NOT_DEFINED, feature_text
from napari_lggseg.layer_meta import PLUGIN
from napari_lggseg.synthetic import SYNTH_PATIENT_ID

TIMEOUT = 30000  # ms
SPACING = (1.0, 0.9, 0.9)  # z, y, x mm: slices much thinner than the network's 4 mm


def _predictions(viewer):
    return [
        lyr for lyr in viewer.layers if lyr.metadata.get("lggseg", {}).get("role") == "prediction"
    ]


def _dock(viewer, tiny_model_store):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment tumour")
    widget.select_model(tiny_model_store)
    widget.form.tta.value = False
    return widget


def _run(qtbot, widget):
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.shape.settled, timeout=TIMEOUT)


def _paint_blob(layer, z0, z1, centre=(24, 24)):
    layer.selected_label = 1
    layer.brush_size = 9
    for z in range(z0, z1):
        layer.paint((z, *centre), 1)  # napari's brush: Labels.events.paint


def _case(tmp_path):
    """A RAS-stored NIfTI case (the reader reorients it to axial, and says so), 0.9 x 0.9 mm in
    plane, 1 mm slices."""
    shape = (48, 48, 40)  # voxel axes R, A, S
    affine = affine_for("RAS", spacing=(SPACING[2], SPACING[1], SPACING[0]), shape=shape)
    return write_case(tmp_path / "SCAN_0001", affine=affine, shape=shape)


def test_nifti_case_segments_like_the_cli_and_saves_on_the_scan_grid(
    make_napari_viewer, qtbot, tiny_model_store, tmp_path
):
    import nibabel as nib

    from napari_lggseg import cases
    from napari_lggseg.geometry import segment_case
    from napari_lggseg.inference import Segmenter

    case_dir = _case(tmp_path)
    cid = case_dir.name
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning):  # the reader's notes (reoriented) as a notification
        viewer.open(case_dir, plugin=PLUGIN)
    flair = viewer.layers[f"{cid} FLAIR"]
    notes = flair.metadata["lggseg"]["notes"]
    assert notes and tuple(flair.scale) == pytest.approx(SPACING)
    widget = _dock(viewer, tiny_model_store)
    assert widget.patient_id == cid
    row = widget.form.spacing_row
    assert row.use_spacing.value and not row.use_spacing.enabled  # from the file, not typed
    assert [row[f"spacing_{a}"].value for a in "zyx"] == pytest.approx(SPACING)
    assert not any(row[f"spacing_{a}"].enabled for a in "zyx")

    _run(qtbot, widget)
    (pred,) = _predictions(viewer)
    assert tuple(pred.scale) == tuple(flair.scale)
    assert tuple(pred.translate) == tuple(flair.translate)
    meta = pred.metadata["lggseg"]
    for key in ("affine", "spacing", "scan_source", "source_paths"):
        assert meta[key] == flair.metadata["lggseg"][key], key
    # the same mask as lggseg segment's path (geometry.segment_case) with the same options
    case = cases.read_case(case_dir)
    cli = segment_case(
        Segmenter.from_store(tiny_model_store, "cpu"),
        case,
        threshold=widget.threshold,
        postprocess=widget.postprocess,
    )
    np.testing.assert_array_equal(np.asarray(pred.data), cli.mask.astype(np.uint8))
    text = widget.sequences_label.text()
    assert notes[0] in text and "40 slices of 1 mm resampled to 10 slices" in text, text

    voxels = int((np.asarray(pred.data) > 0).sum())
    ml = voxels * float(np.prod(SPACING)) / 1000
    label = widget.volume_label.text()  # "Tumour volume: N voxels = X mL"
    assert f"{voxels:,} voxels = " in label
    assert float(label.split(" = ")[1].split()[0]) == pytest.approx(ml, abs=0.006)
    assert widget.shape.values["volume_ml"] == pytest.approx(ml)

    out = tmp_path / "out" / cid
    viewer.layers.selection = {pred}
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    written = nib.load(out / f"{cid}_mask.nii.gz")
    source = nib.load(case.files["FLAIR"])
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.shape == source.shape
    assert int((np.asanyarray(written.dataobj) > 0).sum()) == voxels


def test_shape_panel_follows_edits_of_a_scan_mask(
    make_napari_viewer, qtbot, tiny_model_store, tmp_path
):
    case_dir = _case(tmp_path)
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning):
        viewer.open(case_dir, plugin=PLUGIN)
    widget = _dock(viewer, tiny_model_store)
    _run(qtbot, widget)
    (pred,) = _predictions(viewer)
    before = dict(widget.shape.values)
    assert widget.shape.layer_name == pred.name

    _paint_blob(pred, 10, 20)
    assert not widget.shape.settled  # debounced: measured after the strokes, off the GUI thread
    qtbot.waitUntil(lambda: widget.shape.settled, timeout=TIMEOUT)
    after = widget.shape.values
    voxels = int((np.asarray(pred.data) > 0).sum())
    assert after["volume_ml"] == pytest.approx(voxels * float(np.prod(SPACING)) / 1000)
    assert after["volume_ml"] != before["volume_ml"]
    for key in ("bounding_ellipsoid_volume_ratio", "angular_sd", "margin_fluctuation"):
        assert after[key] is not None, key
        assert widget.shape.labels[key].text() == feature_text(key, after[key])
    assert widget.shape.labels["volume_ml"].text().endswith(" mL")


def test_another_readers_layers_use_their_scale(
    make_napari_viewer, qtbot, tiny_model_store, tmp_path
):
    """Image layers of another NIfTI reader carry the spacing as ``scale`` and no plugin
    metadata: mapped as FLAIR, they are segmented with that spacing and measured in mL."""
    from napari_lggseg import cases
    from napari_lggseg.geometry import segment_volume
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.preprocess import assemble_channels

    case = cases.read_case(_case(tmp_path))
    flair_data = case.image[..., 1]
    viewer = make_napari_viewer()
    viewer.add_image(flair_data, name="their flair", scale=SPACING, translate=(5.0, -3.0, 2.0))
    widget = _dock(viewer, tiny_model_store)
    widget.form.patient.value = MAP_LAYERS
    assert widget.form.mapping.flair_layer.value == "their flair"
    assert not widget.form.spacing_row.use_spacing.enabled
    _run(qtbot, widget)
    (pred,) = _predictions(viewer)
    assert tuple(pred.scale) == pytest.approx(SPACING)
    assert tuple(pred.translate) == (5.0, -3.0, 2.0)
    expected = segment_volume(
        Segmenter.from_store(tiny_model_store, "cpu"),
        assemble_channels(flair_data, None, None),
        SPACING,
        threshold=widget.threshold,
        postprocess=widget.postprocess,
    )
    np.testing.assert_array_equal(np.asarray(pred.data), expected.mask.astype(np.uint8))
    assert "resampled to 10 slices" in widget.sequences_label.text()
    voxels = int((np.asarray(pred.data) > 0).sum())
    label = widget.volume_label.text()
    assert float(label.split(" = ")[1].split()[0]) == pytest.approx(
        voxels * float(np.prod(SPACING)) / 1000, abs=0.006
    )


def test_lgg_sample_shape_panel_without_a_spacing(make_napari_viewer, qtbot, tiny_model_store):
    """LGG slices carry no spacing: the shape features are shown, the volume in mL only once a
    spacing is typed; an edit changes the figures; no through-plane resampling note."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_patient")
    widget = _dock(viewer, tiny_model_store)
    assert widget.form.spacing_row.use_spacing.enabled and widget.spacing is None
    _run(qtbot, widget)
    (pred,) = _predictions(viewer)
    assert "resampled" not in widget.sequences_label.text()
    panel = widget.shape
    assert panel.labels["volume_ml"].text() == NOT_DEFINED
    bevr = panel.values["bounding_ellipsoid_volume_ratio"]
    assert bevr is not None and 0 < bevr <= 1.2

    _paint_blob(pred, 2, 8, centre=(20, 20))
    qtbot.waitUntil(lambda: panel.settled, timeout=TIMEOUT)
    assert panel.values["bounding_ellipsoid_volume_ratio"] != bevr

    row = widget.form.spacing_row
    row.use_spacing.value = True
    row.spacing_z.value, row.spacing_y.value, row.spacing_x.value = 2.0, 0.5, 0.5
    qtbot.waitUntil(lambda: panel.settled, timeout=TIMEOUT)
    voxels = int((np.asarray(pred.data) > 0).sum())
    assert panel.labels["volume_ml"].text() == f"{voxels * 0.5 / 1000:.2f} mL"
    assert SYNTH_PATIENT_ID in panel.layer_name

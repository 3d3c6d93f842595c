"""The Qt-free segmentation session on a real napari ViewerModel (no window): placing results
without overwriting edits, re-thresholding that keeps reviewed slices, volume and Dice."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_lggseg._reader import patient_layers
from napari_lggseg.inference import Segmentation
from napari_lggseg.layer_meta import read_meta
from napari_lggseg.metrics import dice
from napari_lggseg.patients import capture, capture_mapping, find_patients
from napari_lggseg.session import RunOutcome, SegmentSession, segment_input

N, SIZE = 6, 32


def _viewer_with_patient(pid="P", folder="/data/P"):
    viewer = ViewerModel()
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (N, SIZE, SIZE, 3), dtype=np.uint8)
    truth = np.zeros((N, SIZE, SIZE), np.uint8)
    truth[1:5, 8:20, 8:20] = 1
    files = [f"{pid}_{i + 1}.tif" for i in range(N)]
    for data, kwargs, kind in patient_layers(pid, image, truth, folder, files):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer, truth


def _outcome(prob=None, threshold=0.5):
    if prob is None:
        prob = np.zeros((N, SIZE, SIZE), np.float32)
        prob[1:5, 8:20, 8:18] = 0.9  # a bit smaller than the truth
        prob[1:5, 18:20, 8:18] = 0.6  # kept at 0.5, dropped at 0.7
    seg = Segmentation(prob, threshold, "none", model="m")
    mask = seg.mask > 0
    return RunOutcome(seg, int(mask.sum()), None, [(2, 10.0), (1, 3.0)])


def _session():
    viewer, truth = _viewer_with_patient()
    session = SegmentSession(viewer)
    inp = capture(find_patients(viewer.layers)["P"])
    return viewer, truth, session, inp


def test_place_adds_a_prediction_bound_to_its_patient():
    viewer, truth, session, inp = _session()
    placed = session.place(inp, _outcome(), model="m")
    layer = placed.layer
    meta = read_meta(layer)
    assert layer.name == "P prediction" and not placed.reused
    assert meta["role"] == "prediction" and meta["patient_id"] == "P" and meta["model"] == "m"
    assert meta["folder"] == "/data/P" and meta["slice_files"][0] == "P_1.tif"
    assert meta["reviewed_slices"] == [] and "sequence" not in meta
    assert placed.notes == ["added 'P prediction'"]
    assert session.result("P").layer is layer and session.result("P").review[0] == (2, 10.0)
    assert session.prediction_layers("P") == [layer]


def test_untouched_prediction_is_updated_edited_one_is_kept():
    viewer, truth, session, inp = _session()
    first = session.place(inp, _outcome(), "m").layer
    again = session.place(inp, _outcome(), "m2")
    assert again.reused and again.layer is first and read_meta(first)["model"] == "m2"
    assert again.notes == ["updated 'P prediction'"]

    first.selected_label = 1
    first.paint((3, 2, 2), 1)  # napari's brush: the person's edit
    edited = np.asarray(first.data).copy()
    third = session.place(inp, _outcome(), "m3")
    assert not third.reused and third.layer.name == "P prediction 2"
    assert third.notes == ["added 'P prediction 2'; kept your edited 'P prediction'"]
    np.testing.assert_array_equal(first.data, edited)
    assert read_meta(first)["reviewed_slices"] == [3]


def test_place_keeps_the_persons_selection_on_another_patient():
    viewer, truth, session, inp = _session()
    other = viewer.add_image(np.zeros((N, SIZE, SIZE)), name="another scan")
    viewer.layers.selection.active = other
    session.place(inp, _outcome(), "m")
    assert viewer.layers.selection.active is other


def test_closed_images_are_named_only_when_they_were_closed():
    viewer, truth, session, inp = _session()
    for name in [lyr.name for lyr in viewer.layers]:
        viewer.layers.remove(name)
    placed = session.place(inp, _outcome(), "m")
    assert "P's images were closed during the run" in placed.notes[-1]

    # issue 13: layers from no patient folder ("Map image layers…") are not "closed"
    viewer = ViewerModel()
    flair = viewer.add_image(np.ones((N, SIZE, SIZE)), name="my flair")
    session = SegmentSession(viewer)
    mapped = capture_mapping(flair)
    placed = session.place(mapped, _outcome(), "m")
    assert placed.layer.name == "my flair prediction"
    assert not any("closed" in note for note in placed.notes), placed.notes
    viewer.layers.remove(flair)
    again = session.place(mapped, _outcome(), "m")
    assert "closed during the run" in again.notes[-1]


def test_geometry_of_the_image_reaches_the_prediction():
    viewer = ViewerModel()
    from napari_lggseg.layer_meta import Role, layer_kwargs, make_meta

    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    meta = make_meta("C1", Role.IMAGE, source_paths=["/d/c1_flair.nii.gz"], affine=affine,
                     spacing=(3.0, 0.9, 0.9), sequence="FLAIR")  # fmt: skip
    flair = viewer.add_image(np.ones((N, SIZE, SIZE)), **layer_kwargs("C1 FLAIR", meta))
    session = SegmentSession(viewer)
    layer = session.place(capture(find_patients(viewer.layers)["C1"]), _outcome(), "m").layer
    pred = read_meta(layer)
    assert pred["spacing"] == [3.0, 0.9, 0.9] and pred["affine"] == affine.tolist()
    assert pred["source_paths"] == ["/d/c1_flair.nii.gz"] and pred["role"] == "prediction"
    assert flair.metadata["lggseg"]["role"] == "image", "the image's own metadata is untouched"


def test_rethreshold_keeps_reviewed_slices_and_refuses_replaced_data():
    viewer, truth, session, inp = _session()
    layer = session.place(inp, _outcome(), "m").layer
    assert session.rethreshold("nobody", 0.7, "none") is None
    layer.selected_label = 1
    layer.brush_size = 3
    layer.paint((2, 30, 30), 1)  # reviewed by editing
    edited = np.asarray(layer.data).copy()
    message = session.rethreshold("P", 0.7, "none")
    assert "threshold 0.70" in message and "your 1 reviewed slice(s) kept" in message
    data = np.asarray(layer.data)
    np.testing.assert_array_equal(data[2], edited[2])
    assert not data[1, 18:20, 8:18].any() and edited[1, 18:20, 8:18].all(), (
        "other slices re-thresholded"
    )
    assert read_meta(layer)["reviewed_slices"] == [2], "a re-threshold is not the person's edit"

    fresh = session.place(inp, _outcome(), "m")  # the edited layer is kept: a new one
    fresh.layer.data = np.zeros_like(fresh.layer.data)  # replaced outside napari's tools
    message = session.rethreshold("P", 0.6, "none")
    assert "changed outside napari's tools" in message
    assert not np.asarray(fresh.layer.data).any()


def test_measure_volume_and_dice():
    viewer, truth, session, inp = _session()
    outcome = _outcome()
    outcome.dice = 0.123  # the worker's figure: used while the mask is as it produced it
    layer = session.place(inp, outcome, "m").layer
    m = session.measure("P", spacing=(2.0, 0.5, 0.5))
    assert m.voxels == outcome.voxels and m.dice == 0.123
    assert m.millilitres == pytest.approx(outcome.voxels * 0.5 / 1000)
    assert f"{m.voxels:,} voxels" in m.volume_text() and "mL" in m.volume_text()
    session.changed()  # e.g. the person painted: measured from the layers now
    m = session.measure("P")
    assert m.dice == pytest.approx(dice(np.asarray(layer.data), truth)) and m.millilitres is None
    assert session.measure("nobody") is None


def test_removed_result_layers_are_forgotten():
    viewer, truth, session, inp = _session()
    layer = session.place(inp, _outcome(), "m").layer
    viewer.layers.remove(layer)
    assert session.result("P") is None
    session.forget(layer)
    assert "P" not in session.results


def test_review_target_prefers_the_active_mask():
    viewer, truth, session, inp = _session()
    assert session.review_target(None, "P") is None
    layer = session.place(inp, _outcome(), "m").layer
    gt = viewer.layers["P ground truth"]
    assert session.review_target(viewer.layers["P FLAIR"], "P") is layer
    assert session.review_target(gt, "P") is gt


def test_segment_input_with_the_tiny_model(tiny_model_store):
    viewer, truth, session, inp = _session()
    cache, stages, steps = {}, [], []
    out = segment_input(inp, tiny_model_store, "cpu", False, 0.5, "min-size", cache,
                        on_stage=stages.append, on_progress=lambda i, n: steps.append((i, n)))  # fmt: skip
    assert out.seg.mask.shape == truth.shape and out.voxels == int((out.seg.mask > 0).sum())
    assert out.dice == pytest.approx(dice(out.seg.mask, truth))
    assert stages[0].startswith("loading model") and steps[-1][0] == steps[-1][1]
    assert (tiny_model_store, "cpu") in cache
    cancel = threading.Event()
    cancel.set()
    assert segment_input(inp, tiny_model_store, "cpu", False, 0.5, "none", cache, cancel) is None


def test_scan_spacing_comes_from_the_file_or_another_readers_scale(tmp_path):
    """A scan layer's spacing: this plugin's metadata, else a non-default scale or a ``.nii``
    source (another NIfTI reader); LGG slices (folder or slice files) and plain layers: None."""
    from napari_lggseg.layer_meta import Role, layer_kwargs, make_meta
    from napari_lggseg.session import scan_spacing

    viewer, _ = _viewer_with_patient()
    assert scan_spacing(viewer.layers["P FLAIR"]) is None  # LGG: no spacing, whatever its scale
    vol = np.zeros((4, 8, 8), np.float32)
    meta = make_meta("CASE", Role.IMAGE, spacing=(3.0, 0.5, 0.5), sequence="FLAIR")
    ours = viewer.add_image(vol, **layer_kwargs("CASE FLAIR", meta), scale=(3.0, 0.5, 0.5))
    assert scan_spacing(ours) == (3.0, 0.5, 0.5)
    theirs = viewer.add_image(vol, name="theirs", scale=(1.0, 0.9, 0.9))
    assert scan_spacing(theirs) == (1.0, 0.9, 0.9)
    assert scan_spacing(viewer.add_image(vol, name="plain")) is None
    assert scan_spacing(None) is None


def test_segment_input_resamples_thin_slices_of_a_scan(tiny_model_store):
    """With a scan's spacing the run goes through geometry.segment_volume (thin slices
    resampled for the network, said in the notes); without, the network sees the slices."""
    from napari_lggseg.geometry import segment_volume
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.patients import RunInput
    from napari_lggseg.synthetic import make_synthetic_patient

    image, _ = make_synthetic_patient(seed=3, n_slices=12, size=64)
    inp = RunInput("S", image[..., 1], image[..., 0], image[..., 2])
    cache: dict = {}
    thin = segment_input(inp, tiny_model_store, "cpu", False, 0.5, "none", cache, spacing=(1, 1, 1))
    assert thin.notes and "12 slices of 1 mm resampled to 3 slices" in thin.notes[0]
    expected = segment_volume(
        Segmenter.from_store(tiny_model_store, "cpu"), inp.volume(), (1, 1, 1)
    )
    np.testing.assert_array_equal(thin.seg.prob, expected.prob)
    plain = segment_input(inp, tiny_model_store, "cpu", False, 0.5, "none", cache)
    assert plain.notes == [] and plain.seg.prob.shape == thin.seg.prob.shape

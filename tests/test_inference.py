"""Segmenting a volume with a stored model: accuracy on a synthetic patient, cached
re-thresholding, progress and cancel hooks, device choice and fallback, the fast path."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch

from napari_lggseg import metrics, models
from napari_lggseg.devices import DeviceError, autocast_dtype, resolve_device
from napari_lggseg.inference import Cancelled, Segmenter
from napari_lggseg.preprocess import Recipe, prepare
from napari_lggseg.synthetic import make_synthetic_patient

N_SLICES = 16


@pytest.fixture(scope="module")
def patient():
    """A synthetic patient the tiny model has not seen (it trained on seeds 1..7)."""
    return make_synthetic_patient(seed=42, n_slices=N_SLICES, size=128)


@pytest.fixture
def segmenter(tiny_model_store):  # noqa: F811
    torch.set_num_threads(1)
    return Segmenter.from_store(tiny_model_store, device="cpu", batch_size=4)


def test_segments_a_synthetic_patient(segmenter, patient, tiny_model_store):  # noqa: F811
    image, truth = patient
    seg = segmenter.segment(image)
    assert seg.prob.shape == truth.shape and seg.prob.dtype == np.float32
    assert seg.prob.min() >= 0.0 and seg.prob.max() <= 1.0
    assert seg.mask.shape == truth.shape and set(np.unique(seg.mask)) <= {0, 1}
    assert metrics.dice(seg.mask, truth) >= 0.5
    assert seg.model == tiny_model_store and seg.device == "cpu"
    assert seg.missing == () and seg.sequences_note == "all sequences present"
    assert seg.seconds > 0


def test_rethreshold_does_not_run_the_network(segmenter, patient):
    image, _ = patient
    seg = segmenter.segment(image, threshold=0.5, postprocess="none")
    first = seg.mask.copy()
    calls = []
    original_forward = segmenter.model.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return original_forward(*args, **kwargs)

    segmenter.model.forward = counting_forward
    higher = seg.rethreshold(0.9)
    assert 0 < higher.sum() < first.sum()
    assert not (higher & ~first.astype(bool)).any(), "a higher threshold can only remove voxels"
    assert seg.mask is higher and seg.threshold == 0.9
    np.testing.assert_array_equal(seg.rethreshold(0.5), first)
    assert calls == []
    # the counter does count real network calls
    segmenter.segment(image[:4])
    assert len(calls) == 1


def test_progress_counts_up_to_the_slice_count(segmenter, patient):
    image, _ = patient
    events = []
    segmenter.segment(image, progress=lambda done, total: events.append((done, total)))
    assert events[-1] == (N_SLICES, N_SLICES)
    assert [d for d, _ in events] == sorted({d for d, _ in events}), "counts must strictly increase"
    assert len(events) == N_SLICES // segmenter.batch_size
    assert {t for _, t in events} == {N_SLICES}


def test_cancel_stops_between_batches(segmenter, patient):
    image, _ = patient
    cancel = threading.Event()
    events = []

    def progress(done, total):
        events.append(done)
        cancel.set()

    with pytest.raises(Cancelled):
        segmenter.segment(image, progress=progress, cancel=cancel)
    assert events == [segmenter.batch_size], "work went on after the cancel flag was raised"
    # a callable works as a cancel flag too
    with pytest.raises(Cancelled):
        segmenter.segment(image, cancel=lambda: True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda(tiny_model_store):  # noqa: F811
    with pytest.raises(DeviceError) as err:
        resolve_device("cuda")
    msg = str(err.value)
    assert "'cuda' is not available" in msg and "available: " in msg and "cpu" in msg
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="not available"):
        Segmenter.from_store(tiny_model_store, device="cuda", fallback=False)
    model, info = models.load_model(tiny_model_store)
    with pytest.warns(UserWarning, match="using the CPU instead"):
        seg = Segmenter(
            model, Recipe.from_dict(info.card["preprocessing"]), device="cuda", fallback=True
        )
    assert seg.device == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_fast_path_agrees_with_plain_fp32(tiny_model_store, patient):  # noqa: F811
    torch.set_num_threads(1)
    image, _ = patient
    fast = Segmenter.from_store(tiny_model_store, device="cpu", fast=True)
    plain = Segmenter.from_store(tiny_model_store, device="cpu", fast=False)
    assert fast.model.encoder1.enc1conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.model.encoder1.enc1conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    a, b = fast.segment(image), plain.segment(image)
    assert metrics.dice(a.mask, b.mask) >= 0.99
    # without native bf16 (AVX2 machines) the fast path is fp32 too, so the two agree closely
    tol = 2e-2 if autocast_dtype(torch.device("cpu")) is not None else 1e-4
    np.testing.assert_allclose(a.prob, b.prob, atol=tol)


def test_test_time_flips(tiny_model_store, patient):  # noqa: F811
    torch.set_num_threads(1)
    image, truth = patient
    plain = Segmenter.from_store(tiny_model_store, device="cpu")
    tta = Segmenter.from_store(tiny_model_store, device="cpu", tta=True)
    seg = tta.segment(image)
    assert metrics.dice(seg.mask, truth) >= 0.5
    assert not np.allclose(seg.prob, plain.segment(image).prob), "tta changed nothing"
    # averaging with the mirrored prediction makes the network's output mirror-symmetric
    x, _ = prepare(image, tta.recipe)
    p = tta.predict_grid(x)
    p_mirrored = tta.predict_grid(np.ascontiguousarray(x[..., ::-1]))
    np.testing.assert_allclose(p_mirrored, p[..., ::-1], atol=1e-5)


def test_tumour_volume_in_millilitres(segmenter, patient):
    image, _ = patient
    seg = segmenter.segment(image)
    vol = metrics.tumour_volume(seg.mask, spacing=(2.5, 0.5, 0.5))
    assert vol["voxels"] == int(seg.mask.sum()) > 0
    assert vol["ml"] == pytest.approx(vol["voxels"] * 0.625 / 1000)
    assert "ml" not in metrics.tumour_volume(seg.mask)


def test_flair_only_input_to_a_three_channel_model(segmenter, patient):
    image, truth = patient
    assert segmenter.recipe.channels == ("pre-contrast", "FLAIR", "post-contrast")
    seg = segmenter.segment(image[..., 1])
    assert seg.mask.shape == truth.shape
    assert seg.missing == ("pre-contrast", "post-contrast")
    assert "FLAIR only" in seg.sequences_note
    # the dataset's own convention (a missing scan replaced by FLAIR) is recognised too
    substituted = image.copy()
    substituted[..., 2] = substituted[..., 1]
    assert segmenter.segment(substituted).missing == ("post-contrast",)


def test_damaged_weights_are_refused(tiny_model_store, tmp_path):  # noqa: F811
    info = models.get_model(tiny_model_store)
    copy = tmp_path / "copied-model"
    shutil.copytree(info.path, copy)
    weights = copy / models.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(models.ModelError) as err:
        models.load_model(str(copy))
    assert str(weights) in str(err.value) and "sha256" in str(err.value)
    model, loaded = models.load_model(str(info.path))  # the original still loads
    assert loaded.card["sha256"] == models.sha256_of(info.path / models.WEIGHTS)

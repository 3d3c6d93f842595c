"""Site-shift augmentations (napari_lggseg.site_shift) on a synthetic head made by code: each one
is deterministic under a seed, keeps the mask where it must, and gives the value ranges that the
site it imitates stores."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lggseg import site_shift
from napari_lggseg.lgg_io import FLAIR
from napari_lggseg.synthetic import make_synthetic_patient


@pytest.fixture(scope="module")
def head():
    return make_synthetic_patient(seed=3, n_slices=12, size=96)


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("name", list(site_shift.SHIFTS))
def test_each_shift_is_deterministic_under_a_seed(head, name):
    image, mask = head
    fn = site_shift.SHIFTS[name]
    a_img, a_mask = fn(image, mask, _rng(5))
    b_img, b_mask = fn(image, mask, _rng(5))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_img.dtype == np.float32 and a_mask.dtype == np.uint8
    assert a_img.shape[1:] == image.shape[1:] and a_mask.shape == a_img.shape[:3]
    assert np.isfinite(a_img).all()
    assert a_mask.any(), "the tumour must survive every shift"


@pytest.mark.parametrize(
    "name",
    [
        "skull-stripped",
        "raw integers",
        "0-255",
        "z-scored",
        "bias field",
        "gamma",
        "noise",
        "coarser in-plane",
        "no pre-contrast",
    ],
)
def test_in_plane_and_intensity_shifts_leave_the_mask_unchanged(head, name):
    image, mask = head
    _, out_mask = site_shift.SHIFTS[name](image, mask, _rng(1))
    np.testing.assert_array_equal(out_mask, mask)


def test_random_seeds_differ(head):
    image, mask = head
    a, _ = site_shift.bias_field(image, mask, _rng(1))
    b, _ = site_shift.bias_field(image, mask, _rng(2))
    assert not np.allclose(a, b)


def test_skull_strip_zeroes_outside_a_brain_that_keeps_the_tumour(head):
    image, mask = head
    brain = site_shift.estimate_brain_mask(image, mask)
    head_voxels = image.max(axis=-1) > 20
    assert brain[mask > 0].all(), "the tumour lies inside the estimated brain"
    assert 0.3 * head_voxels.sum() < brain.sum() < head_voxels.sum(), "brain smaller than head"
    stripped, _ = site_shift.skull_strip(image, mask)
    assert (stripped[~brain] == 0).all()
    np.testing.assert_array_equal(stripped[brain], image[brain].astype(np.float32))


def test_storage_ranges(head):
    image, mask = head
    raw, _ = site_shift.raw_integers(image, mask, _rng(0))
    np.testing.assert_array_equal(raw, np.round(raw))
    assert raw.max() > 255, "raw scanner integers exceed 8 bits"
    r255, _ = site_shift.rescale_255(image, mask)
    assert r255.min() == 0 and r255.max() == 255
    np.testing.assert_array_equal(r255, np.round(r255))
    z, _ = site_shift.zscored(image, mask)
    background = image[..., FLAIR] < 5
    assert (z[..., FLAIR][background] < -0.5).all(), "z-scored: negative background"
    fg = z[..., FLAIR][image[..., FLAIR] > 0.05 * np.percentile(image[..., FLAIR], 99)]
    assert abs(fg.mean()) < 0.05 and abs(fg.std() - 1) < 0.05


def test_bias_gamma_noise_keep_zero_background_dark_and_positive(head):
    image, mask = head
    stripped, _ = site_shift.skull_strip(image, mask)
    for fn in (site_shift.bias_field, site_shift.gamma):
        out, _ = fn(stripped, mask, _rng(3))
        assert (out[stripped == 0] == 0).all(), fn.__name__
        assert (out >= 0).all()
    biased, _ = site_shift.bias_field(image, mask, _rng(3), strength=(0.4, 0.4))
    ratio = biased[image > 50] / image[image > 50]
    assert ratio.min() >= np.exp(-0.4) - 1e-4 and ratio.max() <= np.exp(0.4) + 1e-4
    noisy, _ = site_shift.noise(image, mask, _rng(3))
    assert (noisy >= 0).all() and not np.allclose(noisy, image)


def test_slice_spacing_shifts_resample_image_and_mask_together(head):
    image, mask = head
    thin, thin_mask = site_shift.thinner_slices(image, mask, _rng(0), factor=(3.0, 3.0))
    assert thin.shape[0] == 3 * image.shape[0] and thin_mask.shape[0] == thin.shape[0]
    # the tumour occupies about the same fraction of the volume
    assert abs(thin_mask.mean() - mask.mean()) < 0.2 * mask.mean()
    window, window_mask = site_shift.thinner_slices(
        image, mask, _rng(0), factor=(3.0, 3.0), max_slices=image.shape[0]
    )
    assert window.shape[0] == image.shape[0] and window_mask.any()
    thick, thick_mask = site_shift.thicker_slices(image, mask)
    assert thick.shape[0] == image.shape[0] // 2 == thick_mask.shape[0]
    np.testing.assert_allclose(thick[0], image[:2].astype(np.float32).mean(axis=0), atol=1e-4)


def test_missing_contrast_is_flair_as_the_lgg_set_stores_it(head):
    image, mask = head
    out, _ = site_shift.without_pre_contrast(image, mask)
    np.testing.assert_array_equal(out[..., 0], out[..., FLAIR])
    np.testing.assert_array_equal(out[..., 2], image[..., 2].astype(np.float32))


def test_random_site_shift_mixes_and_records_what_it_did(head):
    image, mask = head
    applied = set()
    for seed in range(12):
        out, out_mask, names = site_shift.random_site_shift(
            image, mask, _rng(seed), max_slices=image.shape[0]
        )
        assert out.shape[0] == image.shape[0] == out_mask.shape[0]
        assert out_mask.any()
        applied.update(names)
    again = site_shift.random_site_shift(image, mask, _rng(11), max_slices=image.shape[0])
    np.testing.assert_array_equal(again[0], out)
    assert again[2] == names
    assert {"skull-stripped", "bias field", "z-scored", "raw integers"} <= applied

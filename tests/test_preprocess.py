"""Preprocessing recipes on real patients: masks survive the trip to the network grid and back,
voxels outside the head crop come back as background, inputs are shaped and normalised as the
models expect."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import KAGGLE_ROOT

from napari_lggseg import lgg_io, metrics
from napari_lggseg.preprocess import (
    REFERENCE,
    Recipe,
    assemble_channels,
    prepare,
    prepare_mask,
    restore,
)

# four institutions, few slices each (fast to read)
ROUND_TRIP_PATIENTS = (
    "TCGA_CS_4942_19970222",
    "TCGA_EZ_7264_20010816",
    "TCGA_DU_A5TU_19980312",
    "TCGA_HT_7874_19950902",
)
CROPPED_PATIENT = (
    "TCGA_HT_7874_19950902"  # its head box is smaller than the slice in both directions
)


def _read(kaggle_root, pid):
    folder = kaggle_root / pid
    if not folder.is_dir():
        pytest.skip(f"{folder} not in this copy of the data")
    return lgg_io.read_patient(folder)


@pytest.fixture(scope="module")
def patients():
    if not KAGGLE_ROOT.is_dir():
        pytest.skip(f"real LGG data not found at {KAGGLE_ROOT}")
    return [_read(KAGGLE_ROOT, pid) for pid in ROUND_TRIP_PATIENTS]


def _round_trip(mask, geom):
    soft = prepare_mask(mask, geom)
    assert soft.dtype == np.float32
    assert soft.shape == (geom.z1 - geom.z0, geom.size, geom.size)
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    return restore(soft, geom) >= 0.5


def test_crop_zscore_mask_round_trip(patients):
    recipe = Recipe()
    dices = []
    for p in patients:
        x, geom = prepare(p.image, recipe)
        assert x.shape == (p.image.shape[0], recipe.in_channels, recipe.size, recipe.size)
        assert x.dtype == np.float32
        back = _round_trip(p.mask, geom)
        assert back.shape == p.mask.shape
        dices.append(metrics.dice(back, p.mask))
    assert min(dices) >= 0.98, dict(zip(ROUND_TRIP_PATIENTS, dices))
    assert np.mean(dices) >= 0.99, dict(zip(ROUND_TRIP_PATIENTS, dices))


def test_voxels_outside_the_crop_come_back_as_background(kaggle_root):
    p = _read(kaggle_root, CROPPED_PATIENT)
    x, geom = prepare(p.image, Recipe())
    z, h, w = p.mask.shape
    inside = np.zeros((z, h, w), bool)
    inside[geom.z0 : geom.z1, geom.y0 : geom.y1, geom.x0 : geom.x1] = True
    assert (geom.y0 > 0 or geom.y1 < h) and (geom.x0 > 0 or geom.x1 < w), (
        "pick a patient with a real crop"
    )

    back = restore(np.ones((x.shape[0], geom.size, geom.size), np.float32), geom)
    assert back.shape == (z, h, w)
    assert np.all(back[~inside] == 0.0)
    assert np.allclose(back[inside], 1.0)

    # a mask voxel in the cropped-away corner does not survive; the tumour does
    mask = p.mask.copy()
    outside = np.argwhere(~inside[z // 2])[0]
    mask[z // 2, outside[0], outside[1]] = 1
    restored = _round_trip(mask, geom)
    assert restored[z // 2, outside[0], outside[1]] == 0
    assert metrics.dice(restored, p.mask) >= 0.98


def test_reference_recipe(kaggle_root):
    p = _read(kaggle_root, CROPPED_PATIENT)
    # the middle slices only: skimage's order-2 resize of a whole volume takes seconds per slice
    z = p.image.shape[0] // 2
    image, mask = p.image[z - 3 : z + 3], p.mask[z - 3 : z + 3]
    assert mask.any()
    x, geom = prepare(image, REFERENCE)
    assert x.shape == (geom.z1 - geom.z0, 3, 256, 256) and x.dtype == np.float32
    assert geom.side != 256, "the test should exercise the resize"
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    soft = prepare_mask(mask, geom)
    assert set(np.unique(soft).tolist()) <= {0.0, 1.0}, (
        "the reference recipe resizes masks nearest-neighbour"
    )
    back = _round_trip(mask, geom)
    assert back.shape == mask.shape
    assert metrics.dice(back, mask) >= 0.98


def test_flair_only_volume(patients):
    p = patients[0]
    flair = p.image[..., lgg_io.FLAIR]
    recipe = Recipe()
    x_flair, geom_flair = prepare(flair, recipe)
    x_assembled, geom_assembled = prepare(assemble_channels(flair), recipe)
    assert x_flair.shape == (flair.shape[0], recipe.in_channels, recipe.size, recipe.size)
    np.testing.assert_array_equal(x_flair, x_assembled)
    assert (geom_flair.y0, geom_flair.y1, geom_flair.x0, geom_flair.x1) == (
        geom_assembled.y0,
        geom_assembled.y1,
        geom_assembled.x0,
        geom_assembled.x1,
    )
    # the stand-in sequences are FLAIR itself
    np.testing.assert_array_equal(x_flair[:, 0], x_flair[:, 1])
    np.testing.assert_array_equal(x_flair[:, 2], x_flair[:, 1])
    vol = assemble_channels(flair, pre=p.image[..., 0])
    np.testing.assert_array_equal(vol[..., 0], p.image[..., 0])
    np.testing.assert_array_equal(vol[..., 2], flair)
    assert lgg_io.missing_sequences(vol) == ("post-contrast",)


@pytest.mark.parametrize("context", [1, 2])
def test_context_channels_are_neighbouring_flair(patients, context):
    p = patients[1]
    recipe = Recipe(context=context)
    x, _ = prepare(p.image, recipe)
    z = x.shape[0]
    assert x.shape[1] == 3 + 2 * context == recipe.in_channels
    flair = x[:, 1]
    for d in range(1, context + 1):
        below = x[:, 3 + 2 * (d - 1)]
        above = x[:, 4 + 2 * (d - 1)]
        for k in range(z):
            np.testing.assert_array_equal(below[k], flair[max(k - d, 0)])
            np.testing.assert_array_equal(above[k], flair[min(k + d, z - 1)])
    # FLAIR-only models keep FLAIR and its neighbours
    x1, _ = prepare(p.image, Recipe(context=context, channels=("FLAIR",)))
    assert x1.shape[1] == 1 + 2 * context
    np.testing.assert_array_equal(x1[:, 0], flair)
    np.testing.assert_array_equal(x1[:, 1:], x[:, 3:])


@pytest.mark.parametrize(
    "shape",
    [(32, 32), (4, 32, 32, 4), (4, 32, 32, 2), (2, 4, 32, 32, 3)],
)
def test_bad_shapes_raise_value_error(shape):
    with pytest.raises(ValueError, match=r"\(Z, H, W"):
        prepare(np.zeros(shape, np.uint8), Recipe())


def test_mismatched_sequences_raise_value_error():
    flair = np.zeros((4, 32, 32), np.uint8)
    with pytest.raises(ValueError, match="post-contrast has shape"):
        assemble_channels(flair, post=np.zeros((4, 32, 30), np.uint8))
    with pytest.raises(ValueError, match="FLAIR must be a 3-D volume"):
        assemble_channels(np.zeros((32, 32), np.uint8))


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="unknown preprocessing recipe 'fancy'"):
        prepare(np.zeros((4, 32, 32, 3), np.uint8), Recipe(name="fancy"))


# --------------------------------------------------------------------------- robust-zscore


def _synthetic(seed=1):
    from napari_lggseg.synthetic import make_synthetic_patient

    return make_synthetic_patient(seed=seed, n_slices=10, size=96)


def test_robust_recipe_ignores_gain_and_offset_per_sequence():
    """Raw integers, 0-255 or z-scored with a negative background: the same network input."""
    image, _ = _synthetic()
    recipe = Recipe(name="robust-zscore", size=64)
    x, geom = prepare(image, recipe)
    shifted = image.astype(np.float32) * np.array([7.0, 0.5, 13.0]) + np.array([-3.0, 40.0, 0.0])
    x2, geom2 = prepare(shifted, recipe)
    assert (geom.y0, geom.y1, geom.x0, geom.x1) == (geom2.y0, geom2.y1, geom2.x0, geom2.x1)
    np.testing.assert_allclose(x2, x, atol=2e-3)


def test_crop_zscore_is_not_offset_invariant_and_keeps_its_output():
    """lgg-fast's recipe stays as it was: a z-scored scan changes its input (why robust-zscore)."""
    image, _ = _synthetic()
    recipe = Recipe(size=64)
    x, _ = prepare(image, recipe)
    z = (image.astype(np.float32) - 60.0) / 30.0
    xz, _ = prepare(z, recipe)
    assert np.abs(xz - x).max() > 0.5
    assert x.dtype == np.float32 and x.shape == (10, recipe.in_channels, 64, 64)


def test_robust_recipe_on_a_skull_stripped_scan_crops_to_the_brain_and_round_trips():
    from napari_lggseg import site_shift

    image, mask = _synthetic(2)
    stripped, _ = site_shift.skull_strip(image, mask)
    x, geom = prepare(stripped, Recipe(name="robust-zscore", size=64))
    _, full = prepare(image, Recipe(name="robust-zscore", size=64))
    assert (geom.y1 - geom.y0) < (full.y1 - full.y0), "the box follows the brain"
    assert np.isfinite(x).all()
    back = _round_trip(mask, geom)
    assert metrics.dice(back, mask) >= 0.95

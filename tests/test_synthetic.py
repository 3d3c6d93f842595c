"""The synthetic patient: deterministic, varied across seeds, fast, and its lesion learnable."""

from __future__ import annotations

import time

import numpy as np

from napari_lggseg.lgg_io import missing_sequences
from napari_lggseg.synthetic import make_synthetic_patient


def test_shape_dtype_and_determinism():
    image, mask = make_synthetic_patient(seed=3, n_slices=10, size=64)
    assert image.shape == (10, 64, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (10, 64, 64) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    again_image, again_mask = make_synthetic_patient(seed=3, n_slices=10, size=64)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(mask, again_mask)
    assert missing_sequences(image) == ()


def test_lesion_is_flair_bright_and_varies_with_the_seed():
    centres, sizes = set(), set()
    for seed in range(5):
        image, mask = make_synthetic_patient(seed=seed)
        lesion, head = mask > 0, image[..., 1] > 30
        slices = np.flatnonzero(lesion.any(axis=(1, 2)))
        assert 3 <= len(slices) < image.shape[0] and np.all(np.diff(slices) == 1)
        flair = image[..., 1].astype(float)
        assert flair[lesion].mean() > flair[head & ~lesion].mean() + 60  # bright in FLAIR
        for c in (0, 2):  # and not in pre- or post-contrast
            assert image[..., c][lesion].mean() < image[..., c][head & ~lesion].mean()
        centres.add(tuple(np.round(np.argwhere(lesion).mean(axis=0) / 8).astype(int)))
        sizes.add(int(lesion.sum()) // 500)
    assert len(centres) == 5 and len(sizes) >= 3


def test_fast_enough_for_tests():
    start = time.perf_counter()
    make_synthetic_patient(seed=1)
    assert time.perf_counter() - start < 3.0  # ~0.2 s normally; generous for a loaded CI machine

"""A synthetic LGG-like patient made by code: sample data for napari and food for tiny test models.

No patient data ships with the plugin (the dataset may not be redistributed), so the sample and
the tests use this instead. It is deterministic per ``seed``, takes a few tens of milliseconds,
and imports nothing beyond numpy. The lesion is learnable on purpose: it is bright in FLAIR, a
little dark in pre- and post-contrast, and its position, size and outline change with the seed.
"""

from __future__ import annotations

import numpy as np

SYNTH_PATIENT_ID = "SYNTH_LGG_0001"

_BACKGROUND = 3.0
# mean intensity of each tissue in (pre-contrast, FLAIR, post-contrast)
_BRAIN_MEAN = np.array([105.0, 95.0, 110.0], np.float32)
_SKULL_MEAN = np.array([160.0, 70.0, 170.0], np.float32)
_LESION_MEAN = np.array([80.0, 205.0, 90.0], np.float32)


def _smooth_field(rng: np.random.Generator, z, y, x, n_waves: int, max_freq: float) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a sum of random plane cosines (cheap, no scipy)."""
    out = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), np.float32)
    for _ in range(n_waves):
        fz, fy, fx = rng.uniform(-max_freq, max_freq, 3)
        out += np.cos(
            np.float32(fz) * z
            + np.float32(fy) * y
            + np.float32(fx) * x
            + np.float32(rng.uniform(0, 2 * np.pi))
        )
    return out / np.sqrt(n_waves / 2)


def make_synthetic_patient(
    seed: int = 0, n_slices: int = 24, size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, mask)``: image (Z, H, W, 3) uint8 in the dataset's channel order
    (pre-contrast, FLAIR, post-contrast), mask (Z, H, W) uint8 0/1 marking the FLAIR lesion.

    An ellipsoid head (bright skull-like rim, textured brain) fills the middle slices; the outer
    slices are nearly empty as in the real data. The lesion spans several slices.
    """
    if n_slices < 4 or size < 32:
        raise ValueError("make_synthetic_patient needs n_slices >= 4 and size >= 32")
    rng = np.random.default_rng(seed)
    z = ((np.arange(n_slices, dtype=np.float32) + 0.5) / n_slices * 2 - 1)[:, None, None]
    y = (np.arange(size, dtype=np.float32) / (size - 1) * 2 - 1)[None, :, None]
    x = (np.arange(size, dtype=np.float32) / (size - 1) * 2 - 1)[None, None, :]

    # head: an ellipsoid, slightly different per seed; radius r < 1 inside
    az, ay, ax = rng.uniform(0.85, 0.95), rng.uniform(0.78, 0.88), rng.uniform(0.62, 0.72)
    cy, cx = rng.uniform(-0.04, 0.04, 2)
    r = np.sqrt((z / az) ** 2 + ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2)
    head = r < 1.0
    skull = head & (r > 0.9)
    brain = r < 0.86

    # lesion: a lumpy ellipsoid inside the brain, half a dozen slices thick
    n_lesion_slices = max(3, int(round(n_slices * rng.uniform(0.2, 0.35))))
    rz = n_lesion_slices / n_slices  # half-thickness in z units of [-1, 1]
    ry, rx = rng.uniform(0.12, 0.26), rng.uniform(0.1, 0.22)
    lz = rng.uniform(-0.35, 0.35)
    ang = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(0.15, 0.45)
    ly, lx = cy + dist * ay * np.sin(ang), cx + dist * ax * np.cos(ang)
    lr = np.sqrt(((z - lz) / rz) ** 2 + ((y - ly) / ry) ** 2 + ((x - lx) / rx) ** 2)
    lumps = 0.3 * _smooth_field(rng, z, y, x, n_waves=6, max_freq=8.0)
    lesion = (lr + lumps < 1.0) & brain

    texture = _smooth_field(rng, z, y, x, n_waves=6, max_freq=30.0)
    image = np.empty((n_slices, size, size, 3), np.float32)
    for c in range(3):
        ch = np.full((n_slices, size, size), _BACKGROUND, np.float32)
        ch = np.where(head, _BRAIN_MEAN[c] * 0.55, ch)  # scalp / CSF between skull and brain
        ch = np.where(skull, _SKULL_MEAN[c], ch)
        ch = np.where(brain, _BRAIN_MEAN[c] * (1 + 0.12 * texture), ch)
        # a soft edge: the lesion fades in over its outer rim, so its mask is slightly inside it
        fade = np.clip((1.15 - (lr + lumps)) / 0.3, 0, 1) * brain
        ch = ch + fade * (_LESION_MEAN[c] - _BRAIN_MEAN[c]) * (1 + 0.08 * texture)
        image[..., c] = ch
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += np.where(head[..., None], 4.0 * noise, 1.5 + np.abs(noise))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, lesion.astype(np.uint8)

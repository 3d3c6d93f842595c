"""Site shifts: what differs between other sites' scans and the LGG set, applied to an LGG volume.

The shipped model learns from one dataset (TCGA-LGG as 8-bit TIFF slices: skull on, thick
slices, three sequences). Other sites' scans come skull-stripped, as raw integers, rescaled to
0-255 or already z-scored with a negative background, with bias fields, other contrast curves and
noise, at other in-plane resolutions and slice spacings, and sometimes without pre- or
post-contrast. Each function here imitates one of these on a ``(Z, H, W, 3)`` volume (LGG channel
order) and its ``(Z, H, W)`` mask, so a model can be trained with them mixed in
(:func:`random_site_shift`) and measured on validation patients with one shift at a time
(:data:`SHIFTS`). numpy/scipy only, deterministic under a seeded ``numpy.random.Generator``.

Every function returns ``(image, mask)``: float32 image, uint8 mask. Intensity shifts leave the
mask unchanged; slice-spacing shifts resample it with the image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .geometry import resample_axis0
from .lgg_io import FLAIR

Shift = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _f32(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def _peak(image: np.ndarray) -> float:
    """A robust bright level (99th percentile of the non-zero voxels)."""
    nz = image[image > 0]
    return float(np.percentile(nz, 99)) if nz.size else 1.0


# --------------------------------------------------------------------------- skull stripping


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.binary_fill_holes(m) for m in mask])


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def estimate_brain_mask(image: np.ndarray, tumour: np.ndarray | None = None) -> np.ndarray:
    """A rough brain mask of an unstripped scan from the head's shape: the filled head (smoothed
    mean above 10 % of the bright level) eroded in-plane by a typical scalp-and-skull thickness
    (6 % of the field of view, ~13 mm on the LGG set), its largest 3-D component, smoothed. The
    tumour (when given) is kept inside, as skull-stripping tools at other sites keep it."""
    image = _f32(image)
    smooth = ndimage.gaussian_filter(image.mean(axis=-1), sigma=(0, 1.5, 1.5))
    head = _fill_slices(smooth > 0.1 * _peak(smooth))
    radius = max(2, int(round(0.06 * max(image.shape[1:3]))))
    step = _disk(max(1, radius // 3))  # three small erosions: faster than one large disk
    brain = head
    for _ in range(3):
        brain = np.stack([ndimage.binary_erosion(b, step) for b in brain])
    brain = _largest(brain)
    brain = _fill_slices(ndimage.binary_opening(brain, np.ones((1, 5, 5), bool)))
    if tumour is not None:
        brain |= ndimage.binary_dilation(np.asarray(tumour) > 0, np.ones((1, 5, 5), bool)) & head
    return brain


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2) <= radius**2


def skull_strip(image, mask, rng=None):
    """Zero outside an estimated brain mask (as skull-stripped BraTS-style scans come)."""
    brain = estimate_brain_mask(image, mask)
    return _f32(image) * brain[..., None], np.asarray(mask, np.uint8)


# --------------------------------------------------------------------------- intensity representation


def raw_integers(image, mask, rng, scale=(2.0, 16.0), offset=0.15):
    """Raw scanner integers: an unknown gain per sequence and (half the time) a constant offset
    up to ``offset`` of the bright level, rounded to integers."""
    image = _f32(image)
    out = np.empty_like(image)
    for c in range(3):
        gain = rng.uniform(*scale)
        shift = rng.uniform(0, offset) * _peak(image[..., c]) * gain if rng.random() < 0.5 else 0.0
        out[..., c] = np.round(image[..., c] * gain + shift)
    return out, np.asarray(mask, np.uint8)


def rescale_255(image, mask, rng=None):
    """Each sequence stretched to 0-255 (its 99.5th percentile becomes 255) and rounded, as
    exported by viewers and by other pipelines."""
    image = _f32(image)
    out = np.empty_like(image)
    for c in range(3):
        ch = image[..., c]
        lo, hi = float(ch.min()), float(np.percentile(ch, 99.5))
        out[..., c] = np.round(np.clip((ch - lo) / max(hi - lo, 1e-6), 0, 1) * 255)
    return out, np.asarray(mask, np.uint8)


def zscored(image, mask, rng=None):
    """Already z-scored: each sequence minus the mean, over the standard deviation, of its
    foreground (voxels above 5 % of the bright level), so the background becomes negative."""
    image = _f32(image)
    out = np.empty_like(image)
    for c in range(3):
        ch = image[..., c]
        fg = ch[ch > 0.05 * _peak(ch)]
        mean, std = (float(fg.mean()), float(fg.std())) if fg.size > 16 else (0.0, 1.0)
        out[..., c] = (ch - mean) / max(std, 1e-6)
    return out, np.asarray(mask, np.uint8)


# --------------------------------------------------------------------------- acquisition


def bias_field(image, mask, rng, strength=(0.15, 0.4)):
    """A smooth multiplicative field per sequence: exp of a random 3-D polynomial of degree 2
    whose largest magnitude is ``strength`` (0.4: the field spans x0.67 to x1.5)."""
    image = _f32(image)
    z, h, w, _ = image.shape
    zz = np.linspace(-1, 1, z, dtype=np.float32)[:, None, None]
    yy = np.linspace(-1, 1, h, dtype=np.float32)[None, :, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, None, :]
    terms = [zz, yy, xx, zz * yy, zz * xx, yy * xx, zz**2, yy**2, xx**2]
    out = np.empty_like(image)
    for c in range(3):
        log_field = np.zeros((z, h, w), np.float32)
        for t in terms:
            log_field += np.float32(rng.normal()) * t
        log_field *= np.float32(rng.uniform(*strength) / max(float(np.abs(log_field).max()), 1e-6))
        out[..., c] = image[..., c] * np.exp(log_field)
    return out, np.asarray(mask, np.uint8)


def gamma(image, mask, rng, log_range=0.4):
    """Another contrast curve per sequence: ``peak * (x / peak) ** g`` with ``log g`` uniform in
    ±``log_range`` (zero stays zero)."""
    image = _f32(image)
    out = np.empty_like(image)
    for c in range(3):
        ch = np.clip(image[..., c], 0, None)
        peak = _peak(ch)
        out[..., c] = peak * (ch / peak) ** np.exp(rng.uniform(-log_range, log_range))
    return out, np.asarray(mask, np.uint8)


def noise(image, mask, rng, level=(0.01, 0.05)):
    """Rician noise (magnitude of complex Gaussian noise) at ``level`` of the bright level."""
    image = _f32(image)
    out = np.empty_like(image)
    for c in range(3):
        sigma = rng.uniform(*level) * _peak(image[..., c])
        re = image[..., c] + np.float32(sigma) * rng.standard_normal(image.shape[:3], np.float32)
        im = np.float32(sigma) * rng.standard_normal(image.shape[:3], np.float32)
        out[..., c] = np.sqrt(re**2 + im**2)
    return out, np.asarray(mask, np.uint8)


def lower_inplane_resolution(image, mask, rng, factor=(1.5, 2.5)):
    """Acquired at coarser in-plane resolution and interpolated back to this grid."""
    image = _f32(image)
    f = rng.uniform(*factor)
    z, h, w, _ = image.shape
    small = ndimage.zoom(image, (1, 1 / f, 1 / f, 1), order=1)
    back = ndimage.zoom(
        small, (1, h / small.shape[1], w / small.shape[2], 1), order=1, mode="nearest"
    )
    return back[:, :h, :w].astype(np.float32), np.asarray(mask, np.uint8)


def thinner_slices(image, mask, rng, factor=(2.0, 4.0), max_slices: int | None = None):
    """Thinner slices (e.g. 1 mm isotropic against the LGG set's thick ones): linear
    interpolation through-plane by ``factor`` (``geometry.resample_axis0``, the resampling
    ``segment_case`` undoes it with); the mask the same way, then > 0.5. With
    ``max_slices``, a window of that many slices around the tumour (keeps training memory)."""
    image, mask = _f32(image), np.asarray(mask) > 0
    n_out = max(2, int(round(image.shape[0] * rng.uniform(*factor))))
    img = resample_axis0(image, n_out)
    msk = resample_axis0(mask.astype(np.float32), n_out) > 0.5
    if max_slices and img.shape[0] > max_slices:
        tz = np.flatnonzero(msk.any(axis=(1, 2)))
        centre = int(rng.choice(tz)) if tz.size else img.shape[0] // 2
        lo = int(np.clip(centre - rng.integers(0, max_slices), 0, img.shape[0] - max_slices))
        img, msk = img[lo : lo + max_slices], msk[lo : lo + max_slices]
    return img.astype(np.float32), msk.astype(np.uint8)


def thicker_slices(image, mask, rng=None, factor: int = 2):
    """Thicker slices: each output slice averages ``factor`` neighbours (partial volume);
    the mask is their mean > 0.5."""
    image, mask = _f32(image), (np.asarray(mask) > 0).astype(np.float32)
    z = (image.shape[0] // factor) * factor
    if z < factor:
        return image, mask.astype(np.uint8)
    img = image[:z].reshape(z // factor, factor, *image.shape[1:]).mean(axis=1)
    msk = mask[:z].reshape(z // factor, factor, *mask.shape[1:]).mean(axis=1) > 0.5
    return img.astype(np.float32), msk.astype(np.uint8)


def without_pre_contrast(image, mask, rng=None):
    """FLAIR and post-contrast only (BRATS-2013-style cases): pre-contrast replaced by FLAIR,
    the LGG set's own convention for a missing sequence."""
    out = _f32(image).copy()
    out[..., 0] = out[..., FLAIR]
    return out, np.asarray(mask, np.uint8)


def without_post_contrast(image, mask, rng=None):
    out = _f32(image).copy()
    out[..., 2] = out[..., FLAIR]
    return out, np.asarray(mask, np.uint8)


def brats_like(image, mask, rng):
    """Several at once, as a BRATS-2013 case differs: skull-stripped, 1 mm slices, z-scored,
    no pre-contrast."""
    image, mask = skull_strip(image, mask)
    image, mask = thinner_slices(image, mask, rng, factor=(2.5, 3.5))
    image, mask = without_pre_contrast(image, mask)
    image, mask = zscored(image * (image > 0), mask)
    return image, mask


# one shift at a time, for validation (moderate, fixed ranges)
SHIFTS: dict[str, Shift] = {
    "skull-stripped": skull_strip,
    "raw integers": raw_integers,
    "0-255": rescale_255,
    "z-scored": zscored,
    "bias field": bias_field,
    "gamma": gamma,
    "noise": noise,
    "coarser in-plane": lower_inplane_resolution,
    "thin slices": thinner_slices,
    "thick slices": thicker_slices,
    "no pre-contrast": without_pre_contrast,
    "BRATS-like": brats_like,
}


def random_site_shift(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, max_slices: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A random mix of site differences for training; returns the names applied.

    Geometry first (skull stripping, slice spacing, in-plane resolution), then acquisition (bias,
    contrast, noise), then how the site stores intensities (as is, raw integers, 0-255 or
    z-scored). Missing sequences are left to the training loop's FLAIR substitution.
    """
    applied = []
    image, mask = _f32(image), np.asarray(mask, np.uint8)
    steps: list[tuple[float, str, Callable]] = [
        (0.5, "skull-stripped", lambda i, m: skull_strip(i, m)),
        (0.35, "thin slices", lambda i, m: thinner_slices(i, m, rng, max_slices=max_slices)),
        (0.25, "coarser in-plane", lambda i, m: lower_inplane_resolution(i, m, rng)),
        (0.5, "bias field", lambda i, m: bias_field(i, m, rng)),
        (0.5, "gamma", lambda i, m: gamma(i, m, rng)),
        (0.3, "noise", lambda i, m: noise(i, m, rng)),
    ]
    for p, name, fn in steps:
        if rng.random() < p:
            if name == "noise" and "skull-stripped" in applied:
                # noise on a stripped scan goes on before stripping at a real site: keep zeros zero
                noisy, mask = fn(image, mask)
                image = noisy * (image > 0)
            else:
                image, mask = fn(image, mask)
            applied.append(name)
    store = rng.choice(["as is", "raw integers", "0-255", "z-scored"])
    if store != "as is":
        image, mask = {"raw integers": raw_integers, "0-255": rescale_255, "z-scored": zscored}[
            str(store)
        ](image, mask, rng)
        applied.append(str(store))
    return image.astype(np.float32), mask.astype(np.uint8), applied

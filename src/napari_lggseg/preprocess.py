"""Preprocessing recipes: a volume -> network input, and probabilities -> back onto the slices.

Two recipes, named in every model card:

* ``reference`` -- what Buda et al.'s published weights need (their ``utils.py``): zero voxels below
  10 % of the volume maximum, crop to the non-zero box (z, y, x), zero-pad to a square, resize to
  256 (skimage, images order 2, masks order 0), rescale from the 10th-99th percentile, z-score.
* ``crop-zscore`` -- ours: crop in-plane to the head's box (all slices kept), pad to a square,
  resize to ``size`` (bilinear, antialiased), z-score each channel over head voxels, and add the
  FLAIR of ``context`` neighbouring slices on each side (2.5-D). Fast (torch resizing), and its
  inverse maps probabilities back with bilinear upsampling.
* ``robust-zscore`` -- ``crop-zscore`` made indifferent to how a site stores intensities: each
  sequence's background level is the median of the slice borders (0 for the LGG set and for
  skull-stripped scans, negative for z-scored ones, an offset for raw integers), the head is what
  lies 10 % of the way from that level to the 99.9th percentile, and values are clipped to
  [background, 99.9th percentile of the head] before the z-score. Any gain and offset per
  sequence then give the same network input (see ``training/SITE_SHIFT.md``).

The geometry of each call is kept so :func:`restore` puts predictions back on the original
slices; voxels outside the crop come back as background.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .lgg_io import FLAIR, SEQUENCES


@dataclass(frozen=True)
class Recipe:
    """How a model wants its input. Stored in the model card under ``preprocessing``."""

    name: str = "crop-zscore"
    size: int = 128
    context: int = 1  # FLAIR of this many neighbouring slices on each side become extra channels
    channels: tuple[str, ...] = SEQUENCES

    @property
    def in_channels(self) -> int:
        return len(self.channels) + 2 * self.context

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["in_channels"] = self.in_channels
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        return cls(
            name=d.get("name", "crop-zscore"),
            size=int(d.get("size", 128)),
            context=int(d.get("context", 0)),
            channels=tuple(d.get("channels", SEQUENCES)),
        )


REFERENCE = Recipe(name="reference", size=256, context=0, channels=SEQUENCES)


@dataclass
class Geometry:
    """Where the network's square grid sits in the original volume."""

    shape: tuple[int, int, int]  # original (Z, H, W)
    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right (after the crop)
    size: int = 128
    extra: dict = field(default_factory=dict)

    @property
    def side(self) -> int:
        return (self.y1 - self.y0) + self.pad[0] + self.pad[1]


def assemble_channels(
    flair: np.ndarray, pre: np.ndarray | None = None, post: np.ndarray | None = None
) -> np.ndarray:
    """Stack (Z, H, W) sequences into (Z, H, W, 3) in LGG order; a missing one is replaced by
    FLAIR, as the LGG dataset did, so three-channel models run on FLAIR-only scans."""
    flair = np.asarray(flair)
    if flair.ndim != 3:
        raise ValueError(f"FLAIR must be a 3-D volume (Z, H, W), got shape {flair.shape}")
    chans = []
    for name, arr in (("pre-contrast", pre), ("FLAIR", flair), ("post-contrast", post)):
        arr = flair if arr is None else np.asarray(arr)
        if arr.shape != flair.shape:
            raise ValueError(f"{name} has shape {arr.shape}, FLAIR has {flair.shape}")
        chans.append(arr)
    return np.stack(chans, axis=-1)


def _as_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim == 3:  # FLAIR only
        volume = assemble_channels(volume)
    if volume.ndim != 4 or volume.shape[-1] != 3:
        raise ValueError(
            f"expected a (Z, H, W, 3) volume or a (Z, H, W) FLAIR volume, got {volume.shape}"
        )
    return volume


def _square_pad(h: int, w: int) -> tuple[int, int, int, int]:
    diff = abs(h - w) / 2.0
    lo, hi = int(np.floor(diff)), int(np.ceil(diff))
    return (0, 0, lo, hi) if h > w else (lo, hi, 0, 0)


def head_box(volume: np.ndarray, margin: int = 4) -> tuple[int, int, int, int]:
    """In-plane box (y0, y1, x0, x1) of voxels above 10 % of the volume maximum, plus a margin."""
    peak = volume.max()
    fg = (volume > 0.1 * peak).any(axis=(0, 3)) if peak > 0 else np.ones(volume.shape[1:3], bool)
    ys, xs = np.nonzero(fg.any(axis=1)), np.nonzero(fg.any(axis=0))
    if ys[0].size == 0:
        return 0, volume.shape[1], 0, volume.shape[2]
    h, w = volume.shape[1:3]
    return (
        max(0, ys[0][0] - margin),
        min(h, ys[0][-1] + 1 + margin),
        max(0, xs[0][0] - margin),
        min(w, xs[0][-1] + 1 + margin),
    )


def _resize_torch(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, C, size, size)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if mode == "area":
        out = F.interpolate(t, size=(size, size), mode="area")
    else:
        out = F.interpolate(
            t, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1]
        )
    return out.numpy()


def _with_context(x: np.ndarray, context: int, flair_index: int) -> np.ndarray:
    """Append the FLAIR of ``context`` slices below and above (edges repeat) as channels."""
    if context == 0:
        return x
    z = x.shape[0]
    flair = x[:, flair_index]
    extra = []
    for d in range(1, context + 1):
        extra.append(flair[np.clip(np.arange(z) - d, 0, z - 1)])
        extra.append(flair[np.clip(np.arange(z) + d, 0, z - 1)])
    return np.concatenate([x, np.stack(extra, axis=1)], axis=1)


RECIPES = ("crop-zscore", "robust-zscore", "reference")


def prepare(volume: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, Geometry]:
    """(Z, H, W, 3) volume (or (Z, H, W) FLAIR) -> network input (Z', C, S, S) float32 + geometry."""
    if recipe.name == "reference":
        return _prepare_reference(volume)
    if recipe.name == "robust-zscore":
        return _prepare_robust(volume, recipe)
    if recipe.name != "crop-zscore":
        raise ValueError(f"unknown preprocessing recipe {recipe.name!r}: one of {RECIPES}")
    volume = _as_volume(volume).astype(np.float32, copy=False)
    z, h, w, _ = volume.shape
    y0, y1, x0, x1 = head_box(volume)
    crop = volume[:, y0:y1, x0:x1]
    pad = _square_pad(y1 - y0, x1 - x0)
    crop = np.pad(crop, ((0, 0), pad[:2], pad[2:], (0, 0)))
    x = _resize_torch(crop.transpose(0, 3, 1, 2), recipe.size, "bilinear")
    head = x.max(axis=1) > 0.1 * max(float(x.max()), 1e-6)
    for c in range(3):
        vals = x[:, c][head]
        if vals.size < 16:
            vals = x[:, c].ravel()
        mean, std = float(vals.mean()), float(vals.std())
        x[:, c] = (x[:, c] - mean) / (std if std > 1e-6 else 1.0)
    idx = [SEQUENCES.index(c) for c in recipe.channels]
    x = _with_context(x, recipe.context, FLAIR)[:, idx + list(range(3, 3 + 2 * recipe.context))]
    geom = Geometry((z, h, w), 0, z, y0, y1, x0, x1, pad, recipe.size)
    return np.ascontiguousarray(x, dtype=np.float32), geom


def background_levels(volume: np.ndarray, border: int = 4) -> np.ndarray:
    """Per-sequence background level (3,): the median of every slice's outer ``border`` pixels."""
    v = volume
    frame = np.concatenate(
        [
            v[:, :border].reshape(-1, 3),
            v[:, -border:].reshape(-1, 3),
            v[:, :, :border].reshape(-1, 3),
            v[:, :, -border:].reshape(-1, 3),
        ]
    )
    return np.median(frame, axis=0).astype(np.float32)


def _prepare_robust(volume: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, Geometry]:
    volume = _as_volume(volume).astype(np.float32, copy=False)
    z, h, w, _ = volume.shape
    bg = background_levels(volume)
    # every other pixel of every slice is plenty for a percentile, and 4x cheaper
    sample = volume[:, ::2, ::2]
    top = np.percentile(sample.reshape(-1, 3), 99.9, axis=0).astype(np.float32)
    level = bg + 0.1 * np.maximum(top - bg, 1e-6)
    fg = (volume.max(axis=0) > level).any(axis=-1)
    ys, xs = np.nonzero(fg.any(axis=1))[0], np.nonzero(fg.any(axis=0))[0]
    if ys.size == 0:
        y0, y1, x0, x1 = 0, h, 0, w
    else:
        y0, y1 = max(0, ys[0] - 4), min(h, ys[-1] + 5)
        x0, x1 = max(0, xs[0] - 4), min(w, xs[-1] + 5)
    pad = _square_pad(y1 - y0, x1 - x0)
    # pad with each sequence's own background, not 0 (0 is bright on a z-scored scan); the
    # resize is linear with weights summing to 1, so the background comes off afterwards
    side = (y1 - y0) + pad[0] + pad[1]
    square = np.empty((z, side, side, 3), np.float32)
    square[...] = bg
    square[:, pad[0] : pad[0] + y1 - y0, pad[2] : pad[2] + x1 - x0] = volume[:, y0:y1, x0:x1]
    x = _resize_torch(square.transpose(0, 3, 1, 2), recipe.size, "bilinear")
    x -= bg[None, :, None, None]
    span = (level - bg)[None, :, None, None]
    head = (x > span).any(axis=1)
    for c in range(3):
        vals = x[:, c][head]
        if vals.size < 16:
            vals = x[:, c].ravel()
        hi = float(np.percentile(vals, 99.9))
        vals = np.clip(vals, 0.0, hi)
        mean, std = float(vals.mean()), float(vals.std())
        x[:, c] = (np.clip(x[:, c], 0.0, hi) - mean) / (std if std > 1e-6 else 1.0)
    idx = [SEQUENCES.index(c) for c in recipe.channels]
    x = _with_context(x, recipe.context, FLAIR)[:, idx + list(range(3, 3 + 2 * recipe.context))]
    geom = Geometry((z, h, w), 0, z, y0, y1, x0, x1, pad, recipe.size)
    return np.ascontiguousarray(x, dtype=np.float32), geom


def prepare_mask(mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Original (Z, H, W) mask -> (Z', S, S) float32 in [0, 1] on the network's grid.

    ``crop-zscore`` resizes the mask like the images (soft edges: the fraction of each grid cell
    that is tumour), so training targets carry no extra rounding; ``reference`` is order 0.
    """
    m = (np.asarray(mask) > 0)[geom.z0 : geom.z1, geom.y0 : geom.y1, geom.x0 : geom.x1].astype(
        np.float32
    )
    m = np.pad(m, ((0, 0), geom.pad[:2], geom.pad[2:]))
    if geom.extra.get("recipe") == "reference":
        from skimage.transform import resize

        out = resize(
            m,
            (m.shape[0], geom.size, geom.size),
            order=0,
            mode="constant",
            cval=0,
            anti_aliasing=False,
        )
        return (out > 0.5).astype(np.float32)
    if geom.size == geom.side:
        return m
    return np.clip(_resize_torch(m[:, None], geom.size, "bilinear")[:, 0], 0.0, 1.0)


def restore(prob: np.ndarray, geom: Geometry) -> np.ndarray:
    """Network-grid probabilities (Z', S, S) -> (Z, H, W) float32 on the original slices."""
    side = geom.side
    up = (
        _resize_torch(np.asarray(prob, np.float32)[:, None], side, "bilinear")[:, 0]
        if side != geom.size
        else np.asarray(prob, np.float32)
    )
    top, bottom, left, right = geom.pad
    up = up[:, top : side - bottom, left : side - right]
    out = np.zeros(geom.shape, np.float32)
    out[geom.z0 : geom.z1, geom.y0 : geom.y1, geom.x0 : geom.x1] = up
    return out


def _prepare_reference(volume: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """Buda et al.'s preprocessing, step for step, on one volume."""
    from skimage.exposure import rescale_intensity
    from skimage.transform import resize

    volume = _as_volume(volume).copy()
    z, h, w, _ = volume.shape
    volume[volume < np.max(volume) * 0.1] = 0
    nz = np.nonzero(volume.max(axis=(1, 2, 3)))[0]
    ny = np.nonzero(volume.max(axis=(0, 2, 3)))[0]
    nx = np.nonzero(volume.max(axis=(0, 1, 3)))[0]
    if nz.size == 0:
        nz, ny, nx = np.arange(z), np.arange(h), np.arange(w)
    z0, z1, y0, y1, x0, x1 = nz[0], nz[-1] + 1, ny[0], ny[-1] + 1, nx[0], nx[-1] + 1
    crop = volume[z0:z1, y0:y1, x0:x1]
    pad = _square_pad(y1 - y0, x1 - x0)
    crop = np.pad(crop, ((0, 0), pad[:2], pad[2:], (0, 0)))
    crop = resize(
        crop, (crop.shape[0], 256, 256, 3), order=2, mode="constant", cval=0, anti_aliasing=False
    )
    p10, p99 = np.percentile(crop, 10), np.percentile(crop, 99)
    crop = rescale_intensity(crop, in_range=(p10, p99))
    mean, std = crop.mean(axis=(0, 1, 2)), crop.std(axis=(0, 1, 2))
    crop = (crop - mean) / np.where(std > 0, std, 1.0)
    geom = Geometry(
        (z, h, w),
        int(z0),
        int(z1),
        int(y0),
        int(y1),
        int(x0),
        int(x1),
        pad,
        256,
        extra={"recipe": "reference"},
    )
    return np.ascontiguousarray(crop.transpose(0, 3, 1, 2), dtype=np.float32), geom

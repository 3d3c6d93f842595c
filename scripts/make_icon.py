"""Draw the plugin icon (src/napari_lggseg/icon.png, 256x256): an axial FLAIR-like slice, the
head grey, a bright lesion with its mask outlined, as napari shows a segmentation.

    python scripts/make_icon.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_lggseg" / "icon.png"
SIZE = 256


def draw(size: int = SIZE) -> np.ndarray:
    """RGBA uint8 (size, size, 4)."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    rng = np.random.default_rng(7)
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6)
    texture = (texture - texture.min()) / np.ptp(texture)
    head = (xx / 0.40) ** 2 + (yy / 0.46) ** 2 <= 1
    brain = (xx / 0.35) ** 2 + (yy / 0.41) ** 2 <= 1
    fissure = (np.abs(xx) < 0.01) & (yy < -0.2) & brain
    lesion = ((xx - 0.12) / 0.13) ** 2 + ((yy + 0.08) / 0.10) ** 2 + 0.4 * texture <= 1.0
    lesion &= brain
    grey = np.where(brain, 0.22 + 0.3 * texture, np.where(head, 0.7, 0.0))
    grey = np.where(fissure, 0.1, grey)
    grey = np.where(lesion, 0.95, grey)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    outline = lesion & ~ndimage.binary_erosion(lesion, iterations=5)
    rgb[outline] = (1.0, 0.55, 0.1)  # napari-like label colour
    r = 0.16  # rounded-square tile, dark as napari's theme
    corner = np.maximum(np.abs(xx) - (0.5 - r), 0) ** 2 + np.maximum(np.abs(yy) - (0.5 - r), 0) ** 2
    tile = corner <= r**2
    background = np.array([0.15, 0.16, 0.19])
    rgb = np.where(head[..., None], rgb, background)
    alpha = tile.astype(float)
    return (np.dstack([rgb, alpha]) * 255).round().astype(np.uint8)


if __name__ == "__main__":
    Image.fromarray(draw(), "RGBA").save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

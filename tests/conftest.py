"""Shared fixtures: tiny LGG-format patients written with tifffile, and the real data when present."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from tiny_model import tiny_model_store  # noqa: F401  (session fixture, shared by all tests)

# napari saves its settings whenever they change (the tests change reader preferences): keep
# them out of the user's configuration. Must happen before napari.settings is imported.
if "NAPARI_CONFIG" not in os.environ:
    _cfg_dir = tempfile.mkdtemp(prefix="lggseg-test-napari-settings-")
    atexit.register(shutil.rmtree, _cfg_dir, ignore_errors=True)
    os.environ["NAPARI_CONFIG"] = os.path.join(_cfg_dir, "settings.yaml")
# a model the store cannot take goes to a fallback folder: never the user's real one in tests
if "LGGSEG_UNSAVED_DIR" not in os.environ:
    _unsaved_dir = tempfile.mkdtemp(prefix="lggseg-test-unsaved-models-")
    atexit.register(shutil.rmtree, _unsaved_dir, ignore_errors=True)
    os.environ["LGGSEG_UNSAVED_DIR"] = _unsaved_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
KAGGLE_ROOT = (REPO_ROOT / ".." / "shared" / "lgg" / "kaggle_3m").resolve()
PATIENT_ID = "TCGA_XX_0001_20000101"


def write_lgg_patient(
    root: Path,
    name: str = PATIENT_ID,
    n: int = 12,
    size: int = 32,
    masks: bool = True,
    tiff_kwargs: dict | None = None,
    seed: int = 0,
    synthetic: bool = False,
) -> Path:
    """Write a small patient ``root/name/`` in the dataset's layout; the one patient writer of
    the tests. By default every slice is different random pixels with its number in the corner
    (a wrong slice order shows); ``synthetic`` writes ``make_synthetic_patient``'s tumour-like
    volume instead, which a trained model can segment."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = (_synthetic if synthetic else _numbered_noise)(n, size, seed)
    kw = tiff_kwargs or {}
    for i in range(1, n + 1):
        tifffile.imwrite(folder / f"{name}_{i}.tif", image[i - 1], photometric="rgb", **kw)
        if masks:
            tifffile.imwrite(folder / f"{name}_{i}_mask.tif", mask[i - 1], **kw)
    return folder


def _numbered_noise(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.empty((n, size, size, 3), np.uint8)
    mask = np.zeros((n, size, size), np.uint8)
    for i in range(1, n + 1):
        image[i - 1] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image[i - 1, 0, 0] = i
        if n // 3 <= i <= 2 * n // 3:
            mask[i - 1, size // 4 : size // 4 + i, size // 3 : size // 2] = 255
    return image, mask


def _synthetic(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from napari_lggseg.synthetic import make_synthetic_patient

    image, mask = make_synthetic_patient(seed=seed, n_slices=n, size=size)
    return image, (mask > 0).astype(np.uint8) * 255


# --------------------------------------------------------------------------- broken patients
# Each breaks a patient written by write_lgg_patient(n=8) and returns the file name the error must
# name; BAD_PATIENTS maps a case to (breaker, words the message must contain).


def _empty(folder: Path) -> str:
    for p in folder.iterdir():
        p.unlink()
    return folder.name


def _gap(folder: Path) -> str:
    (folder / f"{PATIENT_ID}_3.tif").unlink()
    (folder / f"{PATIENT_ID}_3_mask.tif").unlink()
    return f"{PATIENT_ID}_3.tif"


def _other_shape(folder: Path) -> str:
    tifffile.imwrite(
        folder / f"{PATIENT_ID}_4.tif", np.zeros((40, 32, 3), np.uint8), photometric="rgb"
    )
    return f"{PATIENT_ID}_4.tif"


def _grayscale(folder: Path) -> str:
    tifffile.imwrite(folder / f"{PATIENT_ID}_2.tif", np.zeros((32, 32), np.uint8))
    return f"{PATIENT_ID}_2.tif"


def _sixteen_bit(folder: Path) -> str:
    tifffile.imwrite(
        folder / f"{PATIENT_ID}_5.tif", np.zeros((32, 32, 3), np.uint16), photometric="rgb"
    )
    return f"{PATIENT_ID}_5.tif"


def _masks_only(folder: Path) -> str:
    for p in folder.iterdir():
        if not p.name.endswith("_mask.tif"):
            p.unlink()
    return f"{PATIENT_ID}_1_mask.tif"


def _non_binary_mask(folder: Path) -> str:
    m = np.zeros((32, 32), np.uint8)
    m[3:9, 3:9] = 128
    m[4, 4] = 255
    tifffile.imwrite(folder / f"{PATIENT_ID}_6_mask.tif", m)
    return f"{PATIENT_ID}_6_mask.tif"


def _truncated(folder: Path) -> str:
    p = folder / f"{PATIENT_ID}_3.tif"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return p.name


def _garbage(folder: Path) -> str:
    (folder / f"{PATIENT_ID}_7.tif").write_bytes(b"this is not a TIFF at all" * 10)
    return f"{PATIENT_ID}_7.tif"


BAD_PATIENTS = {
    "empty LGG-named folder": (_empty, "no slices"),
    "gap in slice numbers": (_gap, "slice 3 is missing"),
    "slices of different shapes": (_other_shape, "differs from"),
    "grayscale slice": (_grayscale, "grayscale"),
    "16-bit slice": (_sixteen_bit, "uint16"),
    "masks without images": (_masks_only, "mask without images"),
    "non-binary mask": (_non_binary_mask, "not binary"),
    "truncated TIFF": (_truncated, "cannot read this TIFF"),
    "not a TIFF": (_garbage, "cannot read this TIFF"),
}


@pytest.fixture
def make_lgg_patient(tmp_path):
    """Factory: ``make_lgg_patient(name=..., n=..., size=..., masks=..., tiff_kwargs=..., root=...)``
    -> the patient folder (under ``tmp_path/data`` unless ``root`` is given)."""

    def make(name: str = PATIENT_ID, n: int = 12, root: Path | None = None, **kwargs) -> Path:
        return write_lgg_patient(root or tmp_path / "data", name=name, n=n, **kwargs)

    return make


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``: compare before and after to prove nothing changed."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def kaggle_root() -> Path:
    """The real ``kaggle_3m`` folder beside the repository (``../shared/lgg/kaggle_3m``)."""
    if not KAGGLE_ROOT.is_dir():
        pytest.skip(f"real LGG data not found at {KAGGLE_ROOT}")
    return KAGGLE_ROOT


@pytest.fixture
def real_patient(kaggle_root) -> Path:
    """The real patient with the fewest slices (fast to read)."""
    folders = [p for p in kaggle_root.iterdir() if p.is_dir() and p.name.startswith("TCGA_")]
    if not folders:
        pytest.skip(f"no patient folders in {kaggle_root}")
    return min(folders, key=lambda p: (len(os.listdir(p)), p.name))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """napari's viewer fixture reads ``item.rep_call`` in its teardown; a test skipped in setup
    (data absent) has none, which turned every such skip into an error on a user's machine."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "setup" and not report.passed and not hasattr(item, "rep_call"):
        item.rep_call = report

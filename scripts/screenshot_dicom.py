"""Take docs/screenshot_dicom.png: a DICOM study folder (three series and a localizer) opened in a
real napari window, the axial slice with the most tumour.

There is no real DICOM study in ../shared, so the real BraTS case's FLAIR, T1 and T1ce are
written as DICOM series (pydicom, the same voxels and geometry; tests/dicom_cases.py) into a
temporary folder that is deleted afterwards; no scan is kept or copied.

    xvfb-run -a .venv/bin/python scripts/screenshot_dicom.py [BRATS_CASE_FOLDER]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "external" / "brats18" / "Brats18_2013_2_1"
SERIES = [("flair", "AX T2 FLAIR", 3), ("t1", "T1 SE AX", 4), ("t1ce", "T1 SE AX POST GD", 5)]


def write_study(case: Path, study: Path) -> Path:
    """The case's sequences as DICOM series ``study/<n>_<name>/IM....``, plus a localizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    import nibabel as nib
    from dicom_cases import series_from_nifti, write_series
    from pydicom.uid import generate_uid

    uid = generate_uid()
    for suffix, description, number in SERIES:
        nifti = case / f"{case.name}_{suffix}.nii.gz"
        series_from_nifti(
            nifti, study / f"{number}_{suffix}", description, number=number, study=uid
        )
    flair = nib.load(case / f"{case.name}_flair.nii.gz")
    loc = np.asarray(flair.dataobj, np.float32)[:, :, 60:63]  # 3 slices: a localizer's worth
    loc_affine = flair.affine.copy()
    loc_affine[:3, 3] += 60 * flair.affine[:3, 2]
    write_series(study / "1_loc", loc, loc_affine, "Localizer", number=1, study=uid)
    return study


def _settle(app, n: int = 20) -> None:
    for _ in range(n):
        app.processEvents()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("case", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot_dicom.png")
    args = ap.parse_args()

    import imageio.v3 as iio
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_lggseg import dicom_io
    from napari_lggseg._reader import case_layers
    from napari_lggseg.cases import find_cases, read_case

    with tempfile.TemporaryDirectory() as tmp:
        study = write_study(args.case, Path(tmp) / args.case.name)
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(900, 800)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if find_cases(study):  # routed through cases: the reader opens it
                viewer.open(study, plugin="napari-lggseg")
            else:  # not routed yet: the layers the reader would give
                for data, kwargs, kind in case_layers(
                    dicom_io.read_dicom_case(study, all_sequences=True)
                ):
                    getattr(viewer, f"add_{kind}")(data, **kwargs)
        case = dicom_io.read_dicom_case(study)
        print("\n".join(case.notes))
        app = QApplication.instance()
        flair = viewer.layers[f"{args.case.name} FLAIR"]
        truth = np.asarray(read_case(args.case).label)
        viewer.dims.set_point(0, int(truth.sum(axis=(1, 2)).argmax()))
        viewer.layers.selection = {flair}
        _settle(app)
        shot = viewer.screenshot(canvas_only=False, flash=False)
        iio.imwrite(args.out, shot)
        print(f"wrote {args.out}")
        viewer.close()


if __name__ == "__main__":
    main()

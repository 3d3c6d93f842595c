"""Synthetic DICOM series written with pydicom (one file per slice, explicit VR little endian),
from a voxel volume and its NIfTI affine, so a test can read the same voxels both ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

SLOPE, INTERCEPT = 2.0, -100.0
STUDY = generate_uid()


def ds_number(value) -> str:
    return f"{float(value):.8g}"  # a DS value holds at most 16 characters


def write_series(
    folder: Path,
    volume: np.ndarray,
    affine: np.ndarray,
    description: str,
    *,
    number: int = 1,
    study: str = STUDY,
    contrast: str | None = None,
    transfer_syntax=ExplicitVRLittleEndian,
    slope: float = SLOPE,
    intercept: float = INTERCEPT,
    patient: str = "P1",
    edit=None,
) -> Path:
    """Write ``volume`` (columns, rows, slices; voxel -> RAS+ mm by ``affine``) as one DICOM
    file per slice, files named in shuffled order, intensities stored through RescaleSlope and
    RescaleIntercept (uint16, or int16 when some stored value is negative). ``edit(k, ds)`` may change or drop (return None) slice k's dataset."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :2], axis=0)  # along columns, along rows
    iop = np.concatenate([lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]])
    series_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    names = np.random.default_rng(number).permutation(volume.shape[2])
    signed = bool(np.rint((volume.min() - intercept) / slope) < 0)
    for k in range(volume.shape[2]):
        stored = np.rint((volume[:, :, k].T - intercept) / slope)
        stored = stored.astype(np.int16 if signed else np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = transfer_syntax
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "MR", patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, number, k + 1
        if contrast:
            ds.ContrastBolusAgent = contrast
        ds.ImagePositionPatient = [ds_number(v) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [ds_number(v) for v in iop]
        ds.PixelSpacing = [
            ds_number(spacing[1]),
            ds_number(spacing[0]),
        ]  # row spacing, column spacing
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
            16,
            16,
            15,
            int(signed),
        )
        ds.RescaleSlope, ds.RescaleIntercept = ds_number(slope), ds_number(intercept)
        if transfer_syntax == ExplicitVRLittleEndian:
            ds.PixelData = stored.tobytes()
        else:
            ds.PixelData = encapsulate([b"\xff\xd8 not really compressed \xff\xd9"])
        if edit is not None and (ds := edit(k, ds)) is None:
            continue
        ds.save_as(folder / f"IM{names[k]:04d}", enforce_file_format=True)
    return folder


def series_from_nifti(path: Path, folder: Path, description: str, **kwargs) -> Path:
    """Write a NIfTI volume (integer voxels) as a DICOM series of the same voxels and geometry,
    stored as they are (slope 1, intercept 0), into a temporary ``folder``."""
    import nibabel as nib

    img = nib.load(path)
    volume = np.asarray(img.dataobj, np.float32)
    return write_series(folder, volume, img.affine, description, slope=1.0, intercept=0.0, **kwargs)

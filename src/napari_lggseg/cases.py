"""Scan cases, NIfTI or DICOM: find them in a folder, list their files, read their header or
their voxels. No Qt, no torch.

Why a module of its own: the choice between :mod:`scan_io` (NIfTI) and :mod:`dicom_io` (DICOM)
sits above both, so neither imports the other (``dicom_io`` builds ``scan_io``'s
:class:`~napari_lggseg.scan_io.ScanCase`). The reader, writer, CLI, projects and scripts all open
scans through these four functions. NIfTI files directly in a folder win over DICOM there.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import dicom_io, scan_io
from .dicom_series import find_dicom_cases, is_dicom_case
from .scan_io import CaseFiles, ScanCase, ScanHeader


def find_cases(path) -> list[Path]:
    """The cases at ``path``: ``[path]`` for a NIfTI file or a case folder, the case folders
    (sorted by name) for a folder of them; else the DICOM cases there (a DICOM file: its study
    or series folder); ``[]`` for anything else. Never raises: the reader calls it to decide
    whether to claim a path."""
    try:
        return scan_io.find_nifti_cases(path) or find_dicom_cases(path)
    except (OSError, TypeError, ValueError):
        return []


def case_files(path: str | os.PathLike) -> CaseFiles:
    """Which file holds which sequence (for DICOM: the first file of each chosen series), from
    names and headers alone; raises ScanFormatError naming the file."""
    if is_dicom_case(path):
        return dicom_io.dicom_case_files(path)
    return scan_io.nifti_case_files(path)


def read_header(path: str | os.PathLike) -> ScanHeader:
    """A case's files and the FLAIR's geometry, no pixels read: enough to save a mask on its
    grid (:func:`napari_lggseg.scan_masks.save_mask`)."""
    if is_dicom_case(path):
        return dicom_io.read_dicom_header(path)
    return scan_io.read_nifti_header(path)


def read_case(path: str | os.PathLike, all_sequences: bool = False) -> ScanCase:
    """Read a case (NIfTI file or folder, DICOM folder or file) into a :class:`ScanCase` in the
    model orientation; raises ScanFormatError naming the file. ``all_sequences`` also reads
    sequences the model does not use (T2) into ``others``, for viewing."""
    if is_dicom_case(path):
        return dicom_io.read_dicom_case(path, all_sequences=all_sequences)
    return scan_io.read_nifti_case(path, all_sequences=all_sequences)

"""napari sample data: a synthetic LGG-like patient, laid out exactly as the reader lays out a
real one (three sequences, FLAIR on top, ground truth as Labels)."""

from __future__ import annotations

from ._reader import patient_layers
from .synthetic import SYNTH_PATIENT_ID, make_synthetic_patient


def make_sample_data() -> list[tuple]:
    """Layer tuples for the synthetic patient ``SYNTH_LGG_0001`` (no folder on disk)."""
    image, mask = make_synthetic_patient(seed=0)
    slice_files = [f"{SYNTH_PATIENT_ID}_{n}.tif" for n in range(1, image.shape[0] + 1)]
    return patient_layers(SYNTH_PATIENT_ID, image, mask, folder=None, slice_files=slice_files)

"""What training learns from, read from disk: a corrections folder counts only its reviewed
slices, and folders without a single reviewed slice are named instead of training on nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_lgg_patient

from napari_lggseg import lgg_io
from napari_lggseg.train_data import NothingToLearn, load_volumes, unlabelled


def _corrections(tmp_path, k: int, reviewed) -> object:
    pid = f"TCGA_SY_{k:04d}_20000101"
    source = write_lgg_patient(tmp_path / "data", pid, n=6, masks=False, seed=k)
    shape = lgg_io.read_patient(source, masks=False).image.shape[:3]
    folder = tmp_path / "corrections" / pid
    lgg_io.write_corrections(
        folder, np.zeros(shape, np.uint8), pid, source, reviewed_slices=reviewed
    )
    return folder


def test_folders_without_reviewed_slices_are_named(tmp_path):
    empty = [_corrections(tmp_path, k, []) for k in (1, 2)]
    with pytest.raises(NothingToLearn) as caught:
        load_volumes(empty)
    assert all(str(f) in str(caught.value) for f in empty) and "reviewed" in str(caught.value)
    assert isinstance(caught.value, lgg_io.LGGFormatError)  # the CLI's one-line errors


def test_a_folder_with_reviews_is_learned_from_beside_one_without(tmp_path):
    some, none = _corrections(tmp_path, 1, [1, 3]), _corrections(tmp_path, 2, [])
    volumes = load_volumes([some, none])
    assert [v.folder for v in volumes] == [some, none]
    assert list(volumes[0].labelled_slices) == [1, 3]
    assert [v.folder for v in unlabelled(volumes)] == [none]

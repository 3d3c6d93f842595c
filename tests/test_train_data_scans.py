"""Training data from scans (issue 16): a NIfTI case with a label file counts every slice, a
saved NIfTI corrections mask only its reviewed slices, thin-slice cases reach training on the
slices inference shows the network, LGG folders and NIfTI cases mix in one call, and a case
without a label is named, not trained on as if it were all background."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_lgg_patient
from nifti_cases import affine_for, write_case

from napari_lggseg import cases, cli, geometry, models, scan_io, scan_masks
from napari_lggseg.preprocess import Recipe
from napari_lggseg.train_data import (
    NothingToLearn,
    load_volumes,
    prepare_volumes,
    unlabelled,
    volumes_from_path,
)

THICK = affine_for(spacing=(1.0, 1.0, 5.0), shape=(48, 48, 12))  # the LGG set's thick slices


def _thick_case(folder, label: bool = True):
    return write_case(folder, affine=THICK, shape=(48, 48, 12), label=label)


def _thin_case(folder, label: bool = True):
    """1 mm slices, 0.9 x 1.1 mm in plane: anisotropic, as many research scans."""
    shape = (44, 40, 40)
    return write_case(folder, affine=affine_for(spacing=(0.9, 1.1, 1.0), shape=shape), shape=shape)


def test_a_label_file_makes_every_slice_labelled(tmp_path):
    folder = _thick_case(tmp_path / "cases" / "CASE_A")
    (vol,) = load_volumes(folder)
    case = cases.read_case(folder)
    assert vol.patient_id == "CASE_A" and vol.source == "expert" and vol.folder == folder
    assert list(vol.labelled_slices) == list(range(12))
    assert vol.image.shape == (12, *case.image.shape[1:]) and vol.image.dtype == np.float32
    np.testing.assert_array_equal(vol.mask > 0, case.label > 0)
    assert (vol.mask > 0).sum() > 50  # the phantom's lesion, not an empty mask


def test_thin_slices_reach_training_as_inference_shows_them(tmp_path):
    folder = _thin_case(tmp_path / "cases" / "THIN")
    case = cases.read_case(folder)
    assert case.spacing[0] == pytest.approx(1.0) and case.image.shape[0] == 40
    (vol,) = volumes_from_path(folder)
    n_net = geometry.to_network_slices(case.image, case.spacing[0]).shape[0]
    assert n_net == 10  # 40 x 1 mm -> 4 mm slices, as the network sees them in segment
    assert vol.image.shape[0] == vol.mask.shape[0] == n_net
    np.testing.assert_allclose(vol.image, geometry.to_network_slices(case.image, 1.0))
    expected = geometry.to_network_slices(case.label.astype(np.float32), 1.0) > 0.5
    np.testing.assert_array_equal(vol.mask > 0, expected)
    assert list(vol.labelled_slices) == list(range(n_net))
    (prepared,) = prepare_volumes([vol], Recipe(size=32, context=1))
    assert prepared.x.shape == (n_net, 5, 32, 32) and float(prepared.y.sum()) > 0


def _saved(tmp_path, case_folder, **kwargs):
    case = cases.read_case(case_folder)
    out = tmp_path / "masks" / case.case_id
    scan_masks.save_mask(case, case.label, out, **kwargs)
    return out


def test_saved_corrections_count_only_their_reviewed_slices(tmp_path):
    case = _thick_case(tmp_path / "cases" / "CASE_R")
    out = _saved(tmp_path, case, kind="corrections", reviewed_slices=[2, 5, 6])
    (vol,) = load_volumes(out)
    assert vol.source == "corrections" and vol.patient_id == "CASE_R"
    assert list(vol.labelled_slices) == [2, 5, 6]
    whole = _saved(tmp_path / "w", case, kind="corrections", whole_volume_reviewed=True)
    assert list(load_volumes(whole)[0].labelled_slices) == list(range(12))


def test_a_resampled_slice_is_labelled_only_when_all_it_is_made_of_was(tmp_path):
    case = _thin_case(tmp_path / "cases" / "THIN_R")
    out = _saved(tmp_path, case, kind="corrections", reviewed_slices=range(0, 12))
    (vol,) = load_volumes(out)
    assert vol.image.shape[0] == 10
    # 4 mm slice k averages 1 mm slices 4k-2 .. 4k+5 (a triangle); 0..11 reviewed -> k = 0, 1
    assert list(vol.labelled_slices) == [0, 1]


def test_an_unreviewed_prediction_is_named_and_nothing_learned(tmp_path, capsys):
    case = _thick_case(tmp_path / "cases" / "CASE_P")
    out = _saved(tmp_path, case, kind="prediction")
    with pytest.raises(NothingToLearn) as caught:
        load_volumes(out)
    assert str(out) in str(caught.value) and "reviewed" in str(caught.value)
    assert cli.main(["train", "--data", str(out), "--device", "cpu", "--epochs", "1"]) != 0
    err = capsys.readouterr().err
    assert str(out) in err and "Traceback" not in err


def test_lgg_folders_and_nifti_cases_in_one_call(tmp_path):
    lgg = write_lgg_patient(tmp_path / "lgg", "TCGA_SY_0001_20000101", n=6, size=32, seed=1)
    case = _thick_case(tmp_path / "cases" / "CASE_M")
    volumes = load_volumes([lgg, case])
    assert [v.patient_id for v in volumes] == ["TCGA_SY_0001_20000101", "CASE_M"]
    assert volumes[0].image.dtype == np.uint8 and volumes[1].image.dtype == np.float32
    prepared = prepare_volumes(volumes, Recipe(size=32, context=1))
    # per-channel z-score: raw 16-bit scan values and 0-255 TIFFs reach the network alike
    for p in prepared:
        assert abs(float(p.x[:, :3].float().mean())) < 1.5
    # one root holding both kinds
    root = tmp_path / "both"
    root.mkdir()
    (root / lgg.name).symlink_to(lgg, target_is_directory=True)
    (root / "CASE_M").symlink_to(case, target_is_directory=True)
    assert sorted(v.patient_id for v in load_volumes(root)) == sorted(["CASE_M", lgg.name])


def test_a_case_without_a_label_is_named(tmp_path):
    bare = _thick_case(tmp_path / "cases" / "NO_LABEL", label=False)
    with pytest.raises(scan_io.ScanFormatError) as caught:
        load_volumes(bare)
    assert str(bare) in str(caught.value) and "label" in str(caught.value)
    # in a folder of cases beside one with a label: left out, with its reason
    _thick_case(tmp_path / "cases" / "WITH_LABEL")
    volumes = load_volumes(tmp_path / "cases")
    assert [v.patient_id for v in volumes] == ["NO_LABEL", "WITH_LABEL"]
    (empty,) = unlabelled(volumes)
    assert empty.folder == bare and "label" in empty.why_unlabelled
    # a folder holding only unlabelled cases: nothing to learn, each named
    only = tmp_path / "only"
    _thick_case(only / "B1", label=False)
    _thick_case(only / "B2", label=False)
    with pytest.raises(NothingToLearn) as caught:
        load_volumes(only)
    assert str(only / "B1") in str(caught.value) and str(only / "B2") in str(caught.value)


@pytest.fixture
def child_store(tiny_model_store, tmp_path, monkeypatch):  # noqa: F811
    """A user store with a copy of the tiny model, so the new model stays out of the session's."""
    import shutil

    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(models.get_model(tiny_model_store).path, store / tiny_model_store)
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(store))
    return tiny_model_store


def test_lggseg_train_fine_tunes_on_nifti_case_folders(child_store, tmp_path, capsys):
    """The issue-19 command, ``lggseg train --data CASES --from MODEL --name NEW``, on thin-slice
    anisotropic NIfTI cases (one without a label, said and left out)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cases = tmp_path / "cases"
        _thin_case(cases / "THIN_1")
        _thick_case(cases / "THICK_2")
        _thick_case(cases / "BARE_3", label=False)
        args = ["train", "--data", str(cases), "--from", child_store, "--name", "from-nifti",
                "--epochs", "1", "--batch-size", "2", "--device", "cpu"]  # fmt: skip
        assert cli.main(args) == 0, capsys.readouterr()
    finally:
        torch.set_num_threads(old)
    out = capsys.readouterr().out
    assert f"{cases / 'BARE_3'}: no label file" in out and "left out" in out
    child = models.get_model("from-nifti")
    assert child.parent == child_store
    assert sorted(child.card["training_data"]["patients"]) == ["THICK_2", "THIN_1"]
    assert child.card["training_data"]["slices"] == 10 + 12  # thin case on 4 mm network slices

"""``lggseg segment`` and ``lggseg evaluate`` on NIfTI cases (mixed with LGG folders): masks on the
scan's own grid with its exact header geometry, CSV rows with the volume in mL from the file's own
voxel size, a person's NIfTI corrections never touched, and bad files named while the batch goes
on. Synthetic cases are written here with nibabel (tests/nifti_cases.py); the two real BraTS-2018
cases in ../shared/external/brats18 run with the shipped model when present."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tree_hashes, write_lgg_patient
from nifti_cases import affine_for, write_case, write_nifti

from napari_lggseg import cases, cli, lgg_io, scan_io, scan_masks

BRATS_ROOT = (REPO_ROOT / ".." / "shared" / "external" / "brats18").resolve()
SHAPE = (40, 44, 30)  # file voxels (i, j, k)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _case(root: Path, name: str, codes="LPS", spacing=(3.5, 3.4, 4.0), angle=0.0, **kw) -> Path:
    return write_case(root / name, affine_for(codes, spacing, SHAPE, angle), SHAPE, **kw)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ln.startswith("lggseg: error:")]


def _segment(inputs, out, model, *extra) -> int:
    return cli.main(["segment", *map(str, inputs), "--out", str(out), "--model", model, *extra])


def _geometry(img) -> dict:
    hdr = img.header
    q, qcode = hdr.get_qform(coded=True)
    s, scode = hdr.get_sform(coded=True)
    return {
        "shape": img.shape[:3],
        "affine": img.affine,
        "qform": q,
        "qform_code": int(qcode),
        "sform": s,
        "sform_code": int(scode),
        "zooms": hdr.get_zooms()[:3],
        "units": hdr.get_xyzt_units(),
        "pixdim": hdr["pixdim"][:4],
    }


def _assert_same_geometry(written, source) -> None:
    a, b = _geometry(written), _geometry(source)
    for key in a:
        if a[key] is None or b[key] is None:
            assert a[key] is None and b[key] is None, key
        else:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def _assert_volume(row: dict, mask_img) -> None:
    """The CSV's volume is the written mask's voxels times the file's own voxel volume."""
    voxels = int((np.asanyarray(mask_img.dataobj) > 0).sum())
    voxel_mm3 = abs(np.linalg.det(mask_img.affine[:3, :3]))
    assert int(row["tumour_voxels"]) == voxels
    assert float(row["volume_ml"]) == pytest.approx(voxels * voxel_mm3 / 1000, abs=1e-3)


# --------------------------------------------------------------------------- geometry and the CSV


@pytest.mark.parametrize(
    "codes, spacing, angle, qs_codes",
    [
        ("LPS", (3.5, 3.4, 4.0), 0.0, (1, 1)),  # BraTS's layout, anisotropic voxels
        ("RAS", (3.3, 3.6, 5.0), 0.0, (2, 1)),  # stored the other way round: axes flipped
        ("LAS", (3.5, 3.5, 4.5), 17.0, (1, 0)),  # oblique, qform only
    ],
)
def test_segment_writes_the_mask_on_the_scans_grid(
    tiny_model_store,  # noqa: F811
    tmp_path,
    capsys,
    codes,
    spacing,
    angle,
    qs_codes,
):
    qform_code, sform_code = qs_codes
    folder = _case(
        tmp_path / "cases",
        "C1",
        codes,
        spacing,
        angle,
        qform_code=qform_code,
        sform_code=sform_code,
    )
    before = tree_hashes(folder)
    out = tmp_path / "out"
    assert _segment([folder], out, tiny_model_store) == 0, capsys.readouterr().err
    mask_file = out / "C1" / "C1_mask.nii.gz"
    written, flair = nib.load(mask_file), nib.load(folder / "C1_flair.nii.gz")
    _assert_same_geometry(written, flair)
    assert written.get_data_dtype() == np.uint8
    assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, 1}
    assert tree_hashes(folder) == before  # nothing written beside the scans

    (row,) = _read_csv(out / "segmentation.csv")
    assert list(row) == list(cli.CSV_COLUMNS)
    assert row["patient"] == "C1" and row["model"] == tiny_model_store
    _assert_volume(row, written)
    z_mm = spacing[int(np.argmax(np.abs(affine_for(codes, spacing, SHAPE)[2, :3])))]
    assert float(row["spacing_mm"].split()[0]) == pytest.approx(z_mm)  # Z first, from the file
    assert 0.0 <= float(row["dice"]) <= 1.0  # the case has a label file
    assert row["missing_sequences"] == "all sequences present"
    assert row["prediction"] == str(mask_file)
    if codes == "RAS":
        assert "axes flipped" in row["notes"]
    if angle:
        assert "oblique by 17 degrees" in row["notes"]

    saved = scan_masks.read_saved_mask(mask_file)
    assert saved.kind == "prediction" and saved.model == tiny_model_store
    assert saved.sidecar["flagged_slices"] == [int(n) - 1 for n in row["flagged_slices"].split()]
    assert saved.mask.shape == cases.read_header(folder).shape


def test_lgg_folders_and_nifti_cases_in_one_call(tiny_model_store, tmp_path, capsys):  # noqa: F811
    """An LGG patient folder, a lone FLAIR file and a folder of case folders: one run, one CSV
    row each in the order given; LGG volume from --spacing, NIfTI from the files."""
    patient = write_lgg_patient(tmp_path / "lgg", "TCGA_XX_0001_20000101", n=6, size=64)
    lone = write_nifti(
        tmp_path / "single" / "P7_flair.nii.gz",
        np.asanyarray(nib.load(_case(tmp_path / "tmp", "P7") / "P7_flair.nii.gz").dataobj),
        affine_for("LPS", (3.5, 3.4, 4.0), SHAPE),
    )
    cases = tmp_path / "cases"
    _case(cases, "B2", spacing=(3.0, 3.0, 5.0))
    _case(cases, "A1", sequences=("FLAIR", "post-contrast"), label=False)
    out = tmp_path / "out"
    argv = [patient, lone, cases]
    assert _segment(argv, out, tiny_model_store, "--spacing", "2.5", "0.5", "0.5") == 0
    rows = _read_csv(out / "segmentation.csv")
    assert [r["patient"] for r in rows] == [patient.name, "P7", "A1", "B2"]
    lgg_row, lone_row, a1, b2 = rows

    corr = lgg_io.read_corrections(out / patient.name)
    assert corr.extra["kind"] == "prediction" and corr.mask.shape == (6, 64, 64)
    assert lgg_row["spacing_mm"] == "2.5 0.5 0.5" and lgg_row["dice"] != ""
    assert float(lgg_row["volume_ml"]) == pytest.approx(
        int(corr.mask.sum()) * 2.5 * 0.25 / 1000, abs=1e-3
    )
    for row, case_id in ((lone_row, "P7"), (a1, "A1"), (b2, "B2")):
        img = nib.load(out / case_id / f"{case_id}_mask.nii.gz")
        _assert_volume(row, img)
    assert lone_row["missing_sequences"] == "pre- and post-contrast missing: using FLAIR only"
    assert a1["missing_sequences"] == "pre-contrast missing: FLAIR stands in for it"
    assert a1["dice"] == "" and lone_row["dice"] == "" and b2["dice"] != ""
    assert b2["spacing_mm"] == "5 3 3"
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_thin_slices_are_resampled_for_the_network_and_said(tiny_model_store, tmp_path):  # noqa: F811
    folder = _case(tmp_path / "cases", "T1", spacing=(3.5, 3.5, 1.0), label=False)
    out = tmp_path / "out"
    assert _segment([folder], out, tiny_model_store) == 0
    (row,) = _read_csv(out / "segmentation.csv")
    assert row["slices"] == str(SHAPE[2])
    assert "30 slices of 1 mm resampled to" in row["notes"] and "every slice" in row["notes"]
    assert nib.load(out / "T1" / "T1_mask.nii.gz").shape == SHAPE


# --------------------------------------------------------------------------- no lost work


def test_nifti_corrections_are_never_replaced(tiny_model_store, tmp_path, capsys):  # noqa: F811
    folder = _case(tmp_path / "cases", "C1")
    out = tmp_path / "out"
    case = cases.read_case(folder)
    scan_masks.save_mask(case, case.label, out / "C1", kind="corrections", reviewed_slices=[3])
    before = tree_hashes(out / "C1")
    assert _segment([folder], out, tiny_model_store) == 0
    err = capsys.readouterr().err
    sibling = out / "C1.prediction-2"
    assert tree_hashes(out / "C1") == before
    assert str(out / "C1") in err and str(sibling) in err and "1 reviewed slice" in err
    assert scan_masks.read_saved_mask(sibling).kind == "prediction"
    (row,) = _read_csv(out / "segmentation.csv")
    assert row["prediction"] == str(sibling / "C1_mask.nii.gz")
    # again: the earlier sibling prediction is replaced, the corrections still untouched
    assert _segment([folder], out, tiny_model_store) == 0
    capsys.readouterr()
    assert tree_hashes(out / "C1") == before
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["C1", "C1.prediction-2"]

    # a mask edited (by another program) after it was saved counts as work too
    first = out / "C1.prediction-2" / "C1_mask.nii.gz"
    later = first.stat().st_mtime + 60
    os.utime(first, (later, later))
    assert _segment([folder], out, tiny_model_store) == 0
    assert "edited after it was saved" in capsys.readouterr().err
    assert (out / "C1.prediction-3" / "C1_mask.nii.gz").is_file()


def test_a_refused_out_folder_does_not_end_the_batch(tiny_model_store, tmp_path, capsys):  # noqa: F811
    cases = tmp_path / "cases"
    _case(cases, "C1")
    _case(cases, "C2")
    out = tmp_path / "out"
    (out / "C1").mkdir(parents=True)
    (out / "C1" / "notes.txt").write_text("not ours to replace")
    assert _segment([cases], out, tiny_model_store) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert any(str(out / "C1") in ln and "notes.txt" in ln for ln in lines), lines
    assert sorted(p.name for p in (out / "C1").iterdir()) == ["notes.txt"]
    assert [r["patient"] for r in _read_csv(out / "segmentation.csv")] == ["C2"]


def test_two_inputs_with_one_case_id_do_not_overwrite_each_other(tiny_model_store, tmp_path):  # noqa: F811
    first = _case(tmp_path / "site-a", "S1")
    second = _case(tmp_path / "site-b", "S1", spacing=(3.0, 3.0, 5.0))
    out = tmp_path / "out"
    assert _segment([first, second], out, tiny_model_store) == 0
    rows = _read_csv(out / "segmentation.csv")
    assert [r["prediction"] for r in rows] == [
        str(out / "S1" / "S1_mask.nii.gz"),
        str(out / "S1.prediction-2" / "S1_mask.nii.gz"),
    ]
    assert scan_masks.read_saved_mask(out / "S1").case.source == first
    assert scan_masks.read_saved_mask(out / "S1.prediction-2").case.source == second


# --------------------------------------------------------------------------- bad input


def _bad_inputs(tmp_path) -> dict[str, tuple[Path, str]]:
    """Inputs that must fail with one line naming the file: (path given, file named, words)."""
    bad = tmp_path / "bad"
    not_nifti = bad / "N1"
    not_nifti.mkdir(parents=True)
    (not_nifti / "N1_flair.nii.gz").write_bytes(b"not a NIfTI file at all" * 20)
    four_d = write_nifti(bad / "four_d_flair.nii.gz", np.zeros((8, 8, 6, 3)), np.eye(4))
    two_d = write_nifti(bad / "flat_flair.nii", np.zeros((8, 8)), np.eye(4))
    no_affine = write_nifti(
        bad / "lost_flair.nii.gz", np.zeros((8, 8, 6)), np.eye(4), qform_code=0, sform_code=0
    )
    label = _case(bad, "L1")
    write_nifti(label / "L1_seg.nii.gz", np.zeros((5, 5, 5)), np.eye(4), dtype=np.uint8)
    return {
        "not NIfTI": (not_nifti, not_nifti / "N1_flair.nii.gz", "not a readable NIfTI"),
        "4-D": (four_d, four_d, "4-D image"),
        "2-D": (two_d, two_d, "2-D image"),
        "no affine": (no_affine, no_affine, "no usable affine"),
        "label of another shape": (label, label / "L1_seg.nii.gz", "label of shape"),
        "missing": (tmp_path / "gone_flair.nii.gz", tmp_path / "gone_flair.nii.gz", "no such"),
    }


@pytest.mark.parametrize(
    "kind", ["not NIfTI", "4-D", "2-D", "no affine", "label of another shape", "missing"]
)
def test_a_bad_file_among_good_ones(kind, tiny_model_store, tmp_path, capsys):  # noqa: F811
    given, named, words = _bad_inputs(tmp_path)[kind]
    good = _case(tmp_path / "cases", "G1")
    patient = write_lgg_patient(tmp_path / "lgg", "TCGA_XX_0001_20000101", n=4, size=64)
    out = tmp_path / "out"
    assert _segment([good, given, patient], out, tiny_model_store) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 2, lines  # the file, then the summary
    assert str(named) in lines[0] and words in lines[0], lines
    assert "1 of 3 case(s) not segmented" in lines[1]
    rows = _read_csv(out / "segmentation.csv")
    assert [r["patient"] for r in rows] == ["G1", patient.name]
    assert (out / "G1" / "G1_mask.nii.gz").is_file()
    written = {p.name for p in out.iterdir()}
    assert written == {"G1", patient.name, "segmentation.csv"}


def test_only_bad_inputs_is_one_line_and_nothing_written(tiny_model_store, tmp_path, capsys):  # noqa: F811
    given, named, _ = _bad_inputs(tmp_path)["4-D"]
    out = tmp_path / "out"
    assert _segment([given], out, tiny_model_store) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert str(named) in lines[0] and len(lines) == 2
    assert not out.exists()
    assert _segment([tmp_path / "bad" / "N1" / "elsewhere"], out, tiny_model_store) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "no such folder" in line


# --------------------------------------------------------------------------- evaluate


def test_evaluate_nifti_and_lgg_cases(tiny_model_store, tmp_path, capsys):  # noqa: F811
    cases = tmp_path / "cases"
    _case(cases, "E1", "RAS")
    _case(cases, "E2", spacing=(3.0, 3.0, 5.0))
    _case(cases, "E3", label=False)
    patient = write_lgg_patient(tmp_path / "lgg", "TCGA_XX_0001_20000101", n=5, size=64)
    table = tmp_path / "dice.csv"
    argv = ["evaluate", "--data", str(cases), str(patient), "--model", tiny_model_store]
    assert cli.main([*argv, "--csv", str(table)]) == 0
    captured = capsys.readouterr()
    rows = _read_csv(table)
    assert [r["patient"] for r in rows] == ["E1", "E2", patient.name]
    assert "skipped (no ground-truth masks or label file): E3" in captured.out

    # the Dice is the one of `lggseg segment`'s mask against the case's own label file
    out = tmp_path / "out"
    assert _segment([cases / "E1"], out, tiny_model_store, "--threshold", "0.5") == 0
    written = np.asanyarray(nib.load(out / "E1" / "E1_mask.nii.gz").dataobj) > 0
    truth = np.asanyarray(nib.load(cases / "E1" / "E1_seg.nii.gz").dataobj) > 0
    from napari_lggseg.metrics import dice

    assert float(rows[0]["dice"]) == pytest.approx(dice(written, truth), abs=1e-4)
    assert int(rows[0]["true_voxels"]) == int(truth.sum())
    assert "axes flipped" in rows[0]["notes"]
    capsys.readouterr()

    # --patients picks cases by id, and a case without a label file is named
    assert cli.main([*argv, "--patients", "E2"]) == 0
    out_text = capsys.readouterr().out
    assert "E2" in out_text and "E1" not in out_text and "over 1 patient" in out_text
    assert cli.main(["evaluate", "--data", str(cases / "E3"), "--model", tiny_model_store]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "E3" in line and "label file" in line


def test_evaluate_goes_on_past_a_bad_case(tiny_model_store, tmp_path, capsys):  # noqa: F811
    cases = tmp_path / "cases"
    _case(cases, "E1")
    bad = cases / "E0"
    bad.mkdir()
    (bad / "E0_flair.nii.gz").write_bytes(b"garbage" * 50)
    argv = ["evaluate", "--data", str(cases), "--model", tiny_model_store]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert str(bad / "E0_flair.nii.gz") in lines[0] and "1 case(s) not scored: E0" in lines[-1]
    assert "E1" in captured.out and "over 1 patient" in captured.out


# --------------------------------------------------------------------------- real BraTS cases


@pytest.mark.slow
def test_real_brats_cases_through_lggseg_segment(tmp_path, capsys):
    if not BRATS_ROOT.is_dir() or len(cases.find_cases(BRATS_ROOT)) < 2:
        pytest.skip(f"real BraTS cases not present at {BRATS_ROOT}")
    out = tmp_path / "out"
    assert _segment([BRATS_ROOT], out, "lgg-fast") == 0, capsys.readouterr().err
    rows = _read_csv(out / "segmentation.csv")
    assert [r["patient"] for r in rows] == [p.name for p in cases.find_cases(BRATS_ROOT)]
    for row in rows:
        case_id = row["patient"]
        flair = nib.load(BRATS_ROOT / case_id / f"{case_id}_flair.nii.gz")
        written = nib.load(out / case_id / f"{case_id}_mask.nii.gz")
        _assert_same_geometry(written, flair)
        _assert_volume(row, written)
        assert row["spacing_mm"] == "1 1 1" and row["slices"] == "155"
        assert float(row["dice"]) > 0.7, row
        truth = np.asanyarray(nib.load(BRATS_ROOT / case_id / f"{case_id}_seg.nii.gz").dataobj)
        from napari_lggseg.metrics import dice

        assert dice(np.asanyarray(written.dataobj), truth) == pytest.approx(
            float(row["dice"]), abs=1e-4
        )  # aligned with the expert label in the file's own voxels
        assert "resampled to" in row["notes"]
        meta = json.loads((out / case_id / f"{case_id}_mask.json").read_text())
        assert meta["kind"] == "prediction" and meta["model"] == "lgg-fast"


def test_a_very_large_volume_is_announced_before_it_is_read(
    tiny_model_store,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    folder = _case(tmp_path / "cases", "C1")
    monkeypatch.setattr(scan_io, "LARGE_VOXELS", 1000)  # this case counts as very large
    assert _segment([folder], tmp_path / "out", tiny_model_store) == 0
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "large volume" in ln]
    assert line.startswith("lggseg: warning: ") and "C1_flair.nii.gz" in line
    assert "LargeScanWarning" not in err and "warnings.warn" not in err


# --------------------------------------------------------------------------- DICOM, same path


def test_a_dicom_study_goes_the_nifti_path(tiny_model_store, tmp_path):  # noqa: F811
    """A DICOM series of the same voxels as a NIfTI FLAIR: same mask, same CSV figures."""
    pytest.importorskip("pydicom")
    from dicom_cases import series_from_nifti

    nifti = _case(tmp_path / "cases", "N1", sequences=("FLAIR",), label=False)
    study = tmp_path / "dicom" / "D1"
    series_from_nifti(nifti / "N1_flair.nii.gz", study / "s1", "AX T2 FLAIR")
    out = tmp_path / "out"
    assert _segment([nifti, study], out, tiny_model_store) == 0
    by_case = {r["patient"]: r for r in _read_csv(out / "segmentation.csv")}
    assert set(by_case) == {"N1", "D1"}
    from_nifti = nib.load(out / "N1" / "N1_mask.nii.gz")
    from_dicom = nib.load(out / "D1" / "D1_mask.nii.gz")
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    np.testing.assert_array_equal(
        np.asanyarray(from_dicom.dataobj), np.asanyarray(from_nifti.dataobj)
    )
    for key in ("slices", "tumour_voxels", "volume_ml", "spacing_mm", "missing_sequences"):
        assert by_case["D1"][key] == by_case["N1"][key], key

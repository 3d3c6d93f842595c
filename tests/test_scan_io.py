"""NIfTI cases: names, discovery, reading, bad input, and masks saved in the scan's own geometry.

Synthetic files are made here with nibabel (tests/nifti_cases.py); the two real BraTS-2018 cases
in ../shared/external/brats18 are used when present.
"""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO_ROOT, tree_hashes
from nifti_cases import affine_for, phantom, world_of, write_case, write_nifti

from napari_lggseg import cases, scan_io, scan_masks
from napari_lggseg.lgg_io import missing_sequences
from napari_lggseg.scan_io import FLAIR_SEQ, LABEL, POST, PRE, T2, ScanFormatError
from napari_lggseg.scan_masks import ScanWriteError, read_saved_mask, save_mask

BRATS_ROOT = (REPO_ROOT / ".." / "shared" / "external" / "brats18").resolve()
SHAPE = (40, 44, 30)


def _case(tmp_path, name="C1", codes="LPS", spacing=(3.5, 3.5, 4.0), **kwargs) -> Path:
    return write_case(tmp_path / "cases" / name, affine_for(codes, spacing, SHAPE), SHAPE, **kwargs)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, sequence",
    [
        ("Brats18_2013_2_1_flair.nii.gz", FLAIR_SEQ),
        ("Brats18_2013_2_1_t1.nii.gz", PRE),
        ("Brats18_2013_2_1_t1ce.nii.gz", POST),
        ("Brats18_2013_2_1_t2.nii.gz", T2),
        ("Brats18_2013_2_1_seg.nii.gz", LABEL),
        ("BraTS-GLI-00000-000-t2f.nii.gz", FLAIR_SEQ),
        ("BraTS-GLI-00000-000-t1n.nii.gz", PRE),
        ("BraTS-GLI-00000-000-t1c.nii.gz", POST),
        ("BraTS-GLI-00000-000-t2w.nii.gz", T2),
        ("BraTS-GLI-00000-000-seg.nii.gz", LABEL),
        ("patient7_FLAIR.nii", FLAIR_SEQ),
        ("T2-FLAIR.nii.gz", FLAIR_SEQ),
        ("sub-01_T1Gd.nii.gz", POST),
        ("T1_post.nii.gz", POST),
        ("t1_pre.NII.GZ", PRE),
        ("tumour_mask.nii.gz", LABEL),
        ("Label.nii", LABEL),
        ("brain.nii.gz", None),
        ("t1.tif", PRE),  # the name's words; whether it is NIfTI is is_nifti_name's job
    ],
)
def test_sequence_names(name, sequence):
    assert scan_io.sequence_of(name) == sequence


def test_find_cases(tmp_path):
    one = _case(tmp_path, "A1")
    _case(tmp_path, "B2")
    root = one.parent
    assert cases.find_cases(root) == [root / "A1", root / "B2"]
    assert cases.find_cases(one) == [one]
    flair = one / "A1_flair.nii.gz"
    assert cases.find_cases(flair) == [flair]
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for path in [tmp_path / "notes.txt", tmp_path / "empty", tmp_path / "missing", "", None, 12]:
        assert cases.find_cases(path) == []
    # saved masks are not cases
    out = save_mask(cases.read_case(one), np.zeros(cases.read_case(one).shape), tmp_path / "o")
    assert scan_io.is_mask_folder(out.parent) and cases.find_cases(out.parent) == []


def test_a_file_of_a_case_opens_the_case_and_a_lone_file_is_the_flair(tmp_path):
    folder = _case(tmp_path)
    assert cases.case_files(folder / "C1_t1ce.nii.gz").files.keys() == {
        FLAIR_SEQ,
        PRE,
        POST,
        T2,
        LABEL,
    }
    whole = cases.case_files(folder / "C1_flair.nii.gz")  # the FLAIR of a case: the case
    assert whole.case_id == "C1" and len(whole.files) == 5
    lone = tmp_path / "downloads" / "scan_42.nii.gz"
    lone.parent.mkdir()
    (folder / "C1_flair.nii.gz").rename(lone)
    found = cases.case_files(lone)
    assert found.files == {FLAIR_SEQ: lone} and found.case_id == "scan_42"
    named = lone.with_name("P7_flair.nii.gz")
    lone.rename(named)
    assert cases.case_files(named).case_id == "P7"
    bare = named.with_name("FLAIR.nii.gz")
    named.rename(bare)
    assert cases.case_files(bare).case_id == "downloads"


# --------------------------------------------------------------------------- reading


def test_read_case_channels_label_spacing(tmp_path):
    folder = _case(tmp_path, codes="RAS", spacing=(3.2, 3.4, 5.0))
    case = cases.read_case(folder, all_sequences=True)
    assert case.case_id == "C1" and case.shape == (30, 44, 40)
    assert case.image.dtype == np.float32 and case.image.shape == (30, 44, 40, 3)
    assert case.spacing == pytest.approx((5.0, 3.4, 3.2))
    assert case.missing_sequences == () and missing_sequences(case.image) == ()
    # channel order is the LGG set's: pre-contrast, FLAIR, post-contrast (lesion levels differ)
    lesion = case.label > 0
    assert case.label.dtype == np.uint8 and set(np.unique(case.label)) == {0, 1}
    means = [case.image[..., c][lesion].mean() for c in range(3)]
    assert means == pytest.approx([250, 700, 900], abs=25)
    assert T2 in case.others and case.others[T2].shape == case.shape
    assert T2 not in cases.read_case(folder).others
    assert case.files[FLAIR_SEQ] == folder / "C1_flair.nii.gz"
    np.testing.assert_allclose(case.affine, nib.load(folder / "C1_flair.nii.gz").affine)


def test_missing_contrast_sequences_are_flair_copies(tmp_path):
    case = cases.read_case(_case(tmp_path, sequences=("FLAIR", "pre-contrast")))
    assert case.missing_sequences == (POST,)
    np.testing.assert_array_equal(case.image[..., 2], case.image[..., 1])
    assert missing_sequences(case.image) == (POST,)  # what inference and the CSV report
    assert any("post-contrast missing" in n for n in case.notes)
    flair_only = cases.read_case(_case(tmp_path, "C2", sequences=("FLAIR",), label=False))
    assert flair_only.missing_sequences == (PRE, POST) and flair_only.label is None


def test_sequences_on_another_grid_are_resampled_onto_the_flair(tmp_path):
    folder = _case(tmp_path, sequences=("FLAIR", "pre-contrast"))
    # a post-contrast scan on its own grid: RAS, 2.5 mm, shifted by 7 mm
    aff = affine_for("RAS", (2.5, 2.5, 2.5), (60, 70, 50))
    aff[:3, 3] += [7.0, 0.0, 0.0]
    value, _ = phantom(world_of(aff, (60, 70, 50)), "post-contrast")
    write_nifti(folder / "C1_t1ce.nii.gz", value, aff, dtype=np.float32)
    case = cases.read_case(folder)
    assert any("resampled onto the FLAIR's grid" in n for n in case.notes)
    truth, _ = phantom(world_of(case.model_affine, case.shape), "post-contrast")
    inside = truth > 0
    assert np.median(np.abs(case.image[..., 2][inside] - truth[inside])) < 30


def test_scl_slope_and_inter_are_applied(tmp_path):
    folder = tmp_path / "S1"
    aff = affine_for("LPS", (3.5, 3.5, 4.0), SHAPE)
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 1000
    folder.mkdir()
    path = folder / "S1_flair.nii"  # uncompressed: the header is patched in place below
    nib.save(nib.Nifti1Image(raw, aff), path)
    with open(path, "r+b") as f:  # nibabel resets the scaling on save: set it in the file
        hdr = nib.Nifti1Header.from_fileobj(f)
        hdr["scl_slope"], hdr["scl_inter"] = 2.0, 10.0
        f.seek(0)
        f.write(hdr.binaryblock)
    assert nib.load(path).dataobj.slope == 2.0  # nibabel moves the scaling onto its proxy
    case = cases.read_case(folder)
    expect = case.orientation.to_model(raw.astype(np.float32) * 2 + 10)
    np.testing.assert_allclose(case.image[..., 1], expect)


def test_singleton_fourth_axis_and_nifti2(tmp_path):
    folder = tmp_path / "F1"
    aff = affine_for("LAS", (3.5, 3.5, 4.0), SHAPE)
    value, lesion = phantom(world_of(aff, SHAPE))
    write_nifti(folder / "F1_flair.nii.gz", value[..., None], aff, nifti2=True)
    write_nifti(folder / "F1_seg.nii.gz", lesion[..., None], aff, dtype=np.uint8)
    case = cases.read_case(folder)
    assert case.shape == (30, 44, 40) and case.label.sum() == lesion.sum()


def test_large_volume_is_announced_before_reading(tmp_path, monkeypatch):
    folder = _case(tmp_path, sequences=("FLAIR",), label=False)
    monkeypatch.setattr(scan_io, "LARGE_VOXELS", 1000)
    read = []
    real = scan_io._read_array
    monkeypatch.setattr(scan_io, "_read_array", lambda *a: read.append(1) or real(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("error", scan_io.LargeScanWarning)  # a caller that stops there
        with pytest.raises(scan_io.LargeScanWarning, match="large volume .* GB of memory"):
            cases.read_case(folder)
    assert not read, "the warning comes before any voxels are read"
    with pytest.warns(scan_io.LargeScanWarning, match="C1_flair.nii.gz: a large volume"):
        case = cases.read_case(folder)
    assert read and any("large volume" in n for n in case.notes)


# --------------------------------------------------------------------------- bad input


def _four_d(folder: Path) -> str:
    flair = folder / "C1_flair.nii.gz"
    img = nib.load(flair)
    data = np.stack([np.asanyarray(img.dataobj)] * 3, -1)
    nib.save(nib.Nifti1Image(data, img.affine), flair)
    return flair.name


def _two_d(folder: Path) -> str:
    flair = folder / "C1_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 44), np.int16), np.eye(4)), flair)
    return flair.name


def _not_nifti(folder: Path) -> str:
    (folder / "C1_flair.nii.gz").write_bytes(gzip.compress(b"this is a text file, not a scan"))
    return "C1_flair.nii.gz"


def _not_gzip(folder: Path) -> str:
    (folder / "C1_t1.nii.gz").write_text("hello")
    return "C1_t1.nii.gz"


def _truncated(folder: Path) -> str:
    path = folder / "C1_t1ce.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return path.name


def _no_affine(folder: Path) -> str:
    flair = folder / "C1_flair.nii.gz"
    img = nib.load(flair)
    hdr = img.header.copy()
    hdr.set_qform(None, code=0)
    hdr.set_sform(None, code=0)
    hdr["pixdim"][1:4] = 0.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, hdr), flair)
    return flair.name


def _other_patient(folder: Path) -> str:
    t1 = folder / "C1_t1.nii.gz"
    img = nib.load(t1)
    aff = img.affine.copy()
    aff[:3, 3] += [0.0, 0.0, 1000.0]  # a metre away
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), aff), t1)
    return t1.name


def _label_shape(folder: Path) -> str:
    seg = folder / "C1_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 44, 29), np.uint8), nib.load(seg).affine), seg)
    return seg.name


def _two_flairs(folder: Path) -> str:
    (folder / "C1_FLAIR_2.nii.gz").write_bytes((folder / "C1_flair.nii.gz").read_bytes())
    return "C1_flair.nii.gz"


def _no_flair(folder: Path) -> str:
    (folder / "C1_flair.nii.gz").unlink()
    return "C1"


BAD_CASES = {
    "4-D": (_four_d, "4-D image"),
    "2-D": (_two_d, "2-D image"),
    "not NIfTI": (_not_nifti, "not a readable NIfTI file"),
    "not gzip": (_not_gzip, "not a readable NIfTI file"),
    "truncated": (_truncated, "cannot read the voxels"),
    "no affine": (_no_affine, "no usable affine"),
    "other patient": (_other_patient, "does not overlap the FLAIR"),
    "label shape": (_label_shape, "label of shape (40, 44, 29)"),
    "two FLAIRs": (_two_flairs, "a second FLAIR file"),
    "no FLAIR": (_no_flair, "no FLAIR scan"),
}


@pytest.mark.parametrize("bad", list(BAD_CASES))
def test_bad_input_one_clear_message_naming_the_file(tmp_path, bad):
    breaker, words = BAD_CASES[bad]
    folder = _case(tmp_path)
    name = breaker(folder)
    before = tree_hashes(tmp_path)
    with pytest.raises(ScanFormatError) as info:
        cases.read_case(folder)
    assert name in str(info.value) and words in str(info.value), str(info.value)
    assert tree_hashes(tmp_path) == before  # nothing written


# --------------------------------------------------------------------------- masks


def _header_geometry(img) -> dict:
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
        "quatern": [float(hdr[k]) for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x")],
        "qfac": float(hdr["pixdim"][0]),
        "pixdim": hdr["pixdim"][1:4],
    }


def _assert_same_geometry(a, b):
    ga, gb = _header_geometry(a), _header_geometry(b)
    for key in ga:
        if ga[key] is None or gb[key] is None:
            assert ga[key] is None and gb[key] is None, key
        else:
            np.testing.assert_array_equal(np.asarray(ga[key]), np.asarray(gb[key]), err_msg=key)


@pytest.mark.parametrize(
    "codes, spacing, angle, qs_codes, nifti2",
    [
        ("LPS", (3.5, 3.5, 4.0), 0.0, (1, 1), False),
        ("RAS", (3.2, 3.3, 5.0), 0.0, (2, 1), False),
        ("LAS", (3.5, 3.5, 4.5), 17.0, (1, 0), False),  # oblique, qform only
        ("PIL", (3.0, 3.5, 6.0), 0.0, (0, 2), False),  # sagittal, sform only
        ("ARI", (3.5, 3.1, 4.0), 5.0, (1, 1), True),
    ],
)
def test_mask_round_trip_keeps_the_scans_geometry(
    tmp_path, codes, spacing, angle, qs_codes, nifti2
):
    folder = write_case(
        tmp_path / "cases" / "R1",
        affine_for(codes, spacing, SHAPE, angle),
        SHAPE,
        qform_code=qs_codes[0],
        sform_code=qs_codes[1],
        nifti2=nifti2,
    )
    case = cases.read_case(folder)
    out = tmp_path / "out" / "R1"
    path = save_mask(case, case.label, out, kind="corrections", reviewed_slices=[3, 4], model="m")
    assert path == out / "R1_mask.nii.gz" and (out / "R1_mask.json").is_file()
    written, flair = nib.load(path), nib.load(folder / "R1_flair.nii.gz")
    assert type(written) is type(flair)
    _assert_same_geometry(written, flair)
    assert written.get_data_dtype() == np.uint8
    truth = np.asanyarray(nib.load(folder / "R1_seg.nii.gz").dataobj) > 0
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), truth.astype(np.uint8))
    saved = read_saved_mask(out)
    np.testing.assert_array_equal(saved.mask, case.label)
    assert saved.kind == "corrections" and saved.reviewed_slices == [3, 4] and saved.model == "m"
    assert saved.case.files == case.files
    meta = json.loads((out / "R1_mask.json").read_text())
    assert meta["source_files"]["FLAIR"] == str((folder / "R1_flair.nii.gz").resolve())


def test_save_mask_refusals(tmp_path):
    folder = _case(tmp_path)
    case = cases.read_case(folder)
    before = tree_hashes(tmp_path)
    with pytest.raises(ScanWriteError, match="holds the scans of C1"):
        save_mask(case, case.label, folder)
    with pytest.raises(ScanWriteError, match="holds scans"):
        save_mask(case, case.label, _with_scan(tmp_path))
    with pytest.raises(ScanFormatError, match="refusing to save a mask of another scan"):
        save_mask(case, case.label[:-1], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    out = tmp_path / "masks"
    save_mask(case, case.label, out, kind="prediction")
    save_mask(case, np.zeros_like(case.label), out, kind="prediction")  # a new prediction: fine
    save_mask(case, case.label, out, kind="corrections")
    stamp = tree_hashes(out)
    with pytest.raises(ScanWriteError, match="a prediction never replaces them"):
        save_mask(case, np.zeros_like(case.label), out, kind="prediction")
    assert tree_hashes(out) == stamp
    save_mask(case, case.label, out, kind="corrections")  # corrections over corrections: fine
    assert {k: v for k, v in tree_hashes(tmp_path).items() if "cases" in k} == {
        k: v for k, v in before.items() if "cases" in k
    }


def _with_scan(tmp_path) -> Path:
    other = tmp_path / "other"
    other.mkdir()
    (other / "x_flair.nii.gz").write_bytes(b"")
    return other


def test_saved_mask_whose_source_moved(tmp_path):
    folder = _case(tmp_path)
    case = cases.read_case(folder)
    save_mask(case, case.label, tmp_path / "out")
    folder.rename(tmp_path / "moved")
    with pytest.raises(ScanFormatError, match="does not exist"):
        read_saved_mask(tmp_path / "out")


# --------------------------------------------------------------------------- real BraTS cases


@pytest.fixture(scope="module")
def brats_cases():
    if not BRATS_ROOT.is_dir():
        pytest.skip(f"real BraTS cases not present at {BRATS_ROOT}")
    return cases.find_cases(BRATS_ROOT)


def test_real_brats_cases_read_segment_save_reopen(brats_cases, tmp_path):
    from napari_lggseg.geometry import segment_case
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.metrics import dice

    assert len(brats_cases) == 2
    segmenter = Segmenter.from_store("lgg-fast", device="cpu")
    for folder in brats_cases:
        case = cases.read_case(folder, all_sequences=True)
        assert set(case.files) == {FLAIR_SEQ, PRE, POST, T2, LABEL}
        assert case.missing_sequences == () and case.shape == (155, 240, 240)
        assert case.spacing == (1.0, 1.0, 1.0) and case.notes == []
        seg = segment_case(segmenter, case)
        assert seg.mask.shape == case.shape
        assert dice(seg.mask, case.label) > 0.7, case.case_id
        path = save_mask(case, seg.mask, tmp_path / case.case_id, model=segmenter.name)
        written = nib.load(path)
        _assert_same_geometry(written, nib.load(case.files[FLAIR_SEQ]))
        # aligned with the expert label in the file's own voxels, as another viewer sees them
        truth = np.asanyarray(nib.load(case.files[LABEL]).dataobj) > 0
        assert dice(np.asanyarray(written.dataobj), truth) == pytest.approx(
            dice(seg.mask, case.label)
        )
        np.testing.assert_array_equal(read_saved_mask(path).mask, seg.mask)
    assert (
        scan_masks.MASK_FORMAT
        in (tmp_path / case.case_id / f"{case.case_id}_mask.json").read_text()
    )

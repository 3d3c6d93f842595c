"""DICOM series: read to the same arrays and affine as the NIfTI of the same voxels, series told
apart by their names or a mapping, masks saved as NIfTI on the series' grid, bad input refused
with one message naming the folder. Every series is written by pydicom in the test."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO_ROOT, tree_hashes
from nifti_cases import affine_for, phantom, world_of, write_nifti

from napari_lggseg import cases, dicom_io
from napari_lggseg.scan_io import FLAIR_SEQ, POST, PRE, T2, ScanFormatError
from napari_lggseg.scan_masks import save_mask

pydicom = pytest.importorskip("pydicom")
from dicom_cases import INTERCEPT, SLOPE, STUDY, ds_number, write_series  # noqa: E402
from pydicom.uid import JPEGLSLossless, generate_uid  # noqa: E402

SHAPE = (36, 40, 24)  # (columns, rows, slices) of the file's voxels


def _volume(affine, sequence="FLAIR", shape=SHAPE) -> np.ndarray:
    """The phantom on a grid, rounded to what the DICOM stores (slope 2, intercept -100)."""
    value, _ = phantom(world_of(affine, shape), sequence)
    return np.rint((value - INTERCEPT) / SLOPE) * SLOPE + INTERCEPT


def _nifti_twin(tmp_path, volume, affine, name="flair") -> Path:
    return write_nifti(tmp_path / "nifti" / f"C_{name}.nii.gz", volume, affine, dtype=np.float32)


# oblique: rotated about the foot-head axis and then tipped about left-right, as an
# oblique axial acquisition; "RAS" and "ASL" put the slices against the normal / sagittal
_TIP = np.radians(12.0)
_TIPPED = np.array(
    [
        [1, 0, 0, 0],
        [0, np.cos(_TIP), -np.sin(_TIP), 0],
        [0, np.sin(_TIP), np.cos(_TIP), 0],
        [0] * 3 + [1],
    ]
)
GRIDS = {
    "LPS axial": affine_for("LPS", (0.9, 0.9, 5.0), SHAPE),
    "RAS axial": affine_for("RAS", (1.1, 1.0, 4.0), SHAPE),
    "LPI (slices against the normal)": affine_for("LPI", (1.0, 1.0, 3.0), SHAPE),
    "ASL sagittal": affine_for("ASL", (1.0, 1.2, 2.5), SHAPE),
    "oblique": _TIPPED @ affine_for("LPS", (0.8, 1.1, 4.5), SHAPE, angle=20.0),
}


def _sorted_along_normal(affine) -> np.ndarray:
    """The affine with its slice axis reversed when the slices go against the DICOM normal
    (row x column direction, in LPS), as the DICOM files get sorted."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    if np.cross(lps[:3, 0], lps[:3, 1]) @ lps[:3, 2] > 0:
        return affine
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    flip[2, 3] = SHAPE[2] - 1
    return affine @ flip


@pytest.mark.parametrize("grid", GRIDS)
def test_series_reads_as_the_nifti_of_the_same_voxels(tmp_path, grid):
    affine = GRIDS[grid]
    volume = _volume(affine)
    folder = write_series(tmp_path / "dicom" / "P1", volume, affine, "AX T2 FLAIR")
    from_nifti = cases.read_case(_nifti_twin(tmp_path, volume, affine))
    from_dicom = dicom_io.read_dicom_case(folder)
    assert np.allclose(from_dicom.affine, _sorted_along_normal(affine), atol=1e-4)
    assert np.allclose(from_dicom.model_affine, from_nifti.model_affine, atol=1e-4)
    assert from_dicom.shape == from_nifti.shape and from_dicom.spacing == pytest.approx(
        from_nifti.spacing, abs=1e-5
    )
    assert np.array_equal(from_dicom.image, from_nifti.image)  # slope/intercept applied
    stored = max(pydicom.dcmread(f).pixel_array.max() for f in folder.iterdir())
    assert from_dicom.image.max() == stored * SLOPE + INTERCEPT  # not the stored values
    assert from_dicom.case_id == "P1" and from_dicom.missing_sequences == (PRE, POST)


def _multi_series_case(tmp_path, flair_name="AX T2 FLAIR") -> tuple[Path, dict]:
    """A study of four series plus a localizer; T1s on another (coarser, rotated) grid."""
    flair_aff = GRIDS["LPS axial"]
    t1_aff = affine_for("RAS", (1.5, 1.5, 6.0), (30, 30, 20), angle=8.0)
    root = tmp_path / "dicom" / "P7"
    volumes = {
        FLAIR_SEQ: (_volume(flair_aff), flair_aff),
        PRE: (_volume(t1_aff, PRE, (30, 30, 20)), t1_aff),
        POST: (_volume(t1_aff, POST, (30, 30, 20)), t1_aff),
        T2: (_volume(flair_aff, T2), flair_aff),
    }
    write_series(root / "s3", *volumes[FLAIR_SEQ], flair_name, number=3)
    write_series(root / "s5", *volumes[PRE], "t1_mprage_sag", number=5)
    write_series(root / "s6", *volumes[POST], "t1_mprage_sag", number=6, contrast="Gadovist")
    write_series(root / "s2", *volumes[T2], "T2_TSE_tra", number=2)
    loc = affine_for("LPS", (2.0, 2.0, 10.0), (20, 20, 3))
    write_series(root / "s1", _volume(loc, shape=(20, 20, 3)), loc, "Localizer", number=1)
    return root, volumes


def test_a_study_gives_one_sequence_per_series_resampled_like_nifti(tmp_path):
    root, volumes = _multi_series_case(tmp_path)
    nifti = tmp_path / "nifti" / "P7"
    names = {FLAIR_SEQ: "flair", PRE: "t1", POST: "t1ce", T2: "t2"}
    for seq, (vol, aff) in volumes.items():
        write_nifti(nifti / f"P7_{names[seq]}.nii.gz", vol, aff, dtype=np.float32)
    from_nifti = cases.read_case(nifti, all_sequences=True)
    case = dicom_io.read_dicom_case(root, all_sequences=True)
    assert case.case_id == "P7" and case.missing_sequences == ()
    assert np.allclose(case.model_affine, from_nifti.model_affine, atol=1e-4)
    assert np.allclose(case.image, from_nifti.image, atol=1e-2)
    assert np.allclose(case.others[T2], from_nifti.others[T2], atol=1e-2)
    assert list(case.files) == [FLAIR_SEQ, PRE, POST, T2]
    assert case.files[FLAIR_SEQ].parent == root / "s3"
    text = "; ".join(case.notes)
    assert "resampled onto the FLAIR's grid" in text and "Localizer" in text


@pytest.mark.parametrize(
    "description, agent, sequence",
    [
        ("T2_FLAIR", "", FLAIR_SEQ),
        ("AX T2 FLAIR FS", "", FLAIR_SEQ),
        ("t2_tirm_tra_dark-fluid", "", FLAIR_SEQ),
        ("t1_mprage", "", PRE),
        ("AX T1 SE", "", PRE),
        ("T1 POST GD", "", POST),
        ("AX T1 +C", "", POST),
        ("t1_mprage_sag", "Gadovist", POST),
        ("T2_TSE_tra", "", T2),
        ("Localizer", "", None),
        ("ep2d_diff ADC", "", None),
        ("", "", None),
    ],
)
def test_series_names(description, agent, sequence):
    assert dicom_io.sequence_of_series(description, agent) == sequence


def test_the_person_maps_series_when_names_do_not_tell(tmp_path):
    root, _ = _multi_series_case(tmp_path, flair_name="sequence 3 (site protocol)")
    with pytest.raises(dicom_io.DicomError) as err:
        dicom_io.read_dicom_case(root)
    assert (
        str(root) in str(err.value) and "FLAIR" in str(err.value) and "mapping=" in str(err.value)
    )
    by_number = dicom_io.read_dicom_case(root, mapping={"flair": "3"})
    by_text = dicom_io.read_dicom_case(root, mapping={"FLAIR": "Sequence 3 (site protocol)"})
    assert by_number.files[FLAIR_SEQ].parent == by_text.files[FLAIR_SEQ].parent == root / "s3"
    # the same description twice: a description is ambiguous, the series number or uid is not
    with pytest.raises(dicom_io.DicomError, match="2 series match"):
        dicom_io.read_dicom_case(root, mapping={"flair": "3", "pre": "t1_mprage_sag"})
    swapped = dicom_io.read_dicom_case(root, mapping={"flair": "3", "pre": "6", "post": "5"})
    assert swapped.files[PRE].parent == root / "s6"
    # the files a case was read from map it again (how a saved mask reopens its case)
    again = dicom_io.read_dicom_case(root, mapping=dict(swapped.files))
    assert again.files == swapped.files and np.array_equal(again.image, swapped.image)


def test_mask_saved_for_a_dicom_case_reopens_aligned(tmp_path):
    affine = GRIDS["oblique"]
    volume = _volume(affine)
    folder = write_series(tmp_path / "dicom" / "P2", volume, affine, "T2_FLAIR")
    case = dicom_io.read_dicom_case(folder)
    header = dicom_io.read_dicom_header(folder)
    assert np.array_equal(header.model_affine, case.model_affine) and header.shape == case.shape
    mask = np.zeros(case.shape, np.uint8)
    mask[5:9, 10:20, 3:12] = 1
    out = tmp_path / "masks"
    mask_file = save_mask(header, mask, out, kind="corrections", reviewed_slices=[6])
    img = nib.load(mask_file)
    assert img.shape == SHAPE and np.allclose(img.affine, affine, atol=1e-4)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert np.array_equal(case.orientation.to_model(np.asarray(img.dataobj)), mask)
    # the NIfTI of the same voxels lies on the same grid: the mask overlays it too
    assert np.allclose(cases.read_case(_nifti_twin(tmp_path, volume, affine)).affine, img.affine)
    assert not any(p.suffix == ".gz" for p in folder.iterdir())  # nothing written into the series


def _drop(index):
    return lambda k, ds: None if k == index else ds


def _move(index, by):
    def edit(k, ds):
        if k == index:
            ds.ImagePositionPatient = [
                ds_number(v + by * (i == 2)) for i, v in enumerate(ds.ImagePositionPatient)
            ]
        return ds

    return edit


def _without(tag, index=None):
    def edit(k, ds):
        if index is None or k == index:
            delattr(ds, tag)
        return ds

    return edit


BAD = {
    "no FLAIR": (dict(description="AX T1"), "no series here says it is a FLAIR"),
    "missing slice": (dict(edit=_drop(10)), "slice(s) missing"),
    "uneven slices": (dict(edit=_move(10, 1.5)), "unevenly spaced slices"),
    "no position": (
        dict(edit=_without("ImagePositionPatient", 4)),
        "no usable ImagePositionPatient",
    ),
    "no orientation": (dict(edit=_without("ImageOrientationPatient")), "ImageOrientationPatient"),
    "repeated position": (dict(edit=_move(10, -5.0)), "several images at one slice position"),
    "compressed": (dict(transfer_syntax=JPEGLSLossless), "pip install python-gdcm"),
}


@pytest.mark.parametrize("bad", BAD)
def test_bad_series_one_clear_message_naming_the_folder_nothing_written(tmp_path, bad):
    kwargs, expected = BAD[bad]
    if bad == "compressed":
        from pydicom.pixels import get_decoder

        if get_decoder(JPEGLSLossless).is_available:
            pytest.skip("a JPEG-LS decoder is installed here")
    affine = GRIDS["LPS axial"]
    folder = write_series(
        tmp_path / "P3", _volume(affine), affine, kwargs.pop("description", "FLAIR"), **kwargs
    )
    before = tree_hashes(tmp_path)
    with pytest.raises(ScanFormatError) as err:
        dicom_io.read_dicom_case(folder)
    message = str(err.value)
    assert str(folder) in message and expected in message, message
    assert "\n" not in message and tree_hashes(tmp_path) == before


def test_a_single_2d_image_and_a_folder_without_dicom(tmp_path):
    affine = affine_for("LPS", (1.0, 1.0, 5.0), (20, 20, 1))
    folder = write_series(tmp_path / "one", _volume(affine, shape=(20, 20, 1)), affine, "FLAIR")
    with pytest.raises(ScanFormatError, match="a single 2-D image") as err:
        dicom_io.read_dicom_case(folder / next(folder.iterdir()).name)  # a file opens its folder
    assert str(folder) in str(err.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no scans")
    with pytest.raises(ScanFormatError, match="no DICOM files"):
        dicom_io.read_dicom_case(tmp_path / "empty")


def test_without_pydicom_the_message_names_the_extra(tmp_path, monkeypatch):
    affine = GRIDS["LPS axial"]
    folder = write_series(tmp_path / "P4", _volume(affine), affine, "FLAIR")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    assert dicom_io.is_dicom_folder(folder)  # claiming needs no pydicom
    with pytest.raises(dicom_io.DicomSupportMissing) as err:
        dicom_io.read_dicom_case(folder)
    assert str(folder) in str(err.value) and 'pip install "napari-lggseg[dicom]"' in str(err.value)


def test_is_dicom_folder_and_find_cases(tmp_path):
    affine = GRIDS["LPS axial"]
    volume = _volume(affine)
    root = tmp_path / "root"
    write_series(root / "A" / "flair", volume, affine, "FLAIR", study=generate_uid())
    write_series(root / "A" / "t1", volume, affine, "T1", study=STUDY + ".1")
    write_series(root / "B" / "flair", volume, affine, "FLAIR", study=generate_uid())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.dcm").write_bytes(b"not dicom")
    nifti = _nifti_twin(tmp_path, volume, affine)
    assert dicom_io.is_dicom_folder(root) and dicom_io.is_dicom_folder(root / "B" / "flair")
    assert not dicom_io.is_dicom_folder(tmp_path / "other")
    assert not dicom_io.is_dicom_folder(nifti.parent) and not dicom_io.is_dicom_folder(nifti)
    assert not dicom_io.is_dicom_folder(tmp_path / "absent") and not dicom_io.is_dicom_folder(None)
    one_file = next((root / "B" / "flair").iterdir())
    assert dicom_io.find_dicom_cases(one_file) == [root / "B" / "flair"]
    assert dicom_io.find_dicom_cases(root / "B") == [root / "B"]  # one study: one case
    assert dicom_io.find_dicom_cases(root) == [root / "A", root / "B"]  # several studies
    assert dicom_io.find_dicom_cases(tmp_path / "other") == []


BRATS_CASE = (REPO_ROOT / ".." / "shared" / "external" / "brats18" / "Brats18_2013_2_1").resolve()


@pytest.mark.slow
def test_real_brats_case_as_dicom_segments_and_saves_like_its_nifti(tmp_path):
    """A real BraTS case written as DICOM series (temporary, the same voxels): the same arrays,
    affine and segmentation as through NIfTI, and its mask on the expert label's voxels."""
    from dicom_cases import series_from_nifti

    from napari_lggseg.geometry import segment_case
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.metrics import dice

    if not BRATS_CASE.is_dir():
        pytest.skip(f"real BraTS case not present at {BRATS_CASE}")
    cid = BRATS_CASE.name
    study, root = generate_uid(), tmp_path / cid
    for n, (suffix, description) in enumerate(
        [("flair", "AX T2 FLAIR"), ("t1", "T1 SE AX"), ("t1ce", "T1 SE AX POST GD")], start=2
    ):
        series_from_nifti(
            BRATS_CASE / f"{cid}_{suffix}.nii.gz", root / suffix, description, number=n, study=study
        )
    case = dicom_io.read_dicom_case(root)
    nifti = cases.read_case(BRATS_CASE)
    assert case.case_id == cid and case.shape == nifti.shape == (155, 240, 240)
    assert np.allclose(case.model_affine, nifti.model_affine, atol=1e-4)
    assert np.array_equal(case.image, nifti.image) and case.missing_sequences == ()
    segmenter = Segmenter.from_store("lgg-fast", device="cpu")
    seg = segment_case(segmenter, case)
    assert np.array_equal(seg.mask, segment_case(segmenter, nifti).mask)
    assert dice(seg.mask, nifti.label) > 0.7
    mask_file = save_mask(case, seg.mask, tmp_path / "out", model=segmenter.name)
    written = nib.load(mask_file)
    flair = nib.load(BRATS_CASE / f"{cid}_flair.nii.gz")
    assert written.shape == flair.shape and np.allclose(written.affine, flair.affine, atol=1e-4)
    truth = np.asanyarray(nib.load(BRATS_CASE / f"{cid}_seg.nii.gz").dataobj) > 0
    assert dice(np.asanyarray(written.dataobj), truth) == pytest.approx(dice(seg.mask, nifti.label))


# --------------------------------------------------------------------------- through cases


def test_the_reader_opens_a_dicom_study_and_a_file_of_it(tmp_path):
    from napari_lggseg._reader import get_reader

    root, _ = _multi_series_case(tmp_path)
    layers = get_reader(str(root))()
    names = [kwargs["name"] for _, kwargs, _ in layers]
    assert names == ["P7 pre-contrast", "P7 post-contrast", "P7 T2", "P7 FLAIR"]
    flair = layers[-1]
    assert flair[0].shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert flair[1]["scale"] == pytest.approx((5.0, 0.9, 0.9))
    one_file = sorted((root / "s5").iterdir())[0]
    assert [k["name"] for _, k, _ in get_reader(str(one_file))()] == names
    assert cases.case_files(root).files[FLAIR_SEQ].parent == root / "s3"


def test_find_cases_and_read_header_route_dicom(tmp_path):
    affine = GRIDS["LPS axial"]
    volume = _volume(affine)
    root = tmp_path / "root"
    write_series(root / "A" / "flair", volume, affine, "FLAIR", study=generate_uid())
    write_series(root / "B" / "flair", volume, affine, "FLAIR", study=generate_uid())
    assert cases.find_cases(root) == [root / "A", root / "B"]
    header = cases.read_header(root / "A")
    assert header.case_id == "A" and np.allclose(header.affine, affine, atol=1e-4)


def test_saved_mask_reopens_on_the_series_it_was_saved_on(tmp_path):
    from napari_lggseg.scan_masks import ScanWriteError, read_saved_mask

    root, _ = _multi_series_case(tmp_path)
    case = dicom_io.read_dicom_case(root, mapping={"flair": "3", "pre": "6", "post": "5"})
    mask = np.zeros(case.shape, np.uint8)
    mask[10:14, 5:25, 8:30] = 1
    for refused in (root, root / "s3"):  # the study and a series folder hold the scans
        with pytest.raises(ScanWriteError, match="holds"):
            save_mask(case, mask, refused)
    path = save_mask(case, mask, tmp_path / "masks", kind="corrections")
    saved = read_saved_mask(path)
    assert np.array_equal(saved.mask, mask) and saved.case.files == case.files
    assert np.array_equal(saved.case.image, case.image)  # the person's mapping, not the names'


def test_the_napari_writer_saves_a_dicom_layer_and_the_reader_reopens_it(tmp_path):
    from napari_lggseg._reader import get_reader
    from napari_lggseg._writer import write_labels
    from napari_lggseg.layer_meta import META_KEY, Role

    root, _ = _multi_series_case(tmp_path)
    flair = get_reader(str(root))()[-1]
    mask = np.zeros(flair[0].shape, np.uint8)
    mask[8:12, 10:20, 5:15] = 1
    lgg = dict(flair[1]["metadata"][META_KEY], role=str(Role.CORRECTIONS), reviewed_slices=[9])
    meta = {"name": "P7 corrections", "metadata": {META_KEY: lgg}}
    written = write_labels(str(tmp_path / "saved"), mask, meta)
    assert any(p.endswith("P7_mask.nii.gz") for p in written)
    reopened = get_reader(str(tmp_path / "saved"))()
    labels = [layer for layer in reopened if layer[2] == "labels"]
    assert labels and np.array_equal(labels[-1][0], mask)

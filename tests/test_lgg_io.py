"""lgg_io without a viewer: slice order, compression, corrections round trip, and bad inputs that
must fail with a message naming the file while leaving every existing file as it was."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import BAD_PATIENTS, PATIENT_ID, tree_hashes

from napari_lggseg import lgg_io
from napari_lggseg.lgg_io import (
    SIDECAR,
    LGGFormatError,
    LGGWriteError,
    find_patient,
    is_corrections_folder,
    is_patient_folder,
    is_patient_root,
    list_patients,
    missing_sequences,
    read_corrections,
    read_patient,
    write_corrections,
)


def _tifffile_volume(folder: Path, pid: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    image = np.stack([tifffile.imread(folder / f"{pid}_{i}.tif") for i in range(1, n + 1)])
    mask_files = [folder / f"{pid}_{i}_mask.tif" for i in range(1, n + 1)]
    mask = (
        np.stack([tifffile.imread(p) for p in mask_files]) > 0 if mask_files[0].exists() else None
    )
    return image, mask


# --------------------------------------------------------------------------- reading


def test_slice_order_is_numeric_and_matches_tifffile(make_lgg_patient):
    folder = make_lgg_patient(n=12)
    files = find_patient(folder)
    assert files.slice_numbers == tuple(range(1, 13))
    assert [p.name for p in files.image_files][:3] == [
        f"{PATIENT_ID}_1.tif",
        f"{PATIENT_ID}_2.tif",
        f"{PATIENT_ID}_3.tif",
    ]
    patient = read_patient(folder)
    image, mask = _tifffile_volume(folder, PATIENT_ID, 12)
    assert patient.image.shape == (12, 32, 32, 3) and patient.image.dtype == np.uint8
    np.testing.assert_array_equal(patient.image, image)
    assert list(patient.image[:, 0, 0, 0]) == list(
        range(1, 13)
    )  # the number written into each slice
    assert patient.mask.dtype == np.uint8 and set(np.unique(patient.mask)) == {0, 1}
    np.testing.assert_array_equal(patient.mask, mask)
    assert patient.slice_files == tuple(f"{PATIENT_ID}_{i}.tif" for i in range(1, 13))


def test_patient_without_masks(make_lgg_patient):
    patient = read_patient(make_lgg_patient(masks=False, n=3))
    assert patient.mask is None and patient.image.shape[0] == 3


def test_discovery(make_lgg_patient, tmp_path):
    a = make_lgg_patient(name="TCGA_AA_0001_20000101", n=2)
    b = make_lgg_patient(name="TCGA_BB_0002_20000101", n=2)
    (tmp_path / "data" / "notes").mkdir()
    assert list_patients(tmp_path / "data") == [a, b]
    assert is_patient_folder(a) and not is_patient_folder(tmp_path / "data")
    assert is_patient_root(tmp_path / "data") and not is_patient_root(a)
    assert not is_patient_folder(tmp_path / "does-not-exist")
    assert not is_corrections_folder(a)


@pytest.mark.parametrize(
    "tiff_kwargs",
    [{"compression": "zlib"}, {"compression": "zlib", "predictor": True}],
    ids=["zlib", "zlib+predictor"],
)
def test_compressed_and_uncompressed_read_the_same(make_lgg_patient, tmp_path, tiff_kwargs):
    plain = make_lgg_patient(root=tmp_path / "plain", n=4)
    other = make_lgg_patient(root=tmp_path / "other", n=4, tiff_kwargs=tiff_kwargs)
    with tifffile.TiffFile(other / f"{PATIENT_ID}_1.tif") as tf:
        assert tf.pages[0].compression != 1
    a, b = read_patient(plain), read_patient(other)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_real_patient_matches_tifffile(real_patient):
    pid = real_patient.name
    patient = read_patient(real_patient)
    n = patient.image.shape[0]
    image, mask = _tifffile_volume(real_patient, pid, n)
    assert patient.image.shape == (n, 256, 256, 3)
    np.testing.assert_array_equal(patient.image, image)
    np.testing.assert_array_equal(patient.mask, mask)
    assert patient.mask.any(), "every patient in the training part has some tumour"
    assert patient.institution == pid.split("_")[1]


def test_real_compressed_reads_like_uncompressed_copy(real_patient, tmp_path):
    """The shared copies are zlib+predictor; the originals were uncompressed. Both read the same."""
    pid = real_patient.name
    with tifffile.TiffFile(real_patient / f"{pid}_1.tif") as tf:
        compression = tf.pages[0].compression
    copy = tmp_path / pid
    copy.mkdir()
    for p in real_patient.iterdir():
        if p.suffix == ".tif":
            tifffile.imwrite(
                copy / p.name,
                tifffile.imread(p),
                photometric="rgb" if not p.stem.endswith("_mask") else None,
            )
    with tifffile.TiffFile(copy / f"{pid}_1.tif") as tf:
        assert tf.pages[0].compression == 1  # NONE
    a, b = read_patient(real_patient), read_patient(copy)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert compression is not None


def test_missing_sequences():
    img = np.random.default_rng(0).integers(1, 255, (2, 8, 8, 3), dtype=np.uint8)
    assert missing_sequences(img) == ()
    img2 = img.copy()
    img2[..., 0] = img2[..., 1]
    assert missing_sequences(img2) == ("pre-contrast",)
    img2[..., 2] = 0
    assert missing_sequences(img2) == ("pre-contrast", "post-contrast")


# --------------------------------------------------------------------------- corrections


def test_corrections_round_trip_exact(make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=6)
    rng = np.random.default_rng(1)
    mask = (rng.random((6, 32, 32)) > 0.7).astype(np.uint8)
    out = tmp_path / "corrections" / PATIENT_ID
    sidecar = write_corrections(
        out,
        mask,
        PATIENT_ID,
        folder,
        reviewed_slices=[4, 1, 1],
        model="unit-test",
        whole_volume_reviewed=True,
        extra={"note": "round trip"},
    )
    assert sidecar == out / SIDECAR and is_corrections_folder(out)
    # the files are plain dataset-style masks: 0/255 uint8, one per slice, named like the images
    for i in range(1, 7):
        np.testing.assert_array_equal(
            tifffile.imread(out / f"{PATIENT_ID}_{i}_mask.tif"), mask[i - 1] * 255
        )
    corr = read_corrections(out)
    np.testing.assert_array_equal(corr.mask, mask)
    assert corr.mask.dtype == np.uint8
    assert corr.patient_id == PATIENT_ID
    assert corr.source_folder == folder.resolve()
    assert corr.reviewed_slices == [1, 4]
    assert corr.model == "unit-test" and corr.whole_volume_reviewed
    assert corr.extra == {"note": "round trip"}
    assert json.loads(sidecar.read_text())["reviewed_slice_files"] == [
        f"{PATIENT_ID}_2.tif",
        f"{PATIENT_ID}_5.tif",
    ]
    # saving again over the same patient's corrections replaces them whole
    write_corrections(out, 1 - mask, PATIENT_ID, folder)
    np.testing.assert_array_equal(read_corrections(out).mask, 1 - mask)
    assert sorted(p.name for p in out.parent.iterdir()) == [PATIENT_ID]  # no staging leftovers


def test_refuses_mask_of_another_shape(make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=6)
    before = tree_hashes(tmp_path)
    with pytest.raises(LGGFormatError, match="refusing to save a mask of another patient"):
        write_corrections(tmp_path / "out", np.zeros((5, 32, 32), np.uint8), PATIENT_ID, folder)
    assert tree_hashes(tmp_path) == before and not (tmp_path / "out").exists()


def test_refuses_to_write_into_an_image_folder(make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=3)
    other = make_lgg_patient(name="TCGA_YY_0002_20000101", n=3)
    mask = np.zeros((3, 32, 32), np.uint8)
    before = tree_hashes(tmp_path)
    for target in (folder, other):
        with pytest.raises(LGGWriteError, match="holds patient images") as info:
            write_corrections(target, mask, PATIENT_ID, folder)
        assert str(target) in str(info.value)
    assert tree_hashes(tmp_path) == before


def test_refuses_folder_with_other_files_or_other_patient(make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=3)
    other = make_lgg_patient(name="TCGA_YY_0002_20000101", n=3)
    mask = np.ones((3, 32, 32), np.uint8)
    docs = tmp_path / "documents"
    docs.mkdir()
    (docs / "thesis.txt").write_text("precious")
    theirs = tmp_path / "theirs"
    write_corrections(theirs, mask, "TCGA_YY_0002_20000101", other)
    before = tree_hashes(tmp_path)
    with pytest.raises(LGGWriteError, match="already holds other files"):
        write_corrections(docs, mask, PATIENT_ID, folder)
    with pytest.raises(LGGWriteError, match="corrections of TCGA_YY_0002_20000101"):
        write_corrections(theirs, mask, PATIENT_ID, folder)
    assert tree_hashes(tmp_path) == before


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("case", list(BAD_PATIENTS))
def test_bad_patient_names_the_file_and_changes_nothing(make_lgg_patient, tmp_path, case):
    breaker, words = BAD_PATIENTS[case]
    folder = make_lgg_patient(n=8)
    bad_name = breaker(folder)
    before = tree_hashes(tmp_path)
    with pytest.raises(LGGFormatError) as info:
        read_patient(folder)
    message = str(info.value)
    assert bad_name in message, message
    assert words in message, message
    assert tree_hashes(tmp_path) == before


def test_output_whose_parent_is_a_file(make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=3)
    (tmp_path / "not-a-folder").write_text("x")
    out = tmp_path / "not-a-folder" / "corrections"
    before = tree_hashes(tmp_path)
    with pytest.raises(LGGWriteError) as info:
        write_corrections(out, np.zeros((3, 32, 32), np.uint8), PATIENT_ID, folder)
    assert str(out) in str(info.value) and "cannot write corrections" in str(info.value)
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("existing", [False, True])
def test_failed_rename_leaves_everything_as_it_was(
    make_lgg_patient, tmp_path, monkeypatch, existing
):
    """The disk refuses the final rename (full, read-only, ...): no half-written corrections, the
    earlier corrections (if any) intact, no staging folders left behind."""
    folder = make_lgg_patient(n=4)
    out = tmp_path / "corrections"
    if existing:
        write_corrections(out, np.ones((4, 32, 32), np.uint8), PATIENT_ID, folder, model="first")
    before = tree_hashes(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.startswith(".corrections.tmp-") and not Path(src).name.endswith("-old"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(lgg_io.os, "replace", failing_replace)
    with pytest.raises(LGGWriteError, match="No space left on device") as info:
        write_corrections(out, np.zeros((4, 32, 32), np.uint8), PATIENT_ID, folder, model="second")
    assert str(out) in str(info.value)
    assert tree_hashes(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    if existing:
        assert read_corrections(out).model == "first"


def test_sidecar_pointing_at_missing_folder(make_lgg_patient, tmp_path):
    folder = make_lgg_patient(n=3)
    out = tmp_path / "corrections"
    write_corrections(out, np.zeros((3, 32, 32), np.uint8), PATIENT_ID, folder)
    shutil.rmtree(folder)
    before = tree_hashes(tmp_path)
    with pytest.raises(LGGFormatError) as info:
        read_corrections(out)
    assert SIDECAR in str(info.value) and "does not exist" in str(info.value)
    assert tree_hashes(tmp_path) == before


def test_sidecar_that_is_not_json(tmp_path):
    out = tmp_path / "corrections"
    out.mkdir()
    (out / SIDECAR).write_text("{not json")
    with pytest.raises(LGGFormatError, match="cannot read the sidecar") as info:
        read_corrections(out)
    assert str(out / SIDECAR) in str(info.value)


def test_saved_work_tells_a_prediction_from_a_persons_corrections(make_lgg_patient, tmp_path):
    """What `lggseg segment` may replace (an unreviewed, unedited prediction) and what it must not."""
    folder = make_lgg_patient(n=4)
    mask = np.zeros((4, 32, 32), np.uint8)

    def saved(name, **kwargs):
        write_corrections(tmp_path / name, mask, PATIENT_ID, folder, **kwargs)
        return tmp_path / name

    prediction = saved("prediction", extra={"kind": "prediction"})
    assert lgg_io.saved_work(prediction) is None
    assert lgg_io.saved_work(tmp_path / "nothing-here") is None
    assert "2 reviewed slices" in lgg_io.saved_work(
        saved("reviewed", reviewed_slices=[0, 3], extra={"kind": "prediction"})
    )
    assert "whole volume" in lgg_io.saved_work(saved("whole", whole_volume_reviewed=True))
    assert lgg_io.saved_work(saved("from-napari")) == "saved corrections"  # no kind: a person's
    later = (prediction / SIDECAR).stat().st_mtime + 60
    os.utime(prediction / f"{PATIENT_ID}_2_mask.tif", (later, later))  # edited in another tool
    assert "edited" in lgg_io.saved_work(prediction)
    (prediction / SIDECAR).write_text("{cut")
    assert "cannot be read" in lgg_io.saved_work(prediction)

"""``lggseg features``: one CSV row of shape features per patient, joined with data.csv."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from conftest import tree_hashes, write_lgg_patient

from napari_lggseg import cli, lgg_io, shape

STUDY_COLUMNS = [
    "patient",
    "volume_ml",
    "bounding_ellipsoid_volume_ratio",
    "angular_sd",
    "margin_fluctuation",
]


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def write_masks(folder, mask):
    pid = folder.name
    for i, m in enumerate(mask, 1):
        tifffile.imwrite(folder / f"{pid}_{i}_mask.tif", (m > 0).astype(np.uint8) * 255)


def ball(n=12, size=32, r=5.0):
    zz, yy, xx = (
        np.indices((n, size, size)) - np.array([n / 2, size / 2, size / 2])[:, None, None, None]
    )
    return (zz**2 + yy**2 + xx**2) <= r**2


@pytest.fixture
def root(tmp_path):
    """Three patients with date-suffixed folder names and a data.csv keyed without the date:
    a ball, the default synthetic tumour and an empty mask."""
    root = tmp_path / "kaggle"
    write_masks(write_lgg_patient(root, "TCGA_AA_0001_20000101"), ball())
    write_lgg_patient(root, "TCGA_AA_0002_20010101", seed=1)
    write_masks(write_lgg_patient(root, "TCGA_BB_0003_20020101", seed=2), np.zeros((12, 32, 32)))
    (root / "data.csv").write_text(
        "Patient,RNASeqCluster,CNCluster,age_at_initial_pathologic\n"
        "TCGA_AA_0001,2,1,40\nTCGA_AA_0002,,3,51\nTCGA_BB_0003,4,2,60\n"
    )
    return root


def test_expert_features_for_a_root(root, tmp_path, capsys):
    before = tree_hashes(root)
    out = tmp_path / "features.csv"
    assert cli.main(["features", str(root), "--out", str(out)]) == 0
    columns, rows = read_rows(out)
    assert columns[:5] == STUDY_COLUMNS
    named = [c for c in columns if any(w in c for w in ("ellipsoid", "angular", "margin"))]
    assert named == STUDY_COLUMNS[2:]
    assert columns[-3:] == ["RNASeqCluster", "CNCluster", "age_at_initial_pathologic"]
    assert [r["patient"] for r in rows] == [
        "TCGA_AA_0001_20000101",
        "TCGA_AA_0002_20010101",
        "TCGA_BB_0003_20020101",
    ]
    ball_row, synth, empty = rows
    # the joined clinical columns, by the id prefix
    assert (ball_row["RNASeqCluster"], synth["CNCluster"], empty["age_at_initial_pathologic"]) == (
        "2",
        "3",
        "60",
    )
    assert synth["RNASeqCluster"] == ""  # blank in data.csv stays blank
    # the CSV holds what shape_features says for the mask in the folder (one path)
    mask = lgg_io.read_patient(root / "TCGA_AA_0001_20000101").mask
    expected = shape.shape_features(mask)
    for k in STUDY_COLUMNS[1:]:
        assert float(ball_row[k]) == pytest.approx(expected[k], rel=1e-5)
    assert float(ball_row["bounding_ellipsoid_volume_ratio"]) == pytest.approx(1.0, abs=0.1)
    # an empty mask: volume 0, the shape features are empty cells, never "nan"
    assert float(empty["volume_ml"]) == 0.0
    assert empty["bounding_ellipsoid_volume_ratio"] == empty["angular_sd"] == ""
    assert "nan" not in out.read_text().lower()
    assert {r["spacing_mm"] for r in rows} == {"1 1 1"} and {r["masks"] for r in rows} == {"expert"}
    assert tree_hashes(root) == before  # inputs untouched
    assert "3 row(s)" in capsys.readouterr().out


def test_spacing_sets_the_volume_and_is_stated(root, tmp_path):
    one, thick = tmp_path / "a.csv", tmp_path / "b.csv"
    folder = str(root / "TCGA_AA_0002_20010101")
    assert cli.main(["features", folder, "--out", str(one)]) == 0
    assert cli.main(["features", folder, "--spacing", "5", "0.5", "0.5", "--out", str(thick)]) == 0
    (a,), (b,) = read_rows(one)[1], read_rows(thick)[1]
    assert b["spacing_mm"] == "5 0.5 0.5"
    assert float(b["volume_ml"]) == pytest.approx(1.25 * float(a["volume_ml"]), rel=1e-5)
    assert float(b["bounding_ellipsoid_volume_ratio"]) == pytest.approx(
        float(a["bounding_ellipsoid_volume_ratio"]), rel=1e-3
    )


def test_a_root_without_data_csv_has_no_clinical_columns(make_lgg_patient, tmp_path):
    folder = make_lgg_patient()
    out = tmp_path / "f.csv"
    assert cli.main(["features", str(folder.parent), "--out", str(out)]) == 0
    columns, rows = read_rows(out)
    assert columns == list(shape.ROW_KEYS) and len(rows) == 1


def test_predicted_and_corrected_masks(root, tiny_model_store, tmp_path):  # noqa: F811
    folder = root / "TCGA_AA_0001_20000101"
    pred = tmp_path / "pred.csv"
    assert (
        cli.main(
            ["features", str(folder), "--masks", "predicted", "--model", tiny_model_store]
            + ["--device", "cpu", "--out", str(pred)]
        )
        == 0
    )
    (row,) = read_rows(pred)[1]
    assert row["masks"] == f"predicted {tiny_model_store}" and row["RNASeqCluster"] == "2"
    # a person's corrections folder: the features of the corrected mask
    corrected = np.zeros((12, 32, 32), np.uint8)
    corrected[3:9, 8:20, 8:20] = 1
    lgg_io.write_corrections(
        tmp_path / "corr" / folder.name, corrected, folder.name, folder, reviewed_slices=[]
    )
    out = tmp_path / "corr.csv"
    args = ["features", str(folder), "--masks", "corrections", "--corrections"]
    assert cli.main(args + [str(tmp_path / "corr"), "--out", str(out)]) == 0
    (row,) = read_rows(out)[1]
    assert int(row["voxels"]) == 6 * 12 * 12 and row["masks"].startswith("corrections ")


def test_a_patient_that_cannot_be_measured_is_named_and_the_rest_written(root, tmp_path, capsys):
    write_lgg_patient(root, "TCGA_CC_0004_20030101", masks=False)
    out = tmp_path / "f.csv"
    assert cli.main(["features", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "TCGA_CC_0004_20030101" in err and "no expert masks" in err and "Traceback" not in err
    assert len(read_rows(out)[1]) == 3


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--masks", "corrections"], "needs --corrections"),
        (["--corrections", "."], "only with --masks corrections"),
        (["--model", "lgg-fast"], "only with --masks predicted"),
        (["--spacing", "1", "0", "1"], "three positive"),
    ],
)
def test_bad_options_are_one_clear_line(root, tmp_path, capsys, extra, words):
    out = tmp_path / "f.csv"
    assert cli.main(["features", str(root), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lggseg: error:") and words in err and "\n" not in err
    assert not out.exists()


def test_never_overwrites_the_dataset_table(root, capsys):
    before = tree_hashes(root)
    assert cli.main(["features", str(root), "--out", str(root / "data.csv")]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert tree_hashes(root) == before


def test_real_patients_expert_features(kaggle_root, tmp_path):
    folders = sorted(p for p in kaggle_root.iterdir() if p.name.startswith("TCGA_"))[:2]
    out = tmp_path / "real.csv"
    assert cli.main(["features", *map(str, folders), "--out", str(out)]) == 0
    _, rows = read_rows(out)
    for r in rows:
        assert 0 < float(r["bounding_ellipsoid_volume_ratio"]) <= 1.05
        assert float(r["angular_sd"]) > 0 and float(r["margin_fluctuation"]) > 0
        assert r["RNASeqCluster"] != "" or r["MethylationCluster"] != ""  # joined from data.csv


def test_nifti_cases_use_their_own_spacing(tmp_path):
    """The phantom lesion is a ball of radius 14 mm: about 11.5 mL, BEVR near 1, whatever the
    grid; the CSV states each case's spacing, and --spacing (for LGG TIFFs) changes nothing."""
    from nifti_cases import LESION_RADIUS, affine_for, write_case

    cases = tmp_path / "cases"
    write_case(
        cases / "fine", affine_for("RAS", (1.0, 1.0, 1.0), (120, 150, 110)), shape=(120, 150, 110)
    )
    write_case(
        cases / "coarse", affine_for("LPS", (1.5, 1.5, 3.0), (80, 100, 38)), shape=(80, 100, 38)
    )
    out = tmp_path / "f.csv"
    assert cli.main(["features", str(cases), "--spacing", "9", "9", "9", "--out", str(out)]) == 0
    rows = {r["patient"]: r for r in read_rows(out)[1]}
    ball_ml = 4 / 3 * np.pi * LESION_RADIUS**3 / 1000
    assert rows["fine"]["spacing_mm"] == "1 1 1" and rows["coarse"]["spacing_mm"] == "3 1.5 1.5"
    for r in rows.values():
        assert float(r["volume_ml"]) == pytest.approx(ball_ml, rel=0.1)
        assert float(r["bounding_ellipsoid_volume_ratio"]) == pytest.approx(1.0, abs=0.12)

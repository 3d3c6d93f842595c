"""The ``lggseg`` command, run in-process through ``cli.main`` (and as a console script):
segment writes prediction folders napari and training can open plus a CSV, evaluate prints
per-patient Dice, train saves a new model, and a user's mistake is one clear error line."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tree_hashes, write_lgg_patient

from napari_lggseg import cli, lgg_io, models

REAL_PATIENTS = ("TCGA_CS_4942_19970222", "TCGA_HT_7874_19950902")  # 20 slices each


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _real(kaggle_root) -> list[Path]:
    folders = [kaggle_root / p for p in REAL_PATIENTS]
    if not all(f.is_dir() for f in folders):
        pytest.skip(f"{REAL_PATIENTS} not in this copy of the data")
    return folders


def _write_synthetic_patient(root: Path, seed: int, n: int = 12, size: int = 96) -> Path:
    return write_lgg_patient(root, f"SYNTH_{seed:04d}", n=n, size=size, seed=seed, synthetic=True)


@pytest.fixture
def own_store(tiny_model_store, tmp_path, monkeypatch):  # noqa: F811
    """A user store holding a copy of the tiny model, so models saved here stay out of the session's."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(models.get_model(tiny_model_store).path, store / tiny_model_store)
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(store))
    return store


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_console_script_help_is_quick_to_load():
    script = Path(sys.executable).parent / "lggseg"
    if not script.exists():
        pytest.skip(f"console script not installed beside {sys.executable}")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("segment", "evaluate", "train", "models"):
        assert command in out.stdout
    # help for a command loads no torch (napari and the terminal stay quick)
    code = (
        "import sys; from napari_lggseg.cli import main; rc = main(['segment', '--help']); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NO-TORCH 0"), out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_a_closed_pipe_is_no_error():
    """``lggseg models | head -1``: the reader leaves early; no error line, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_lggseg.cli", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # before the command has written anything
    err = proc.stderr.read()
    assert proc.wait(timeout=60) in (0, 141), err
    assert err == "", err


@pytest.mark.slow
def test_segment_real_patients(kaggle_root, tiny_model_store, tmp_path, capsys):  # noqa: F811
    folders = _real(kaggle_root)
    out = tmp_path / "predictions"
    rc = cli.main(
        [
            "segment",
            *map(str, folders),
            "--out",
            str(out),
            "--model",
            tiny_model_store,
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = _read_csv(out / "segmentation.csv")
    assert list(rows[0]) == list(cli.CSV_COLUMNS)
    assert [r["patient"] for r in rows] == list(REAL_PATIENTS)
    for folder, row in zip(folders, rows):
        patient = lgg_io.read_patient(folder)
        corr = lgg_io.read_corrections(out / patient.patient_id)
        assert corr.mask.shape == patient.mask.shape
        assert corr.source_folder == folder.resolve()
        assert corr.reviewed_slices == [] and corr.model == tiny_model_store
        assert corr.extra["kind"] == "prediction"
        assert int(row["slices"]) == patient.image.shape[0]
        assert int(row["tumour_voxels"]) == int(corr.mask.sum())
        assert 0.0 <= float(row["dice"]) <= 1.0
        assert row["missing_sequences"] == lgg_io.describe_sequences(
            lgg_io.missing_sequences(patient.image)
        )
        assert float(row["seconds"]) > 0 and row["model"] == tiny_model_store
        assert row["flagged_slices"].split() == [str(z + 1) for z in corr.extra["flagged_slices"]]
        assert patient.patient_id in captured.out
    # the expert masks beside the images are untouched, and predictions open as training data
    from napari_lggseg.train_data import volumes_from_path

    (vol,) = volumes_from_path(out / REAL_PATIENTS[0])
    assert vol.source == "corrections" and vol.labelled_slices.size == 0
    # running again replaces the earlier predictions of the same patients
    assert (
        cli.main(["segment", str(folders[0]), "--out", str(out), "--model", tiny_model_store]) == 0
    )
    assert [r["patient"] for r in _read_csv(out / "segmentation.csv")] == [REAL_PATIENTS[0]]


def test_segment_a_root_without_masks(tiny_model_store, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "scans"
    for k in range(2):
        write_lgg_patient(root, name=f"TCGA_XX_000{k}_20000101", n=5, size=64, masks=False, seed=k)
    (root / "notes").mkdir()  # not a patient: ignored
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "segment",
                str(root),
                "--out",
                str(out),
                "--model",
                tiny_model_store,
                "--tta",
                "--postprocess",
                "largest",
                "--threshold",
                "0.3",
            ]
        )
        == 0
    )
    rows = _read_csv(out / "segmentation.csv")
    assert [r["patient"] for r in rows] == ["TCGA_XX_0000_20000101", "TCGA_XX_0001_20000101"]
    assert all(r["dice"] == "" and r["slices"] == "5" for r in rows)
    corr = lgg_io.read_corrections(out / "TCGA_XX_0001_20000101")
    assert corr.mask.shape == (5, 64, 64)
    assert corr.extra["threshold"] == 0.3 and corr.extra["postprocess"] == "largest"


@pytest.mark.slow
def test_evaluate(kaggle_root, tiny_model_store, tmp_path, capsys):  # noqa: F811
    _real(kaggle_root)
    table = tmp_path / "dice.csv"
    rc = cli.main(
        [
            "evaluate",
            "--data",
            str(kaggle_root),
            "--patients",
            *REAL_PATIENTS,
            "--model",
            tiny_model_store,
            "--csv",
            str(table),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = _read_csv(table)
    assert [r["patient"] for r in rows] == list(REAL_PATIENTS)
    dices = [float(r["dice"]) for r in rows]
    assert all(0.0 <= d <= 1.0 for d in dices)
    for pid, d in zip(REAL_PATIENTS, dices):
        line = next(ln for ln in captured.out.splitlines() if ln.startswith(pid))
        assert f"{d:.4f}" in line
    mean = re.search(r"mean Dice (\d\.\d{4})", captured.out)
    median = re.search(r"median Dice (\d\.\d{4})", captured.out)
    assert mean and median, captured.out
    assert float(mean[1]) == pytest.approx(np.mean(dices), abs=2e-4)  # the CSV holds rounded values
    assert float(median[1]) == pytest.approx(np.median(dices), abs=2e-4)
    assert "Buda et al." in captured.out and "first and last slice" in captured.out

    # --patients FILE.json:KEY, as with training/splits.json:test
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": [REAL_PATIENTS[1]], "train": [REAL_PATIENTS[0]]}))
    assert (
        cli.main(
            [
                "evaluate",
                "--data",
                str(kaggle_root),
                "--patients",
                f"{splits}:test",
                "--model",
                tiny_model_store,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert REAL_PATIENTS[1] in out and REAL_PATIENTS[0] not in out and "over 1 patient" in out


def _error_cases(tmp_path, root, model):
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"test": ["A"]}))
    missing = tmp_path / "no-such-patient"
    cases = {
        "missing folder": (
            ["segment", str(missing), "--out", str(tmp_path / "o")],
            [str(missing), "no such folder"],
        ),
        "not a patient folder": (
            ["segment", str(tmp_path), "--out", str(tmp_path / "o"), "--model", model],
            [str(tmp_path), "not an LGG patient folder"],
        ),
        "unknown model": (
            ["segment", str(root), "--out", str(tmp_path / "o"), "--model", "nope"],
            ["unknown model 'nope'", model],
        ),
        "unknown patient": (
            ["evaluate", "--data", str(root), "--patients", "TCGA_ZZ_9999_20000101"],
            ["patient TCGA_ZZ_9999_20000101 not found"],
        ),
        "splits key": (
            ["evaluate", "--data", str(root), "--patients", f"{splits}:validation"],
            [str(splits), "no key 'validation'"],
        ),
        "unknown device": (
            ["segment", str(root), "--out", str(tmp_path / "o"), "--device", "tpu"],
            ["unknown device 'tpu'"],
        ),
        "delete unknown": (["models", "delete", "nope"], ["unknown model 'nope'"]),
        "train missing data": (["train", "--data", str(missing)], [str(missing), "no such folder"]),
    }
    if not torch.cuda.is_available():
        cases["no cuda"] = (
            [
                "segment",
                str(root),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cuda",
                "--model",
                model,
            ],
            ["device 'cuda' is not available"],
        )
        cases["train on missing cuda"] = (
            ["train", "--data", str(root), "--device", "cuda"],
            ["device 'cuda' is not available"],
        )
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "missing folder",
        "not a patient folder",
        "unknown model",
        "unknown patient",
        "splits key",
        "unknown device",
        "delete unknown",
        "train missing data",
        "no cuda",
        "train on missing cuda",
    ],
)
def test_user_errors_are_one_clear_line(case, tiny_model_store, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "data"
    write_lgg_patient(root, n=4, size=32)
    cases = _error_cases(tmp_path, root, tiny_model_store)
    if case not in cases:
        pytest.skip("CUDA is available here")
    argv, words = cases[case]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("lggseg: error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_usage_errors_exit_2(capsys):
    assert cli.main(["segment", "somewhere"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert cli.main(["train", "--data", "x", "--epochs", "2", "--minutes", "1"]) == 2
    assert "not allowed with" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_models_commands(own_store, tiny_model_store, tmp_path, capsys):  # noqa: F811
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(tiny_model_store))
    assert "user" in line and f"{models.get_model(tiny_model_store).val_dice:.3f}" in line

    dest = tmp_path / "exported"
    dest.mkdir()
    assert cli.main(["models", "export", tiny_model_store, str(dest)]) == 0
    assert cli.main(["models", "import", str(dest / tiny_model_store), "--name", "colleague"]) == 0
    assert cli.main(["models", "rename", "colleague", "colleague-2"]) == 0
    assert cli.main(["models", "list"]) == 0
    assert "colleague-2" in capsys.readouterr().out
    assert cli.main(["models", "delete", "colleague-2"]) == 0
    assert sorted(p.name for p in own_store.iterdir()) == [tiny_model_store]
    assert cli.main(["models", "rename", tiny_model_store, "bad name"]) == 2
    assert "model name 'bad name'" in capsys.readouterr().err


def test_download_reference_offline(own_store, monkeypatch, capsys):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(pooch, "retrieve", offline)
    assert cli.main(["models", "download-reference"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("lggseg: error: could not download the reference weights")
        and "offline" in err
    )


@pytest.mark.slow
def test_train_fine_tunes_and_saves_a_new_model(own_store, tiny_model_store, tmp_path, capsys):  # noqa: F811
    data = tmp_path / "data"
    _write_synthetic_patient(data, seed=21)
    _write_synthetic_patient(data, seed=22)
    rc = cli.main(
        [
            "train",
            "--data",
            str(data),
            "--from",
            tiny_model_store,
            "--name",
            "tuned",
            "--epochs",
            "1",
            "--val-fraction",
            "0.5",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    info = models.get_model("tuned")
    assert info.parent == tiny_model_store and not info.shipped
    assert info.card["preprocessing"] == models.get_model(tiny_model_store).card["preprocessing"]
    assert info.card["architecture"]["width"] == 8
    assert info.card["training"]["stopped"] == "finished"
    assert (
        info.card["training_data"]["val_patients"]
        and info.card["metrics"]["val_mean_dice"] is not None
    )
    assert info.card["command"].startswith("lggseg train --data")
    assert "validation Dice before" in out and "saved model tuned" in out
    models.load_model("tuned")  # loads strictly, hash checked

    # the same name again makes a new version, never replaces; one patient: no validation split
    rc = cli.main(
        [
            "train",
            "--data",
            str(data / "SYNTH_0021"),
            "--from",
            "tuned",
            "--name",
            "tuned",
            "--epochs",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "saved model tuned-v2" in out and "no validation patients" in out
    assert models.get_model("tuned-v2").parent == "tuned"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_stops_training_and_keeps_the_best_model(own_store, tiny_model_store, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    _write_synthetic_patient(data, seed=23, n=8)
    _write_synthetic_patient(data, seed=24, n=8)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_lggseg.cli",
            "train",
            "--data",
            str(data),
            "--from",
            tiny_model_store,
            "--name",
            "interrupted",
            "--epochs",
            "1000",
            "--val-fraction",
            "0.5",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen = []
        for line in proc.stdout:  # "epoch 1" comes once training is under way
            seen.append(line)
            if line.startswith("epoch 1:"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(seen) + out + err
    assert "stopping after this step" in err
    assert "stopped: cancelled" in out and "saved model interrupted" in out
    card = models.get_model("interrupted").card
    assert card["training"]["stopped"] == "cancelled"
    assert card["history"][0]["epoch"] == 0


def test_segment_flags_the_slices_to_check_first(tiny_model_store, tmp_path):  # noqa: F811
    """The CSV lists the slices to check first by their file numbers, most uncertain first; the
    prediction's sidecar keeps them (0-based, like its reviewed slices) with their files and
    scores; both are the list the Segment tumour widget shows (uncertainty.slices_to_review)."""
    from napari_lggseg.inference import Segmenter
    from napari_lggseg.uncertainty import slices_to_review

    folder = _write_synthetic_patient(tmp_path / "data", seed=31, n=12, size=96)
    out = tmp_path / "predictions"
    assert (
        cli.main(
            [
                "segment",
                str(folder),
                "--out",
                str(out),
                "--model",
                tiny_model_store,
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    (row,) = _read_csv(out / "segmentation.csv")
    numbers = [int(n) for n in row["flagged_slices"].split()]
    assert numbers and len(set(numbers)) == len(numbers) and all(1 <= n <= 12 for n in numbers)

    extra = lgg_io.read_corrections(out / folder.name).extra
    assert [n - 1 for n in numbers] == extra["flagged_slices"]
    assert extra["flagged_slice_files"] == [f"{folder.name}_{n}.tif" for n in numbers]
    scores = extra["flagged_uncertain_voxels"]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 5.0

    patient = lgg_io.read_patient(folder)
    prob = Segmenter.from_store(tiny_model_store, "cpu").segment(patient.image, 0.5).prob
    expected = slices_to_review(prob)
    assert extra["flagged_slices"] == [z for z, _ in expected]
    assert scores == pytest.approx([v for _, v in expected], abs=0.06)


# --------------------------------------------------------------------------- no lost work, no tracebacks


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ln.startswith("lggseg: error:")]


def _segment(inputs, out, model, *extra) -> int:
    return cli.main(["segment", *map(str, inputs), "--out", str(out), "--model", model, *extra])


def test_segment_never_replaces_reviewed_corrections(tiny_model_store, tmp_path, capsys):  # noqa: F811
    """OUT/<patient> holding a person's corrections is left byte for byte; the new prediction goes
    to OUT/<patient>.prediction-2 (reused by the next run), and the run says so."""
    data, out = tmp_path / "data", tmp_path / "out"
    reviewed = write_lgg_patient(data, name="TCGA_XX_0001_20000101", n=5, size=64, seed=1)
    other = write_lgg_patient(data, name="TCGA_XX_0002_20000101", n=5, size=64, seed=2)
    corrections = out / reviewed.name
    lgg_io.write_corrections(
        corrections, np.ones((5, 64, 64), np.uint8), reviewed.name, reviewed, reviewed_slices=[2]
    )
    before = tree_hashes(corrections)
    assert _segment([data], out, tiny_model_store) == 0
    err = capsys.readouterr().err
    sibling = out / f"{reviewed.name}.prediction-2"
    assert tree_hashes(corrections) == before
    assert str(corrections) in err and str(sibling) in err and "reviewed" in err
    pred = lgg_io.read_corrections(sibling)
    assert pred.patient_id == reviewed.name and pred.extra["kind"] == "prediction"
    assert lgg_io.read_corrections(out / other.name).extra["kind"] == "prediction"
    assert [r["patient"] for r in _read_csv(out / "segmentation.csv")] == [
        reviewed.name,
        other.name,
    ]
    # again: the earlier sibling prediction is replaced, the corrections still untouched
    assert _segment([reviewed], out, tiny_model_store) == 0
    assert tree_hashes(corrections) == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(reviewed.name)) == [
        reviewed.name,
        sibling.name,
    ]


def test_a_refused_out_folder_does_not_end_the_batch(tiny_model_store, tmp_path, capsys):  # noqa: F811
    data, out = tmp_path / "data", tmp_path / "out"
    first = write_lgg_patient(data, name="TCGA_XX_0001_20000101", n=4, size=64, seed=1)
    second = write_lgg_patient(data, name="TCGA_XX_0002_20000101", n=4, size=64, seed=2)
    (out / first.name).mkdir(parents=True)
    (out / first.name / "notes.txt").write_text("not ours to replace")
    assert _segment([data], out, tiny_model_store) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert any(str(out / first.name) in ln for ln in lines), lines
    assert (out / first.name / "notes.txt").read_text() == "not ours to replace"
    assert sorted(p.name for p in (out / first.name).iterdir()) == ["notes.txt"]
    assert lgg_io.read_corrections(out / second.name).patient_id == second.name
    assert [r["patient"] for r in _read_csv(out / "segmentation.csv")] == [second.name]


def test_full_disk_while_writing_the_csv(tiny_model_store, tmp_path, capsys, monkeypatch):  # noqa: F811
    import errno

    folder = write_lgg_patient(tmp_path / "data", n=4, size=64)
    out = tmp_path / "out"

    def full(self, row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(csv.DictWriter, "writerow", full)
    assert _segment([folder], out, tiny_model_store) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(out / "segmentation.csv") in line and "No space left on device" in line
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not (out / "segmentation.csv").exists()


def test_evaluate_names_the_patients_without_masks(tiny_model_store, tmp_path, capsys):  # noqa: F811
    folder = write_lgg_patient(tmp_path / "data", n=4, size=64, masks=False)
    argv = ["evaluate", "--data", str(folder), "--model", tiny_model_store]
    assert cli.main(argv) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert folder.name in line and "mask" in line


def test_an_unwritable_csv_is_one_line(tiny_model_store, tmp_path, capsys):  # noqa: F811
    folder = write_lgg_patient(tmp_path / "data", n=4, size=64)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    table = blocker / "dice.csv"
    argv = ["evaluate", "--data", str(folder), "--model", tiny_model_store, "--csv", str(table)]
    assert cli.main(argv) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(table) in line


def _bad_model(store: Path, name: str, card_text: str) -> None:
    (store / name).mkdir()
    (store / name / models.WEIGHTS).write_bytes(b"\0" * 64)
    (store / name / models.CARD).write_text(card_text)


def test_bad_models_are_listed_unusable_and_deletable(
    own_store, tiny_model_store, tmp_path, capsys
):  # noqa: F811
    good = models.get_model(tiny_model_store).card
    _bad_model(own_store, "a-list", "[]")
    _bad_model(
        own_store, "no-arch", json.dumps({k: v for k, v in good.items() if k != "architecture"})
    )
    _bad_model(
        own_store, "alien", json.dumps(dict(good, architecture={"name": "vit-b16", "width": 8}))
    )
    _bad_model(own_store, "cut", json.dumps(good)[:50])
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:6] == ["name", "kind", "val", "Dice", "parent", "created"]
    shipped_default = models.default_model_name()
    assert lines[2].startswith(shipped_default)  # the shipped default stays first
    rows = {
        ln.split()[0]: ln for ln in lines[2:] if ln.strip() and not ln.startswith("user models")
    }
    assert "unusable" not in rows[tiny_model_store]
    for name, words in {
        "a-list": "not a JSON object",
        "no-arch": "'architecture'",
        "alien": "unknown architecture 'vit-b16'",
        "cut": "not valid JSON",
    }.items():
        assert "unusable" in rows[name] and words in rows[name], rows[name]
        assert rows[name].index("unusable") > rows[name].index(name) + len(name)  # last column
    # the shipped default still segments
    folder = write_lgg_patient(tmp_path / "data", n=4, size=64, masks=False)
    assert cli.main(["segment", str(folder), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert lgg_io.read_corrections(tmp_path / "o" / folder.name).model == shipped_default
    capsys.readouterr()
    # using a bad model is one line; deleting it works
    assert (
        cli.main(["segment", str(folder), "--out", str(tmp_path / "o2"), "--model", "alien"]) == 2
    )
    (line,) = _error_lines(capsys.readouterr().err)
    assert "unusable" in line and str(own_store / "alien" / models.CARD) in line
    for name in ("a-list", "no-arch", "alien", "cut"):
        assert cli.main(["models", "delete", name]) == 0
    assert sorted(p.name for p in own_store.iterdir()) == [tiny_model_store]


def _exported_copy(tmp_path, source: Path, card_edit=None, weights: bytes | None = None) -> Path:
    folder = tmp_path / "usb" / "theirs"
    shutil.copytree(source, folder)
    card = json.loads((folder / models.CARD).read_text())
    if weights is not None:
        (folder / models.WEIGHTS).write_bytes(weights)
        card["sha256"] = models.sha256_of(folder / models.WEIGHTS)
    (folder / models.CARD).write_text(json.dumps(card_edit(card) if card_edit else card))
    return folder


@pytest.mark.parametrize("case", ["unknown architecture", "do not fit", "not safetensors"])
def test_models_import_refuses_bad_models_in_one_line(
    case, own_store, tiny_model_store, tmp_path, capsys
):  # noqa: F811
    source = models.get_model(tiny_model_store).path
    if case == "unknown architecture":
        folder = _exported_copy(
            tmp_path, source, lambda c: dict(c, architecture=dict(c["architecture"], name="vit"))
        )
        named = folder / models.CARD
    elif case == "do not fit":
        folder = _exported_copy(
            tmp_path, source, lambda c: dict(c, architecture=dict(c["architecture"], width=16))
        )
        named = folder / models.WEIGHTS
    else:
        folder = _exported_copy(tmp_path, source, weights=b"\x89PNG not weights" * 10)
        named = folder / models.WEIGHTS
    assert cli.main(["models", "import", str(folder), "--name", "imported"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    words = {"not safetensors": "not a readable safetensors file"}.get(case, case)
    assert words in line and str(named) in line, line
    assert sorted(p.name for p in own_store.iterdir()) == [tiny_model_store]


def test_a_store_model_whose_weights_do_not_fit_is_one_line(
    own_store, tiny_model_store, tmp_path, capsys
):  # noqa: F811
    misfit = own_store / "misfit"
    shutil.copytree(own_store / tiny_model_store, misfit)
    card = json.loads((misfit / models.CARD).read_text())
    card["architecture"]["width"] = 16
    (misfit / models.CARD).write_text(json.dumps(card))
    folder = write_lgg_patient(tmp_path / "data", n=4, size=64)
    assert (
        cli.main(["segment", str(folder), "--out", str(tmp_path / "o"), "--model", "misfit"]) == 2
    )
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(misfit / models.WEIGHTS) in line and "do not fit" in line

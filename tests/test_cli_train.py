"""``lggseg train`` from scratch and its failure paths, in-process through ``cli.main``: the same
seed gives the same weights, Ctrl-C before any epoch finished saves nothing, an unwritable
checkpoint or folders without reviewed slices fail at once with one line naming the path, and a
model the store cannot take is written to a fallback folder instead of being lost."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_lgg_patient

from napari_lggseg import cli, lgg_io, models, training

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(root))
    return root


def _patients(root: Path, n: int = 3, slices: int = 6) -> Path:
    for k in range(1, n + 1):
        write_lgg_patient(root, f"TCGA_SY_{k:04d}_20000101", n=slices, size=32, seed=k)
    return root


def _train_args(data: Path, name: str, *more: str) -> list[str]:
    return [
        "train", "--data", str(data), "--name", name, "--width", "4", "--epochs", "1",
        "--batch-size", "2", "--device", "cpu", "--seed", "0", *more,
    ]  # fmt: skip


def test_same_seed_from_scratch_gives_identical_weights(store, tmp_path, capsys):
    data = _patients(tmp_path / "data")
    assert cli.main(_train_args(data, "first")) == 0
    torch.manual_seed(1234)  # whatever ran before must not matter
    torch.rand(7)
    assert cli.main(_train_args(data, "second")) == 0
    capsys.readouterr()
    a = models.load_state_dict(models.get_model("first"))
    b = models.load_state_dict(models.get_model("second"))
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"same seed, same data, different weights: {differ[:5]}"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_before_the_first_epoch_finished_saves_nothing(store, tmp_path, capsys, monkeypatch):
    data = _patients(tmp_path / "data")
    calls = {"n": 0}
    loss = training.seg_loss

    def interrupted_at_step_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # as if the person pressed Ctrl-C during the second step
            os.kill(os.getpid(), signal.SIGINT)
        return loss(*args, **kwargs)

    monkeypatch.setattr(training, "seg_loss", interrupted_at_step_2)
    rc = cli.main(_train_args(data, "never"))
    out, err = capsys.readouterr()
    assert calls["n"] >= 2
    assert "keeping the best model" not in err, err
    assert "no model saved" in out + err, out + err
    assert rc == 130
    assert not store.exists() or not any(store.iterdir()), "an untrained model was saved"


def test_unwritable_checkpoint_fails_before_training(store, tmp_path, capsys):
    data = _patients(tmp_path / "data")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint's folder should be")
    ckpt = blocker / "run.ckpt.safetensors"
    rc = cli.main(_train_args(data, "ckpt", "--checkpoint", str(ckpt)))
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.startswith("lggseg: error:") and str(ckpt) in err and err.count("\n") == 1, err
    assert "epoch" not in out, f"training started before the checkpoint was checked:\n{out}"
    assert not store.exists()


def test_folders_without_reviewed_slices_are_named(store, tmp_path, capsys):
    source = write_lgg_patient(tmp_path / "data", "TCGA_SY_0001_20000101", n=6, masks=False)
    image = lgg_io.read_patient(source, masks=False).image
    folder = tmp_path / "corrections" / "TCGA_SY_0001_20000101"
    lgg_io.write_corrections(
        folder, np.zeros(image.shape[:3], np.uint8), "TCGA_SY_0001_20000101", source,
        reviewed_slices=[],
    )  # fmt: skip
    rc = cli.main(_train_args(folder, "nothing"))
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.startswith("lggseg: error:") and str(folder) in err and "reviewed" in err, err
    assert err.count("\n") == 1, err


def test_a_model_the_store_cannot_take_is_kept_in_a_fallback_folder(tmp_path, capsys, monkeypatch):
    if not hasattr(models, "save_trained_model"):
        pytest.skip("models.save_trained_model is not there yet")
    data = _patients(tmp_path / "data")
    blocked = tmp_path / "store-is-a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(blocked))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    rc = cli.main(_train_args(data, "orphan"))
    out, err = capsys.readouterr()
    assert rc != 0
    kept = [
        w.parent
        for top in ("data-home", "tmp")
        for w in (tmp_path / top).rglob("model.safetensors")
        if w.parent.name.startswith("orphan")
    ]
    assert len(kept) == 1, (kept, out + err)
    assert str(kept[0]) in out + err, "the message must say where the model is"
    assert (kept[0] / "card.json").is_file()

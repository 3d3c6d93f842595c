"""``lggseg train`` from scratch and its failure paths, in-process through ``cli.main``: the same
seed gives the same weights, Ctrl-C before any epoch finished saves nothing, an unwritable
checkpoint or folders without reviewed slices fail at once with one line naming the path, and a
model the store cannot take is written to a fallback folder instead of being lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
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
    data = _patients(tmp_path / "data")
    blocked = tmp_path / "store-is-a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(blocked))
    monkeypatch.setenv("LGGSEG_UNSAVED_DIR", str(tmp_path / "unsaved"))
    rc = cli.main(_train_args(data, "orphan"))
    out, err = capsys.readouterr()
    assert rc != 0
    kept = [w.parent for w in (tmp_path / "unsaved").rglob("model.safetensors")]
    assert len(kept) == 1, (kept, out + err)
    assert str(kept[0]) in out + err, "the message must say where the model is"
    assert (kept[0] / "card.json").is_file()


# --------------------------------------------------------------------------- fine-tuning (--from)


@pytest.fixture
def parent_store(tiny_model_store, tmp_path, monkeypatch) -> Path:
    """A user store holding a copy of the tiny model (so new models stay out of the session's)."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(models.get_model(tiny_model_store).path, store / tiny_model_store)
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(store))
    return store


def test_fine_tuning_from_the_cli_keeps_the_parents_post_processing(
    parent_store, tiny_model_store, tmp_path, capsys
):
    """``lggseg train --from`` and the widget share finetune.fine_tune: the new model keeps the
    post-processing its parent was validated with, not the training config's default."""
    card_path = parent_store / tiny_model_store / "card.json"
    card = json.loads(card_path.read_text())
    card["postprocessing"] = {"threshold": 0.4, "method": "largest"}
    card_path.write_text(json.dumps(card))
    data = _patients(tmp_path / "data", n=2)
    args = ["train", "--data", str(data), "--from", tiny_model_store, "--name", "child",
            "--epochs", "1", "--batch-size", "2", "--device", "cpu"]  # fmt: skip
    assert cli.main(args) == 0, capsys.readouterr()
    child = models.get_model("child")
    assert child.parent == tiny_model_store
    assert child.card["postprocessing"] == {"threshold": 0.4, "method": "largest"}


def test_from_with_minutes_runs_the_round_with_that_budget(
    parent_store, tiny_model_store, tmp_path, capsys
):
    """``lggseg train --from M --minutes N`` is the widget's and the project's round with an
    N-minute budget: every other setting (learning rate, warm-up, BatchNorm, the anti-forgetting
    terms) is the round's, not a from-scratch run's."""
    from napari_lggseg.finetune import fine_tune_config

    data = _patients(tmp_path / "data", n=2)
    args = ["train", "--data", str(data), "--from", tiny_model_store, "--name", "child",
            "--minutes", "0.02", "--device", "cpu"]  # fmt: skip
    assert cli.main(args) == 0, capsys.readouterr()
    used = models.get_model("child").card["hyperparameters"]
    expected = fine_tune_config(2, device="cpu", minutes=0.02).to_dict()
    expected["steps_per_epoch"] = None  # an epoch: one pass over the labelled slices
    assert used == expected
    assert used["minutes"] == 0.02 and used["epochs"] is None


def test_fine_tune_keeps_a_model_the_store_cannot_take(
    parent_store, tiny_model_store, tmp_path, monkeypatch
):
    """The disk fills while the new model is saved: a complete folder goes to the fallback, and
    the error (what the widget and the CLI show) says where."""
    from napari_lggseg import finetune, train_data

    monkeypatch.setenv("LGGSEG_UNSAVED_DIR", str(tmp_path / "unsaved"))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(parent_store))

    monkeypatch.setattr(models, "save_model", disk_full)
    volumes = train_data.load_volumes(_patients(tmp_path / "data", n=2))
    cfg = training.TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, device="cpu")
    with pytest.raises(finetune.ModelNotStored) as caught:
        finetune.fine_tune(tiny_model_store, volumes, None, cfg, name="kept")
    fallback = caught.value.saved.fallback
    assert fallback is not None and str(fallback) in str(caught.value)
    assert (fallback / "model.safetensors").is_file() and (fallback / "card.json").is_file()
    assert json.loads((fallback / "card.json").read_text())["parent"] == tiny_model_store
    assert caught.value.result is not None and caught.value.result.steps == 2
    assert sorted(p.name for p in parent_store.iterdir()) == [tiny_model_store]


def test_resume_from_a_file_that_is_not_a_checkpoint_is_one_clear_line(
    parent_store, tiny_model_store, tmp_path, capsys
):
    data = _patients(tmp_path / "data")
    weights = parent_store / tiny_model_store / "model.safetensors"
    rc = cli.main(_train_args(data, "resumed", "--resume", str(weights)))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("lggseg: error:") and str(weights) in err, err
    assert "not a training checkpoint" in err and err.count("\n") == 1

"""The checkpoint room without a training run: an unusable path is refused before anything is
written, half-written files of a killed run are cleaned only once they are stale, and a file
that is not a training checkpoint is named as such."""

from __future__ import annotations

import os
import time

import pytest
import torch
from safetensors.torch import save_file

from napari_lggseg.checkpoint import (
    CheckpointError,
    TrainState,
    check_writable,
    clean_stale,
    load_checkpoint,
    save_checkpoint,
)


def _tiny():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def test_a_path_that_cannot_be_written_is_refused_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for bad in (blocker / "run.ckpt", tmp_path):
        with pytest.raises(CheckpointError) as caught:
            check_writable(bad)
        assert str(bad) in str(caught.value)
    good = tmp_path / "new" / "folder" / "run.ckpt"
    assert check_writable(good) == good and good.parent.is_dir()
    assert list(good.parent.iterdir()) == [], "the check leaves nothing behind"


def test_stale_temporary_files_are_cleaned_only_after_an_hour(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    old, young = tmp_path / "run.ckpt.tmp", tmp_path / "other.ckpt.tmp"
    old.write_bytes(b"half a checkpoint from a killed run")
    young.write_bytes(b"a live run may still write this")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert clean_stale(ckpt) == [old]
    assert not old.exists() and young.exists()
    fresh = tmp_path / "run.ckpt.tmp"
    fresh.write_bytes(b"written a minute ago")
    check_writable(ckpt)
    assert fresh.exists(), "a recent temporary file may belong to a live run: kept"


def test_save_and_load_restore_model_optimizer_state_and_extras(tmp_path):
    model, opt = _tiny()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = TrainState(step=3, epoch=1, history=[{"epoch": 0}, {"epoch": 1}], epochs_done=1)
    gen = torch.Generator().manual_seed(5)
    path = tmp_path / "run.ckpt"
    save_checkpoint(
        path, model, opt, state.__dict__, {"w": torch.ones(2)}, {"gen": gen.get_state()}
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"], "no temporary file left"

    other, other_opt = _tiny()
    extra: dict = {}
    raw, best = load_checkpoint(path, other, other_opt, extra)
    assert TrainState.from_dict(raw) == state
    assert torch.equal(best["w"], torch.ones(2)) and torch.equal(extra["gen"], gen.get_state())
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    model, opt = _tiny()
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not safetensors")
    for path, words in ((weights, "not a training checkpoint"), (garbage, "not a readable")):
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path, model, opt)
        assert str(path) in str(caught.value) and words in str(caught.value)

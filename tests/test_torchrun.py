"""``torchrun --nproc_per_node=2 -m napari_lggseg.cli train``: DDP on the CPU (gloo), end to end.

Two processes train a tiny new U-Net for a few steps on small patients written in the LGG
layout. The ranks must end with identical weights (each writes a hash through the
``LGGSEG_DUMP_WEIGHT_HASH`` hook of distributed.py), and exactly one model must land in the
store, holding those weights. ``python -m napari_lggseg.training`` points at that command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import write_lgg_patient

from napari_lggseg import models
from napari_lggseg.distributed import state_dict_hash

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
    ),
]


def test_torchrun_two_cpu_processes_keep_identical_weights_and_save_one_model(tmp_path):
    data = tmp_path / "data"
    for k in (1, 2, 3):
        write_lgg_patient(data, f"TCGA_SY_{k:04d}_20000101", n=8, size=64, seed=k)
    store = tmp_path / "store"
    dump = tmp_path / "weights"
    env = dict(
        os.environ,
        LGGSEG_MODEL_DIR=str(store),
        LGGSEG_DUMP_WEIGHT_HASH=str(dump),
        OMP_NUM_THREADS="1",
    )
    env.pop("RANK", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "napari_lggseg.cli",
        "train",
        "--data",
        str(data),
        "--name",
        "ddp-test",
        "--width",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--val-fraction",
        "0.34",
        "--device",
        "cpu",
        "--seed",
        "3",
    ]

    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    log = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, log
    hashes = [json.loads((tmp_path / f"weights.rank{r}").read_text()) for r in (0, 1)]
    assert hashes[0]["final"] == hashes[1]["final"], (
        "the two ranks ended with different weights\n" + log
    )
    assert hashes[0]["returned"] == hashes[1]["returned"], (
        "the ranks would save different models\n" + log
    )

    assert sorted(p.name for p in store.iterdir()) == ["ddp-test"], (
        "exactly one model, no leftovers"
    )
    info = models.get_model(str(store / "ddp-test"))
    saved = models.load_state_dict(info)  # checks the card's sha256 too
    assert state_dict_hash(saved) == hashes[0]["returned"]
    card = info.card
    assert card["training"]["steps"] == 2 * 10  # 2 epochs of the default 10..200 steps
    assert (
        len(card["training_data"]["patients"]) == 2
        and len(card["training_data"]["val_patients"]) == 1
    )
    assert [row["epoch"] for row in card["history"]] == [0, 1, 2]


def test_python_m_training_points_at_the_cli_command():
    proc = subprocess.run(
        [sys.executable, "-m", "napari_lggseg.training", "--data", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "torchrun --nproc_per_node=N -m napari_lggseg.cli train" in proc.stderr

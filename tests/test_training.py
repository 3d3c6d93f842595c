"""The training engine without a viewer: tiny U-Nets on synthetic patients, a few steps each.

What a user relies on: fine-tuning improves the model; cancelling, a NaN or a crash never
touches the model store; a resumed run continues where it stopped; only the slices a person
reviewed are learned from; validation patients never leak into training.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_lggseg import adaptation, finetune, lgg_io, models, train_data, training
from napari_lggseg.preprocess import Recipe, prepare, prepare_mask
from napari_lggseg.synthetic import make_synthetic_patient
from napari_lggseg.train_data import TrainVolume, augment, split_patients
from napari_lggseg.training import StopReason, TrainConfig, train
from napari_lggseg.unet import UNet

REPO = Path(__file__).resolve().parents[1]
SMALL = Recipe(size=32, context=0)  # for tests of the loop's bookkeeping, not of learning


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI has 2 cores; tiny models gain nothing from more threads
    yield
    torch.set_num_threads(old)


def pid(k: int) -> str:
    return f"TCGA_SY_{k:04d}_20000101"


def synthetic_volumes(seeds, n_slices: int = 12, size: int = 64) -> list[TrainVolume]:
    return [
        TrainVolume(pid(s), *make_synthetic_patient(seed=s, n_slices=n_slices, size=size))
        for s in seeds
    ]


def write_synthetic_patient(
    root: Path, patient_id: str, seed: int, n_slices: int = 12, size: int = 64, masks: bool = True
) -> Path:
    """A synthetic patient written in the dataset's layout (P/P_<n>.tif, P/P_<n>_mask.tif)."""
    image, mask = make_synthetic_patient(seed=seed, n_slices=n_slices, size=size)
    folder = Path(root) / patient_id
    folder.mkdir(parents=True)
    for i in range(n_slices):
        tifffile.imwrite(folder / f"{patient_id}_{i + 1}.tif", image[i], photometric="rgb")
        if masks:
            tifffile.imwrite(folder / f"{patient_id}_{i + 1}_mask.tif", mask[i] * 255)
    return folder


def tiny_unet(recipe: Recipe = SMALL, width: int = 4, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(recipe.in_channels, 1, width)


def clone_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].contiguous(), b[k].contiguous()), k


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden staging folders too) with the sha256 of each file."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(Path(root).rglob("*"))
    }


# --------------------------------------------------------------------------- learning


def _wider_outlines(volumes: list[TrainVolume], pixels: int = 5) -> list[TrainVolume]:
    """The same patients outlined a few pixels wider, as a site that includes the FLAIR rim would."""
    from scipy import ndimage

    cross = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)  # in-plane only
    return [
        TrainVolume(
            v.patient_id, v.image, ndimage.binary_dilation(v.mask, cross, pixels).astype(np.uint8)
        )
        for v in volumes
    ]


@pytest.mark.slow
def test_fine_tuning_lowers_the_loss_and_raises_validation_dice(tiny_model_store):
    """A trained model meets a site that outlines lesions wider than its training masks (a weak
    start, Dice ~0.75): fine-tuning on the default path (few volumes, BatchNorm frozen) adapts it,
    its loss falls and its Dice on held-out patients of that site rises."""
    model, info = models.load_model(tiny_model_store)
    recipe = Recipe.from_dict(info.card["preprocessing"])
    train_vols = _wider_outlines(synthetic_volumes([21, 22, 23], size=128))
    val_vols = _wider_outlines(synthetic_volumes([31, 32], size=128))

    result = train(
        model,
        recipe,
        train_vols,
        val_vols,
        TrainConfig(
            epochs=3, steps_per_epoch=8, batch_size=8, lr=1e-3, warmup_steps=3, device="cpu"
        ),
        fine_tune=True,
    )

    before = result.history[0]["val_dice"]
    losses = [row["loss"] for row in result.history[1:]]
    assert result.stopped is StopReason.FINISHED and result.steps == 24
    assert losses[-1] < 0.8 * losses[0], losses
    assert 0.3 < before < 0.85, (
        f"the starting model should be weak but working (val Dice {before:.3f})"
    )
    assert result.best_epoch > 0 and result.best_val_dice > before + 0.05, result.history
    assert result.history[-1]["val_dice"] > before + 0.05, result.history
    assert result.val_per_patient.keys() == {pid(31), pid(32)}


# --------------------------------------------------------------------------- cancel, NaN, resume


def test_cancelled_run_leaves_the_parent_model_and_the_store_untouched(tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(store))
    parent = tiny_unet()
    card = {
        "architecture": {
            "name": "unet-buda2019",
            "width": 4,
            "in_channels": SMALL.in_channels,
            "out_channels": 1,
        },
        "preprocessing": SMALL.to_dict(),
    }
    models.save_model(parent.state_dict(), card, "parent")
    before = tree(store)

    model, info = models.load_model("parent")
    cancel = threading.Event()
    seen = []

    def progress(ev):
        if ev["kind"] == "step":
            seen.append(ev["step"])
            if ev["step"] == 3:
                cancel.set()

    result = train(
        model,
        SMALL,
        synthetic_volumes([1, 2], n_slices=8),
        synthetic_volumes([3], n_slices=8),
        TrainConfig(epochs=5, steps_per_epoch=4, batch_size=4, device="cpu"),
        progress=progress,
        cancel=cancel,
        fine_tune=True,
    )

    assert result.stopped is StopReason.CANCELLED
    assert result.steps == 3 and seen == [1, 2, 3], (
        "the run must stop at the first step after cancel"
    )
    assert tree(store) == before, (
        "a cancelled run wrote, changed or left something in the model store"
    )
    assert all(torch.isfinite(v.float()).all() for v in result.state_dict.values())
    reloaded, _ = models.load_model("parent")  # still loads: the weights match their card's hash
    assert_same_state(reloaded.state_dict(), parent.state_dict())


def test_resume_continues_the_step_count_history_and_sampling(tmp_path):
    """Stop a run after epoch 2 (as a crash or Ctrl-C would), resume it from its checkpoint:
    steps and history continue, and it ends where an uninterrupted run ends."""
    vols, val = synthetic_volumes([1, 2], n_slices=8), synthetic_volumes([3], n_slices=8)
    cfg = TrainConfig(
        epochs=4, steps_per_epoch=3, batch_size=4, lr=3e-3, warmup_steps=2, device="cpu", seed=5
    )

    straight = tiny_unet(seed=1)
    full = train(straight, SMALL, vols, val, cfg)

    ckpt = tmp_path / "run.ckpt.safetensors"
    stop = threading.Event()

    def stop_after_epoch_2(ev):
        if ev["kind"] == "epoch" and ev["epoch"] == 2:
            stop.set()

    first = train(
        tiny_unet(seed=1),
        SMALL,
        vols,
        val,
        cfg,
        progress=stop_after_epoch_2,
        cancel=stop,
        checkpoint=ckpt,
    )
    assert first.stopped is StopReason.CANCELLED and first.steps == 6 and ckpt.is_file()

    resumed_model = tiny_unet(seed=99)  # different weights: the checkpoint must replace them
    resumed = train(resumed_model, SMALL, vols, val, cfg, resume=ckpt)

    assert resumed.steps == first.steps + 6 == full.steps
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2, 3, 4]
    assert [row["step"] for row in resumed.history] == [0, 3, 6, 9, 12]
    assert resumed.history[:3] == first.history[:3]
    assert resumed.stopped is StopReason.FINISHED
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert [r["val_dice"] for r in resumed.history] == pytest.approx(
        [r["val_dice"] for r in full.history], abs=1e-6
    )


def _nan_loss(original, k):
    calls = {"n": 0}

    def loss(logits, y, kind="dice+bce"):
        calls["n"] += 1
        out = original(logits, y, kind)
        return out * float("nan") if calls["n"] > k else out

    return loss


def _nan_gradient(original, k):
    calls = {"n": 0}

    def loss(logits, y, kind="dice+bce"):
        calls["n"] += 1
        out = original(logits, y, kind)
        if calls["n"] > k:  # a finite loss whose gradient is NaN (d sqrt(s)/ds at s = 0 is inf)
            out = out + 0.0 * torch.sqrt((logits.float() * 0).sum())
        return out

    return loss


def _nan_input(original, k):
    calls = {"n": 0}

    def aug(x, y, gen, *args, **kwargs):
        calls["n"] += 1
        x, y = original(x, y, gen, *args, **kwargs)
        if (
            calls["n"] > k
        ):  # NaN pixels also poison BatchNorm's running statistics in the forward pass
            x = torch.full_like(x, float("nan"))
        return x, y

    return aug


@pytest.mark.parametrize("where", ["loss", "gradient", "input"])
def test_non_finite_values_stop_cleanly_with_the_last_good_weights(monkeypatch, where):
    k = 6  # steps 1..6 are fine, step 7 goes wrong (mid-epoch 2 of 4-step epochs)
    if where == "input":
        monkeypatch.setattr(training, "augment", _nan_input(training.augment, k))
    else:
        make = _nan_loss if where == "loss" else _nan_gradient
        monkeypatch.setattr(training, "seg_loss", make(training.seg_loss, k))
    model = tiny_unet()
    at_step: dict[int, dict] = {}

    def progress(ev):
        if ev["kind"] == "step":
            at_step[ev["step"]] = clone_state(model)

    result = train(
        model,
        SMALL,
        synthetic_volumes([1, 2], n_slices=8),
        None,
        TrainConfig(epochs=3, steps_per_epoch=4, batch_size=4, device="cpu"),
        progress=progress,
    )

    assert result.stopped is StopReason.NON_FINITE, result.message
    assert f"step {k + 1}" in result.message
    assert result.steps == k
    for v in result.state_dict.values():
        assert torch.isfinite(v.float()).all()
    assert_same_state(result.state_dict, at_step[k])
    assert_same_state(model.state_dict(), at_step[k])  # the model in memory went back too
    assert all(math.isfinite(row["loss"]) for row in result.history[1:])


# --------------------------------------------------------------------------- corrections


def _tumour_fraction(model, image, slices, recipe) -> float:
    """Fraction of the network's grid predicted as tumour on ``slices``."""
    x, _ = prepare(image, recipe)
    model.eval()
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(x[slices])))[:, 0]
    return float((prob >= 0.5).float().mean())


def _true_fraction(truth, image, slices, recipe) -> float:
    _, geom = prepare(image, recipe)
    return float((prepare_mask(truth, geom)[slices] >= 0.5).mean())


@pytest.mark.slow
def test_only_reviewed_slices_of_a_corrections_folder_are_learned(tmp_path, tiny_model_store):
    """The unreviewed slices of a corrections folder carry wrong labels (whole slices marked as
    tumour): fine-tuning on the folder must not learn them, while a control run told that the
    whole volume was reviewed does."""
    n = 16
    source = write_synthetic_patient(
        tmp_path / "data", pid(40), seed=40, n_slices=n, size=128, masks=False
    )
    image, truth = make_synthetic_patient(seed=40, n_slices=n, size=128)
    reviewed, unreviewed = list(range(0, n, 2)), list(range(1, n, 2))
    corrected = truth.copy()
    corrected[unreviewed] = 1  # wrong: the whole slice
    folders = {}
    for whole in (False, True):
        folders[whole] = tmp_path / f"corrections-whole-{whole}"
        lgg_io.write_corrections(
            folders[whole],
            corrected,
            pid(40),
            source,
            reviewed_slices=reviewed,
            whole_volume_reviewed=whole,
            model=tiny_model_store,
        )

    [vol] = train_data.volumes_from_path(folders[False])
    assert vol.source == "corrections" and list(vol.labelled_slices) == reviewed
    np.testing.assert_array_equal(vol.image, image)
    np.testing.assert_array_equal(vol.mask, corrected)

    fractions, summaries = {}, {}
    for whole, folder in folders.items():
        model, info = models.load_model(tiny_model_store)
        recipe = Recipe.from_dict(info.card["preprocessing"])
        result = train(
            model,
            recipe,
            train_data.load_volumes(folder),
            None,
            TrainConfig(
                epochs=1, steps_per_epoch=20, batch_size=8, lr=1e-3, warmup_steps=3, device="cpu"
            ),
            fine_tune=True,
        )
        fractions[whole] = _tumour_fraction(model, image, unreviewed, recipe)
        summaries[whole] = result.data_summary

    assert (
        summaries[False]["slices"] == len(reviewed) == summaries[False]["slices_corrected_by_hand"]
    )
    assert summaries[True]["slices"] == n
    true_fraction = _true_fraction(truth, image, unreviewed, recipe)
    assert fractions[False] < true_fraction + 0.05, (fractions, true_fraction)
    assert fractions[True] > 0.4, f"the control run should learn the wrong labels: {fractions}"


# --------------------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize(
    ("n_volumes", "fine_tune", "frozen"), [(2, True, True), (9, True, False), (2, False, False)]
)
def test_batchnorm_statistics_stay_frozen_when_fine_tuning_a_few_volumes(
    n_volumes, fine_tune, frozen
):
    """A few corrected volumes cannot re-estimate BatchNorm statistics: fine-tuning on <= 8 keeps
    them (over several epochs, with validation in between); more volumes, or training, move them."""
    model = tiny_unet()
    stats = {
        k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k
    }
    train(
        model,
        SMALL,
        synthetic_volumes(range(1, n_volumes + 1), n_slices=6, size=32),
        synthetic_volumes([20], n_slices=6, size=32),
        TrainConfig(epochs=3, steps_per_epoch=2, batch_size=4, device="cpu"),
        fine_tune=fine_tune,
    )
    after = model.state_dict()
    unchanged = [k for k in stats if torch.equal(stats[k], after[k])]
    if frozen:
        assert unchanged == list(stats)
    else:
        assert unchanged == []


# --------------------------------------------------------------------------- splits


def _ids(counts: dict[str, int]) -> list[str]:
    return [f"TCGA_{inst}_{i:04d}_20000101" for inst, n in counts.items() for i in range(n)]


def test_split_is_patient_level_seeded_and_stratified_by_institution():
    counts = {"AA": 20, "BB": 10, "CC": 4, "DD": 2, "EE": 1}
    ids = _ids(counts)
    for seed in range(20):
        tr, val = split_patients(
            ids + ids[:3], val_fraction=0.15, seed=seed
        )  # duplicates are one patient
        assert not set(tr) & set(val)
        assert sorted(tr + val) == sorted(ids)
        assert len(val) == round(len(ids) * 0.15)
        assert split_patients(list(reversed(ids)), 0.15, seed) == (tr, val), "same seed, same split"
        inst_val = {lgg_io.institution_of(p) for p in val}
        inst_train = {lgg_io.institution_of(p) for p in tr}
        assert {"AA", "BB", "CC", "DD"} <= inst_val, (seed, val)
        assert {"AA", "BB", "CC", "DD"} <= inst_train  # each keeps patients to learn from
    splits = {tuple(split_patients(ids, 0.15, seed)[1]) for seed in range(5)}
    assert len(splits) > 1, "the seed should change the split"


def test_split_without_institutions_or_with_too_few_patients():
    assert split_patients(["a", "b"], 0.15, 0) == (["a", "b"], [])  # 0.3 patients: no validation
    tr, val = split_patients([f"p{i}" for i in range(10)], 0.2, 3)
    assert len(val) == 2 and len(tr) == 8 and not set(tr) & set(val)
    assert split_patients(["x"], 0.5, 0) == (["x"], [])


def test_committed_splits_are_what_split_patients_gives():
    """training/splits.json (which the shipped model was trained on) is reproducible."""
    splits = json.loads((REPO / "training" / "splits.json").read_text())
    ids = splits["train"] + splits["validation"] + splits["test"]
    seed = splits["seed"]
    rest, test = split_patients(ids, 14 / len(ids), seed)
    train_ids, val = split_patients(rest, 10 / len(rest), seed + 1)
    assert (test, val, train_ids) == (splits["test"], splits["validation"], splits["train"])


# --------------------------------------------------------------------------- augmentation


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm() + 1e-12))


def test_augment_keeps_shapes_keeps_masks_in_range_and_moves_image_and_mask_together():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, 32, 32)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(32, 2, generator=torch.Generator().manual_seed(1)) * 12 + 10
    y = (
        ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) < 16
    ).float()  # off-centre discs
    x[:, 1] = y * 3  # FLAIR shows the lesion: after augmentation they must still line up
    xa, ya = augment(x, y, gen, ("pre-contrast", "FLAIR", "post-contrast"), substitute=0.0)
    assert xa.shape == x.shape and ya.shape == y.shape
    assert float(ya.min()) >= 0 and float(ya.max()) <= 1
    assert not torch.equal(xa, x)
    assert all(_corr(xa[i, 1], ya[i]) > 0.9 for i in range(32))
    assert torch.equal(x[:, 1], y * 3), "augment must not change its inputs"


def test_augment_substitutes_pre_and_post_contrast_by_flair():
    seqs = ("pre-contrast", "FLAIR", "post-contrast")
    x = torch.randn(400, 3, 32, 32)  # independent channels
    y = torch.zeros(400, 32, 32)

    def substituted(xa):
        pre = torch.tensor([_corr(xa[i, 0], xa[i, 1]) > 0.99 for i in range(len(xa))])
        post = torch.tensor([_corr(xa[i, 2], xa[i, 1]) > 0.99 for i in range(len(xa))])
        return pre, post

    pre, post = substituted(
        augment(x, y, torch.Generator().manual_seed(1), seqs, substitute=1.0)[0]
    )
    assert bool((pre | post).all()) and bool((pre & post).any()) and bool((pre & ~post).any())
    pre, post = substituted(
        augment(x, y, torch.Generator().manual_seed(1), seqs, substitute=0.4)[0]
    )
    assert 0.3 < float((pre | post).float().mean()) < 0.5
    pre, post = substituted(
        augment(x, y, torch.Generator().manual_seed(1), seqs, substitute=0.0)[0]
    )
    assert not bool((pre | post).any())
    # FLAIR-only models (one sequence plus context slices): nothing to substitute, shapes kept
    xf = torch.randn(8, 3, 32, 32)
    out, _ = augment(xf, y[:8], torch.Generator().manual_seed(1), ("FLAIR",), substitute=1.0)
    assert out.shape == xf.shape
    assert all(_corr(out[i, 0], out[i, 1]) < 0.5 for i in range(8))


# --------------------------------------------------------------------------- fine-tuning round


def test_fine_tune_config_is_a_short_gentle_round():
    """The widget's default round: a fixed, small number of steps, capped at about a minute, with
    BatchNorm frozen for a few volumes (what test_batchnorm... checks the loop honours), held
    near the parent's weights."""
    cfg = finetune.fine_tune_config(1)
    assert cfg.epochs * cfg.steps_per_epoch <= 60 and cfg.minutes is not None and cfg.minutes < 1.0
    assert cfg.freeze_bn and not finetune.fine_tune_config(20).freeze_bn
    # a new site without forgetting (PROJECT.md): pulled toward the parent, averaged with it
    assert cfg.l2sp > 0 and cfg.weight_decay == 0 and cfg.parent_share == 0.5


# --------------------------------------------------------------------------- new site, old sites


def _distance(model, parent: dict) -> float:
    return sum(float((p.detach() - parent[k]).pow(2).sum()) for k, p in model.named_parameters())


def test_l2sp_keeps_the_fine_tuned_weights_near_the_parents():
    """L2-SP pulls every weight back toward the parent's: the same run moves the weights less
    with the penalty, and the parent is the anchor even when the run is resumed."""
    vols = synthetic_volumes([1, 2], n_slices=6, size=32)
    cfg = dict(epochs=2, steps_per_epoch=4, batch_size=4, lr=3e-3, warmup_steps=1, device="cpu")
    moved = {}
    for alpha in (0.0, 10.0):
        model = tiny_unet()
        parent = clone_state(model)
        train(model, SMALL, vols, None, TrainConfig(**cfg, l2sp=alpha), fine_tune=True)
        moved[alpha] = _distance(model, parent)
    assert 0 < moved[10.0] < 0.5 * moved[0.0], moved


def test_l2sp_penalty_is_zero_at_the_parent_and_grows_with_the_distance():
    model = tiny_unet()
    anchor = {k: p.detach().float().clone() for k, p in model.named_parameters()}
    assert adaptation.l2sp_penalty(model, anchor, 1.0).item() == 0.0
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    n = next(model.parameters()).numel()
    assert adaptation.l2sp_penalty(model, anchor, 2.0).item() == pytest.approx(2.0 * n * 0.01, 1e-4)


def test_site_batchnorm_takes_the_new_volumes_statistics():
    """BatchNorm statistics re-estimated on the new volumes' slices (all of them, labelled or
    not), blended with the parent's by ``share``; the fine-tuning run applies them before its
    first step and keeps them (BatchNorm frozen)."""
    vols = synthetic_volumes([3], n_slices=6, size=32)
    vols[0].labelled = np.zeros(6, bool)
    vols[0].labelled[2] = True  # one labelled slice: the statistics still see all six
    data = train_data.prepare_volumes(vols, SMALL)
    key = "encoder1.enc1norm1.running_mean"
    parent = tiny_unet().state_dict()[key].clone()
    site, half = tiny_unet(), tiny_unet()
    assert adaptation.site_batchnorm(site, data, torch.device("cpu"), 1.0) == 6
    adaptation.site_batchnorm(half, data, torch.device("cpu"), 0.5)
    site_mean = site.state_dict()[key]
    assert not torch.allclose(site_mean, parent)
    assert torch.allclose(half.state_dict()[key], (site_mean + parent) / 2, atol=1e-6)

    model = tiny_unet()
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, device="cpu", site_bn=1.0)
    train(model, SMALL, vols, None, cfg, fine_tune=True)
    assert torch.allclose(model.state_dict()[key], site_mean, atol=1e-5)


def test_parent_share_averages_the_result_with_the_parent_and_validates_that():
    """``parent_share`` returns that share of the parent's weights averaged with the fine-tuned
    ones (the same run otherwise), and the validation Dice reported is the averaged model's."""
    vols = synthetic_volumes([4, 5], n_slices=6, size=32)
    parent = clone_state(tiny_unet())

    def run(share, val=None):
        cfg = TrainConfig(epochs=2, steps_per_epoch=3, batch_size=4, lr=3e-3, warmup_steps=1,
                          device="cpu", parent_share=share)  # fmt: skip
        return train(tiny_unet(), SMALL, vols, val, cfg, fine_tune=True)

    tuned, half = run(0.0).state_dict, run(0.5).state_dict  # no validation: the last weights
    key = "encoder1.enc1conv1.weight"
    assert not torch.allclose(tuned[key], parent[key])
    assert torch.allclose(half[key], (tuned[key] + parent[key]) / 2, atol=1e-6)

    val = synthetic_volumes([6], n_slices=6, size=32)
    result = run(0.5, val)
    check = tiny_unet()
    check.load_state_dict(result.state_dict)
    per = training.validation_dice(
        check, train_data.prepare_volumes(val, SMALL), torch.device("cpu")
    )
    assert result.best_val_dice == pytest.approx(float(np.mean(list(per.values()))))

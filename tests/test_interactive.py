"""Click correction without a viewer: the simulated-click protocol, the interactive model made
from an automatic one, and ClickSession (clicks, undo, painted slices, bad clicks, reuse).

The interactive model here is the session's tiny model turned interactive and fine-tuned for a
few dozen steps with simulated clicks on synthetic patients (the same function that trains the
shipped one), so a click really has to move the mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lggseg import models
from napari_lggseg.click_sim import clicks_to_reach, farthest_from_boundary, next_click
from napari_lggseg.click_training import ClickTrainConfig, first_masks, train_clicks
from napari_lggseg.interactive import (
    ClickIgnored,
    ClickModel,
    ClickSession,
    click_change,
    make_interactive,
)
from napari_lggseg.model_cards import card_problem
from napari_lggseg.synthetic import make_synthetic_patient
from napari_lggseg.train_data import TrainVolume, prepare_volumes


@pytest.fixture(scope="module")
def click_model(tiny_model_store) -> ClickModel:
    torch.manual_seed(0)
    cm = ClickModel.from_automatic(tiny_model_store)
    vols = [
        TrainVolume(f"SYNTH_{s}", *make_synthetic_patient(seed=s, n_slices=16, size=128))
        for s in range(1, 7)
    ]
    data = prepare_volumes(vols, cm.recipe)
    base, _ = models.load_model(tiny_model_store)
    cfg = ClickTrainConfig(steps=40, batch_size=8, lr=3e-3, warmup_steps=5)
    train_clicks(cm.net, cm.recipe, cm.encoding, data, first_masks(base, data), cfg, log=None)
    return cm


@pytest.fixture
def patient():
    """A synthetic patient the click model never saw: (image, truth bool)."""
    image, mask = make_synthetic_patient(seed=21, n_slices=16, size=128)
    return image, mask > 0


def _centre_slice(truth: np.ndarray) -> int:
    return int(np.argmax(truth.sum(axis=(1, 2))))


# --------------------------------------------------------------------------- the protocol


def test_protocol_clicks_the_deepest_voxel_of_the_largest_error_region():
    truth = np.zeros((24, 40, 40), bool)
    truth[1:8, 3:10, 10:17] = True  # a 7-voxel cube missed: the largest region, centre (4, 6, 13)
    pred = np.zeros_like(truth)
    pred[9:11, 20:24, 20:24] = True  # 2 x 4 x 4 false: smaller
    assert next_click(pred, truth) == ((4, 6, 13), True)
    # a false 9-voxel cube is now the largest region: a negative click at its centre
    pred[12:21, 20:29, 25:34] = True
    assert next_click(pred, truth) == ((16, 24, 29), False)
    assert next_click(truth, truth) is None


def test_protocol_measures_distance_to_the_boundary_not_to_the_box():
    region = np.zeros((20, 20), bool)  # 2-D, as the training clicks use it
    region[2:18, 2:16] = True  # 16 x 14: its deepest pixels are in the middle
    region[9:11, 16:19] = True  # a thin spur does not pull the click
    y, x = farthest_from_boundary(region)
    assert 8 <= y <= 11 and 8 <= x <= 9
    assert clicks_to_reach([0.7, 0.86, 0.91], 0.85) == 1
    assert clicks_to_reach([0.7, 0.8], 0.9) == 1  # never reached: the largest click count


# --------------------------------------------------------------------------- the model


def test_zero_click_weights_give_the_automatic_model_exactly(tiny_model_store):
    base, info = models.load_model(tiny_model_store)
    inet, card = make_interactive(base, dict(info.card, name=info.name))
    assert card_problem(dict(card, sha256="x")) is None
    assert card["role"] == "interactive" and card["default"] is False
    x = torch.randn(2, base.in_channels, 64, 64)
    extra = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(inet(torch.cat([x, extra], 1)), base(x))


def test_card_checks_the_click_channels(tiny_model_store):
    _, info = models.load_model(tiny_model_store)
    card = make_interactive(models.load_model(tiny_model_store)[0], info.card)[1]
    bad = dict(card, interactive=dict(card["interactive"], extra_channels=["clicks"]))
    assert "extra_channels" in card_problem(bad)
    wrong = dict(card, architecture=dict(card["architecture"], in_channels=4))
    assert "the clicks 3 more" in card_problem(wrong)


def test_segmenter_refuses_an_interactive_model_clearly(click_model, tmp_path, monkeypatch):
    from napari_lggseg.inference import Segmenter

    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(tmp_path))
    card = {k: v for k, v in click_model.card.items() if k not in ("name", "sha256")}
    models.save_model(click_model.net.state_dict(), card, "tiny-clicks")
    with pytest.raises(models.ModelError, match="interactive .*cannot segment on its own"):
        Segmenter.from_store("tiny-clicks", device="cpu")
    loaded = ClickModel.from_store("tiny-clicks")
    assert loaded.first_step == click_model.first_step
    assert [i.name for i in models.list_models()][-1] == "tiny-clicks"


def test_click_model_refuses_an_automatic_model(tiny_model_store):
    with pytest.raises(models.ModelError, match="automatic model, not an interactive"):
        ClickModel.from_store(tiny_model_store)


# --------------------------------------------------------------------------- clicks


def test_positive_click_adds_tumour_where_it_was_missed(click_model, patient):
    image, truth = patient
    zc = _centre_slice(truth)
    start = truth.copy()
    start[zc - 1 : zc + 2] = False  # three slices missed
    session = ClickSession(click_model, device="cpu")
    session.start(image, mask=start)
    (z, y, x), positive = next_click(start, truth)
    assert positive and abs(z - zc) <= 1
    after = session.add_click(z, y, x, positive=True)
    found = (after & truth)[zc - 1 : zc + 2].sum()
    assert found > 0.5 * truth[zc - 1 : zc + 2].sum()
    assert after[z, y - 1 : y + 2, x - 1 : x + 2].all()  # tumour at and around the click
    assert session.clicks == [[z, y, x, True]]
    assert z in session.changed_slices


def test_negative_click_removes_a_false_region(click_model, patient):
    image, truth = patient
    zc = _centre_slice(truth)
    ys, xs = np.nonzero(truth[zc])
    # a false disk in the brain, mirrored across the head from the lesion
    cy, cx = 127 - int(ys.mean()), 127 - int(xs.mean())
    yy, xx = np.mgrid[:128, :128]
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 64) & ~truth[zc]
    start = truth.copy()
    start[zc] |= disk
    session = ClickSession(click_model, device="cpu")
    session.start(image, mask=start)
    after = session.add_click(zc, cy, cx, positive=False)
    assert after[zc][disk].sum() < 0.25 * disk.sum()
    assert (after & truth).sum() > 0.8 * truth.sum()


def test_a_click_changes_only_its_kind_and_only_what_reaches_it():
    """The merge rule on its own: the network's re-prediction of the window adds one blob near
    the click and one far away, and drops a correct region; a positive click takes the near blob
    only, a negative click only removes what reaches it."""
    old = np.zeros((5, 64, 64), bool)
    old[:, 40:50, 40:50] = True  # correct mask elsewhere in the window
    new = np.zeros_like(old)  # the re-prediction lost it ...
    new[1:4, 10:16, 10:16] = True  # ... found tumour at the click ...
    new[2, 50:60, 5:12] = True  # ... and a blob far from the click
    added = click_change(old, new, (2, 12, 12), positive=True, radius=8)
    assert np.array_equal(added, old | (new & (np.arange(64)[:, None] < 20)[None]))
    removed = click_change(old, new, (2, 45, 45), positive=False, radius=3)
    assert not removed[:, 40:50, 40:50].any() and not removed[:, :20].any()  # removal only
    assert np.array_equal(click_change(old, new, (2, 30, 30), True, radius=3), old)


def test_positive_clicks_never_remove_and_negative_clicks_never_add(click_model, patient):
    image, truth = patient
    zc = _centre_slice(truth)
    start = truth.copy()
    start[zc - 1 : zc + 2] = False  # missed slices, and a false disk on the one above them
    yy, xx = np.mgrid[:128, :128]
    ys, xs = np.nonzero(truth[zc])
    cy, cx = 127 - int(ys.mean()), 127 - int(xs.mean())
    start[zc - 2] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 64
    session = ClickSession(click_model, device="cpu")
    session.start(image, mask=start)
    (z, y, x), positive = next_click(start[zc - 1 : zc + 2], truth[zc - 1 : zc + 2])
    grown = session.add_click(z + zc - 1, y, x, positive=True)
    assert (grown >= start).all() and (grown & ~start).any()
    shrunk = session.add_click(zc - 2, cy, cx, positive=False)
    assert (shrunk <= grown).all() and (grown & ~shrunk).any()


def test_perturbed_first_masks_are_wrong_in_each_way():
    from napari_lggseg.click_training import perturbed

    truth = torch.zeros(64, 64)
    truth[20:40, 24:44] = 1
    masks = [perturbed(truth, kind, np.random.default_rng(3)).numpy() > 0 for kind in range(4)]
    t = truth.numpy() > 0
    grown, shrunk, missing, blob = masks
    assert (grown >= t).all() and grown.sum() > t.sum()
    assert (shrunk <= t).all() and 0 < shrunk.sum() < t.sum()
    assert not missing.any()
    assert (blob >= t).all() and blob.sum() > t.sum()
    empty = perturbed(torch.zeros(64, 64), 3, np.random.default_rng(3)).numpy()
    assert empty.any()  # a slice without tumour gets a false disk


def test_undo_restores_each_mask_exactly(click_model, patient):
    image, truth = patient
    session = ClickSession(click_model, device="cpu")
    masks = [session.start(image, mask=np.zeros_like(truth))]
    for _ in range(3):
        (z, y, x), positive = next_click(masks[-1], truth)
        masks.append(session.add_click(z, y, x, positive))
    assert not np.array_equal(masks[0], masks[-1])
    for k in range(3, 0, -1):
        assert len(session.clicks) == k
        assert np.array_equal(session.undo(), masks[k - 1])
    assert session.clicks == [] and session.changed_slices == []
    assert np.array_equal(session.undo(), masks[0])  # nothing left to undo: the mask as is
    # the click maps went back too: the same click again gives the same mask
    (z, y, x), positive = next_click(masks[0], truth)
    assert np.array_equal(session.add_click(z, y, x, positive), masks[1])


def test_painted_slices_never_change(click_model, patient):
    image, truth = patient
    zc = _centre_slice(truth)
    start = np.zeros_like(truth)
    session = ClickSession(click_model, device="cpu")
    session.start(image, mask=start, locked_slices=[zc - 1, zc + 1])
    (_, y, x), _ = next_click(start[zc : zc + 1], truth[zc : zc + 1])
    after = session.add_click(zc, y, x, positive=True)
    assert after[zc].any()  # the click did act on its own slice
    assert not after[zc - 1].any() and not after[zc + 1].any()
    assert zc - 1 not in session.changed_slices
    with pytest.raises(ClickIgnored, match="painted by hand .*the paint wins"):
        session.add_click(zc + 1, y, x, positive=True)
    assert np.array_equal(session.mask, after) and len(session.clicks) == 1


def test_clicks_outside_the_volume_or_the_head_are_ignored(click_model, patient):
    image, truth = patient
    session = ClickSession(click_model, device="cpu")
    start = session.start(image, mask=truth)
    for z, y, x in ((16, 5, 5), (3, -1, 5), (3, 5, 128)):
        with pytest.raises(ClickIgnored, match="outside the volume"):
            session.add_click(z, y, x, positive=True)
    with pytest.raises(ClickIgnored, match="outside the head"):
        session.add_click(8, 0, 0, positive=True)
    assert np.array_equal(session.mask, start) and session.clicks == []


def test_a_session_is_reused_across_volumes(click_model, patient):
    image, truth = patient
    session = ClickSession(click_model, device="cpu")
    session.start(image, mask=truth)
    session.add_click(*next_click(np.zeros_like(truth), truth)[0], positive=True)
    other, other_truth = make_synthetic_patient(seed=22, n_slices=10, size=96)
    flair_only = other[..., 1]  # (Z, H, W) FLAIR, as Segmenter.segment takes it
    mask = session.start(flair_only, mask=np.zeros((10, 96, 96), bool))
    assert mask.shape == (10, 96, 96) and session.clicks == [] and session.changed_slices == []
    (z, y, x), _ = next_click(mask, other_truth > 0)
    assert session.add_click(z, y, x, True).shape == (10, 96, 96)
    with pytest.raises(ValueError, match="mask has shape"):
        session.start(image, mask=np.zeros((3, 4, 5), bool))


def test_start_without_a_mask_runs_the_automatic_first_step(click_model, patient):
    from napari_lggseg.inference import Segmenter

    image, _ = patient
    session = ClickSession(click_model, device="cpu")
    auto = Segmenter.from_store(click_model.first_step, device="cpu").segment(image).mask > 0
    assert np.array_equal(session.start(image), auto)


def test_paint_after_a_click_is_kept_by_undo_and_seen_by_the_next_click(click_model, patient):
    """The viewer's path: the person paints a slice a click changed; the session takes the
    paint (set_slices) and locks it (set_locked); undo then restores every other slice exactly
    and leaves the paint."""
    image, truth = patient
    zc = _centre_slice(truth)
    start = truth.copy()
    start[zc - 1 : zc + 2] = False
    session = ClickSession(click_model, device="cpu")
    session.start(image, mask=start)
    (z, y, x), _ = next_click(start, truth)
    after = session.add_click(z, y, x, True)
    assert set(session.last_changed) == set(session.changed_slices) and z in session.last_changed
    painted = after[z + 1].copy()
    painted[:20, :20] = True  # a stroke of the brush
    session.set_slices([z + 1], [painted])
    session.set_locked([z + 1])
    assert session.locked_slices == [z + 1]
    undone = session.undo()
    assert np.array_equal(undone[z + 1], painted)
    others = [k for k in range(len(start)) if k != z + 1]
    assert np.array_equal(undone[others], start[others])
    assert z + 1 not in session.last_changed and z in session.last_changed
    session.set_locked([])  # the stroke undone with napari's Ctrl-Z: the slice is free again
    session.set_slices([z + 1], [start[z + 1]])
    assert np.array_equal(session.add_click(z, y, x, True), after)  # the same click, same mask


def test_check_click_words_every_refusal_once():
    from napari_lggseg.interactive import check_click

    check_click(1, 2, 3, (4, 5, 6), locked=[0])
    with pytest.raises(ClickIgnored, match=r"\(4, 2, 3\) is outside the volume \(4, 5, 6\)"):
        check_click(4, 2, 3, (4, 5, 6))
    with pytest.raises(ClickIgnored, match="slice 0 was painted by hand"):
        check_click(0, 2, 3, (4, 5, 6), locked={0})

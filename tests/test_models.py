"""The model store: saving is atomic and never replaces a model, shipped models are read-only,
exported models come back intact, and a damaged or unreachable model gives a clear error."""

from __future__ import annotations

import json

import pooch
import pytest
import torch

from napari_lggseg import models
from napari_lggseg.preprocess import Recipe
from napari_lggseg.unet import UNet


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty user store and an empty shipped folder (the real shipped weights stay out of it)."""
    user, shipped = tmp_path / "user-models", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("LGGSEG_MODEL_DIR", str(user))
    monkeypatch.setattr(models, "SHIPPED_DIR", shipped)
    return user, shipped


def _card(**extra) -> dict:
    recipe = Recipe(size=32, context=0)
    return {
        "architecture": {
            "name": "unet-buda2019",
            "width": 4,
            "in_channels": recipe.in_channels,
            "out_channels": 1,
        },
        "preprocessing": recipe.to_dict(),
        "metrics": {"val_mean_dice": 0.5},
        "parent": None,
        **extra,
    }


def _weights(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return UNet(3, 1, 4).state_dict()


def _save(name: str, root=None, seed: int = 0, **card_extra) -> models.ModelInfo:
    return models.save_model(_weights(seed), _card(**card_extra), name, root=root)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_save_list_get_load(store):
    user, _ = store
    info = _save("mine")
    assert info.path == user / "mine" and not info.shipped
    assert sorted(p.name for p in user.iterdir()) == ["mine"], "a staging folder was left behind"
    assert sorted(p.name for p in info.path.iterdir()) == [models.CARD, models.WEIGHTS]
    card = json.loads((info.path / models.CARD).read_text())
    assert card["name"] == "mine" and card["created"]
    assert card["sha256"] == models.sha256_of(info.path / models.WEIGHTS)
    assert [i.name for i in models.list_models()] == ["mine"]
    assert models.get_model("mine").val_dice == 0.5
    model, loaded = models.load_model("mine")
    assert not model.training
    assert _same_weights(model.state_dict(), _weights())
    assert loaded.card["preprocessing"]["size"] == 32


def test_save_half_keeps_batchnorm_statistics_in_float32(store):
    info = models.save_model(_weights(), _card(), "halved", half=True)
    from safetensors.torch import load_file

    stored = load_file(str(info.path / models.WEIGHTS))
    assert stored["encoder1.enc1conv1.weight"].dtype == torch.float16
    assert stored["encoder1.enc1norm1.running_var"].dtype == torch.float32
    model, _ = models.load_model("halved")
    assert model.encoder1.enc1conv1.weight.dtype == torch.float32


def test_existing_names_are_never_replaced(store):
    user, _ = store
    first = _save("mine", seed=0)
    with pytest.raises(models.ModelError, match="'mine' already exists"):
        _save("mine", seed=1)
    assert _same_weights(models.load_model("mine")[0].state_dict(), _weights(0))
    assert sorted(p.name for p in user.iterdir()) == ["mine"]
    assert first.card["sha256"] == models.get_model("mine").card["sha256"]
    assert models.unique_name("mine") == "mine-v2"
    _save("mine-v2")
    assert models.unique_name("mine") == "mine-v3"
    assert models.unique_name("mine-v2") == "mine-v3"
    assert models.unique_name("other") == "other"


@pytest.mark.parametrize("bad", ["../escape", "", "with space", "-leading-dash", "a" * 90])
def test_bad_names_are_refused(store, bad):
    with pytest.raises(models.ModelError, match="model name"):
        _save(bad)
    assert not store[0].exists() or not any(store[0].iterdir())


def test_unknown_model_lists_what_there_is(store):
    _save("alpha")
    with pytest.raises(models.ModelError, match=r"unknown model 'beta' \(available: alpha\)"):
        models.get_model("beta")


def test_rename_and_delete(store):
    user, _ = store
    _save("old")
    _save("taken", seed=1)
    with pytest.raises(models.ModelError, match="'taken' already exists"):
        models.rename_model("old", "taken")
    info = models.rename_model("old", "new")
    assert info.name == "new" and (user / "new").is_dir() and not (user / "old").exists()
    assert json.loads((user / "new" / models.CARD).read_text())["name"] == "new"
    assert _same_weights(
        models.load_model("new")[0].state_dict(), _weights(0)
    )  # hash still matches
    with pytest.raises(models.ModelError, match="unknown model 'old'"):
        models.get_model("old")
    models.delete_model("new")
    assert sorted(p.name for p in user.iterdir()) == ["taken"], "delete left something behind"
    with pytest.raises(models.ModelError, match="unknown model 'new'"):
        models.delete_model("new")


def test_shipped_models_are_read_only(store, tmp_path):
    _, shipped = store
    _save("plain-shipped", root=shipped)
    _save("factory", root=shipped, default=True)
    _save("user-one")
    infos = models.list_models()
    assert [(i.name, i.shipped) for i in infos] == [
        ("factory", True),
        ("plain-shipped", True),
        ("user-one", False),
    ]
    assert models.default_model_name() == "factory"
    for action in (
        lambda: models.rename_model("factory", "mine"),
        lambda: models.delete_model("factory"),
    ):
        with pytest.raises(models.ModelError, match="'factory' is a shipped model"):
            action()
    assert (shipped / "factory" / models.WEIGHTS).is_file()
    with pytest.raises(models.ModelError, match="already exists"):
        _save("factory")  # a user model may not shadow a shipped one
    exported = models.export_model("factory", tmp_path)
    assert (exported / models.WEIGHTS).is_file()


def test_export_import_round_trip(store, tmp_path):
    user, _ = store
    _save("original", seed=3)
    dest = tmp_path / "usb-stick"
    dest.mkdir()
    exported = models.export_model("original", dest)
    assert exported == dest / "original"
    with pytest.raises(models.ModelError, match="already exists"):
        models.export_model("original", dest)
    with pytest.raises(models.ModelError, match="'original' already exists"):
        models.import_model(exported)
    info = models.import_model(exported, name="colleague")
    assert info.path == user / "colleague" and info.card["name"] == "colleague"
    assert _same_weights(models.load_model("colleague")[0].state_dict(), _weights(3))

    # a damaged copy is refused and nothing is added to the store
    data = bytearray((exported / models.WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (exported / models.WEIGHTS).write_bytes(bytes(data))
    before = sorted(p.name for p in user.iterdir())
    with pytest.raises(models.ModelError, match="sha256"):
        models.import_model(exported, name="damaged")
    assert sorted(p.name for p in user.iterdir()) == before
    with pytest.raises(models.ModelError, match="not a model folder"):
        models.import_model(tmp_path / "usb-stick")


def test_download_reference_offline_is_a_clear_error(store, monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection: network is unreachable")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    with pytest.raises(models.ModelError) as err:
        models.download_reference()
    msg = str(err.value)
    assert "could not download the reference weights" in msg and "offline" in msg
    assert models.REFERENCE_URL in msg
    assert models.list_models() == []


# --------------------------------------------------------------------------- bad models


def _write_raw_model(folder, card, weights: bytes | None = None) -> None:
    """A model folder written by hand (as a user or another tool might), hash made to match."""
    from safetensors.torch import save as save_bytes

    folder.mkdir(parents=True)
    data = weights if weights is not None else save_bytes(_weights())
    (folder / models.WEIGHTS).write_bytes(data)
    if isinstance(card, dict):
        import hashlib

        card = json.dumps(dict(card, sha256=hashlib.sha256(data).hexdigest()))
    (folder / models.CARD).write_text(card)


BAD_CARDS = {
    "not an object": ("[1, 2, 3]", "not a JSON object"),
    "missing key": (json.dumps({"architecture": _card()["architecture"]}), "preprocessing"),
    "unknown architecture": (
        dict(_card(), architecture={"name": "resnet50", "width": 4, "in_channels": 3}),
        "unknown architecture 'resnet50'",
    ),
    "truncated": (json.dumps(_card())[:40], "not valid JSON"),
}


def test_bad_cards_never_break_the_store(store):
    user, shipped = store
    _save("factory", root=shipped, default=True)
    _save("good")
    for k, (card, _) in enumerate(BAD_CARDS.values()):
        _write_raw_model(user / f"bad-{k}", card)
    assert [i.name for i in models.list_models()] == ["factory", "good"]  # usable models only
    assert models.default_model_name() == "factory"
    models.load_model("factory")
    listed = models.list_models(unusable=True)
    assert [i.name for i in listed][:2] == ["factory", "good"]
    problems = {i.name: i.problem for i in listed if i.problem}
    for k, (_, words) in enumerate(BAD_CARDS.values()):
        name = f"bad-{k}"
        assert words in problems[name], problems[name]
        assert str(user / name / models.CARD) in problems[name]
        with pytest.raises(models.ModelError, match=f"{name}.*unusable"):
            models.load_model(name)
        assert models.unique_name(name) == f"{name}-v2"  # its name stays taken
        models.delete_model(name)
    assert sorted(p.name for p in user.iterdir()) == ["good"]


def test_unknown_architecture_is_never_built_as_a_unet(store):
    with pytest.raises(models.ModelError, match="unknown architecture 'transformer'"):
        models.build_model(dict(_card(), architecture={"name": "transformer", "width": 4}))


def _exported(tmp_path, card=None, weights: bytes | None = None):
    folder = tmp_path / "usb" / "theirs"
    _write_raw_model(folder, card or _card(), weights)
    return folder


@pytest.mark.parametrize(
    "case",
    ["unknown architecture", "weights do not fit", "not safetensors", "card not an object"],
)
def test_import_checks_card_and_weights_before_accepting(store, tmp_path, case):
    user, _ = store
    if case == "unknown architecture":
        folder = _exported(tmp_path, dict(_card(), architecture={"name": "vit", "width": 4}))
        words, named = "unknown architecture 'vit'", models.CARD
    elif case == "weights do not fit":
        folder = _exported(
            tmp_path, dict(_card(), architecture=dict(_card()["architecture"], width=8))
        )
        words, named = "do not fit", models.WEIGHTS
    elif case == "not safetensors":
        folder = _exported(tmp_path, weights=b"PK\x03\x04 a zip file, not safetensors" * 8)
        words, named = "not a readable safetensors file", models.WEIGHTS
    else:
        folder = _exported(tmp_path, "[]")
        words, named = "not a JSON object", models.CARD
    with pytest.raises(models.ModelError) as err:
        models.import_model(folder, name="imported")
    assert words in str(err.value) and str(folder / named) in str(err.value), str(err.value)
    assert not user.exists() or not any(user.iterdir()), "something was added to the store"


def test_weights_that_do_not_fit_are_a_model_error(store):
    user, _ = store
    _write_raw_model(
        user / "misfit", dict(_card(), architecture=dict(_card()["architecture"], width=8))
    )
    with pytest.raises(models.ModelError, match="do not fit") as err:
        models.load_model("misfit")
    assert str(user / "misfit" / models.WEIGHTS) in str(err.value)


def test_staging_left_by_a_killed_process_is_cleaned_when_the_store_is_used(store):
    """A process killed while saving leaves its staging folder; the next use of the store removes
    it once that process is gone, and an old leftover of an earlier version once it is an hour old."""
    import os
    import subprocess
    import sys
    import time

    user, _ = store
    user.mkdir()
    code = (
        "import os, sys; from napari_lggseg.atomic import staged_folder\n"
        "with staged_folder(sys.argv[1]) as s:\n"
        "    (s / 'model.safetensors').write_bytes(b'half')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(user / "killed")], timeout=60)
    old = user / ".earlier.tmp-k2j4h1x0"  # an earlier version's mkdtemp name
    old.mkdir()
    recent = user / ".recent.tmp-p0q9r8s7"
    recent.mkdir()
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    assert len([p for p in user.iterdir() if p.name.startswith(".killed.tmp-")]) == 1
    _save("fresh")
    models.list_models()
    assert sorted(p.name for p in user.iterdir()) == [".recent.tmp-p0q9r8s7", "fresh"]


# --------------------------------------------------------------------------- trained models are kept


def test_trained_model_goes_to_the_store(store):
    saved = models.save_trained_model(_weights(), _card(), "run")
    assert saved.ok and saved.info.name == "run" and saved.fallback is None
    again = models.save_trained_model(_weights(1), _card(), "run")
    assert again.info.name == "run-v2" and "saved model run-v2" in again.message()


def test_trained_model_survives_a_store_that_cannot_take_it(store, tmp_path, monkeypatch):
    """The store's folder is a file (as good as read-only, even for root): the model goes to the
    fallback folder whole, and it imports."""
    user, _ = store
    user.write_text("not a folder")
    unsaved = tmp_path / "unsaved"
    monkeypatch.setenv("LGGSEG_UNSAVED_DIR", str(unsaved))
    saved = models.save_trained_model(_weights(5), _card(), "precious")
    assert not saved.ok and saved.fallback == unsaved / "precious"
    assert str(user) in saved.error
    assert str(saved.fallback) in saved.message() and "lggseg models import" in saved.message()
    assert sorted(p.name for p in saved.fallback.iterdir()) == [models.CARD, models.WEIGHTS]
    user.unlink()
    info = models.import_model(saved.fallback)
    assert info.name == "precious"
    assert _same_weights(models.load_model("precious")[0].state_dict(), _weights(5))


def test_trained_model_falls_back_to_the_temp_folder(store, tmp_path, monkeypatch):
    import tempfile

    user, _ = store
    user.write_text("not a folder")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, so nothing can go under it")
    monkeypatch.setenv("LGGSEG_UNSAVED_DIR", str(blocked / "unsaved"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    saved = models.save_trained_model(_weights(), _card(), "precious")
    assert saved.fallback == tmp_path / "tmp" / "napari-lggseg-unsaved-models" / "precious"
    assert (saved.fallback / models.WEIGHTS).is_file()


def test_a_failed_export_leaves_no_half_copy(store, tmp_path, monkeypatch):
    import errno
    import shutil

    _save("original")
    real_copy = shutil.copy2

    def disk_full_on_the_card(src, dst, **kwargs):
        if str(src).endswith(models.CARD):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copy2", disk_full_on_the_card)
    dest = tmp_path / "usb-stick"
    dest.mkdir()
    with pytest.raises(OSError, match="No space left"):
        models.export_model("original", dest)
    assert list(dest.iterdir()) == []

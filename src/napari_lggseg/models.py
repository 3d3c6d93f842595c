"""The model store: shipped models (read-only, inside the package) and the user's own versions.

Each model is a folder ``<name>/`` with ``model.safetensors`` and ``card.json`` (architecture,
input channels, preprocessing recipe, parent, training data, metrics, hyper-parameters, intended
use, data licence, created, sha256 of the weights). Weights never go through pickle; the hash is
checked on every load. User models live under the platform's user data folder, or
``$LGGSEG_MODEL_DIR`` (tests point it at a temporary folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .atomic import clean_stale, staged_folder, write_text
from .model_cards import ARCHITECTURES, card_problem, is_interactive

SHIPPED_DIR = Path(__file__).parent / "weights"
WEIGHTS = "model.safetensors"
CARD = "card.json"
REFERENCE_NAME = "buda2019-reference"
REFERENCE_URL = (
    "https://github.com/mateuszbuda/brain-segmentation-pytorch/releases/download/v1.0/"
    "unet-e012d006.pt"
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


class ModelError(RuntimeError):
    """A model that is missing, damaged or not allowed for this operation."""


def user_model_dir() -> Path:
    env = os.environ.get("LGGSEG_MODEL_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-lggseg", appauthor=False)) / "models"


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(
        os.environ.get("LGGSEG_CACHE_DIR") or user_cache_dir("napari-lggseg", appauthor=False)
    )


@dataclass
class ModelInfo:
    name: str
    path: Path  # the model's folder
    card: dict
    shipped: bool
    problem: str | None = None  # why this model cannot be used (a bad card); None when it can

    @property
    def val_dice(self) -> float | None:
        m = self.card.get("metrics", {})
        return m.get("val_mean_dice")

    @property
    def parent(self) -> str | None:
        return self.card.get("parent")

    def label(self) -> str:
        d = self.val_dice
        return (
            f"{self.name}"
            + (f" (val Dice {d:.3f})" if d is not None else "")
            + (" [shipped]" if self.shipped else "")
        )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_info(folder: Path, shipped: bool) -> ModelInfo | None:
    """The model in ``folder`` (with its problem if its card is bad); None for other folders."""
    card_path, weights = folder / CARD, folder / WEIGHTS
    if not card_path.is_file():
        if weights.is_file():
            return ModelInfo(folder.name, folder, {}, shipped, f"{card_path}: missing")
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return ModelInfo(folder.name, folder, {}, shipped, f"{card_path}: cannot read it ({exc})")
    except ValueError as exc:
        return ModelInfo(folder.name, folder, {}, shipped, f"{card_path}: not valid JSON ({exc})")
    problem = card_problem(card)
    if problem is None and not weights.is_file():
        return ModelInfo(folder.name, folder, card, shipped, f"{weights}: missing")
    if problem is not None:
        return ModelInfo(
            folder.name,
            folder,
            card if isinstance(card, dict) else {},
            shipped,
            f"{card_path}: {problem}",
        )
    return ModelInfo(folder.name, folder, card, shipped)


def list_models(unusable: bool = False) -> list[ModelInfo]:
    """Shipped models first (default first), then the user's, newest last (unusable ones after
    them). ``unusable`` also
    lists models whose card is bad (their ``problem`` says why), so they can be shown and deleted."""
    out: list[ModelInfo] = []
    for root, shipped in ((SHIPPED_DIR, True), (user_model_dir(), False)):
        if not root.is_dir():
            continue
        if not shipped:
            clean_stale(root, legacy=True)  # leftovers of a killed save or import
        infos = [
            i
            for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".")
            if (i := _read_info(p, shipped)) and (unusable or i.problem is None)
        ]
        if shipped:
            # the default first; an interactive (click) model never first, it needs a mask
            infos.sort(
                key=lambda i: (not i.card.get("default", False), is_interactive(i.card), i.name)
            )
        else:
            infos.sort(key=lambda i: (i.problem is not None, str(i.card.get("created", ""))))
        out += infos
    return out


def _find(name: str) -> ModelInfo:
    """A model by name, usable or not."""
    for info in list_models(unusable=True):
        if info.name == name:
            return info
    names = ", ".join(i.name for i in list_models()) or "none"
    raise ModelError(f"unknown model {name!r} (available: {names})")


def _usable(info: ModelInfo) -> ModelInfo:
    if info.problem:
        raise ModelError(
            f"model {info.name!r} is unusable: {info.problem}"
            + ("" if info.shipped else f" (remove it with `lggseg models delete {info.name}`)")
        )
    return info


def get_model(name: str) -> ModelInfo:
    """A usable model by name (or by the path of its folder)."""
    p = Path(name)
    if p.is_dir() and (p / CARD).is_file():
        info = _read_info(p, shipped=False)
        if info:
            return _usable(info)
    return _usable(_find(name))


def default_model_name(device_type: str = "cpu") -> str:
    """The shipped default; on a GPU the shipped 'accurate' model when there is one."""
    shipped = [i for i in list_models() if i.shipped]
    if device_type in ("cuda", "mps"):
        for i in shipped:
            if i.card.get("role") == "accurate":
                return i.name
    for i in shipped:
        if i.card.get("default"):
            return i.name
    shipped = [i for i in shipped if not is_interactive(i.card)]
    if shipped:
        return shipped[0].name
    users = [i for i in list_models() if not i.shipped and not is_interactive(i.card)]
    if users:
        return users[-1].name
    raise ModelError("no model installed: the package's shipped weights are missing")


def load_state_dict(info: ModelInfo) -> dict:
    """Weights as float32 tensors, after checking the file's hash against the card."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = info.path / WEIGHTS
    expected = info.card.get("sha256")
    actual = sha256_of(path)
    if expected != actual:
        raise ModelError(
            f"{path}: weights do not match the sha256 in {info.path / CARD} "
            f"(damaged or edited file; expected {expected}, found {actual})"
        )
    try:
        sd = load_file(str(path))
    except SafetensorError as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def build_model(card: dict):
    """The network a card describes; an unknown architecture is refused, never guessed."""
    from .unet import UNet

    arch = card.get("architecture", {})
    if arch.get("name") not in ARCHITECTURES:
        raise ModelError(
            f"unknown architecture {arch.get('name')!r} (known: {', '.join(ARCHITECTURES)})"
        )
    return UNet(
        in_channels=int(arch.get("in_channels", 3)),
        out_channels=1,
        width=int(arch.get("width", 32)),
    )


def load_model(name: str):
    """(network in eval mode on the CPU, ModelInfo)."""
    info = get_model(name)
    return _built(info), info


def _built(info: ModelInfo):
    """The network of a model with its weights (hash-checked, strictly fitted), in eval mode."""
    from .unet import load_state_dict_strict

    model = build_model(info.card)
    try:
        load_state_dict_strict(model, load_state_dict(info), source=str(info.path / WEIGHTS))
    except ValueError as exc:  # names the file and the keys or shapes that do not fit
        raise ModelError(str(exc)) from exc
    return model.eval()


def unique_name(base: str) -> str:
    """``base`` or ``base-v2``, ``base-v3``... so a new version never replaces an old one."""
    taken = {i.name for i in list_models(unusable=True)}
    if base not in taken:
        return base
    stem = re.sub(r"-v\d+$", "", base)
    k = 2
    while f"{stem}-v{k}" in taken:
        k += 1
    return f"{stem}-v{k}"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ModelError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 80)")
    return name


def _write_model_folder(folder: Path, state_dict: dict, card: dict, name: str, half: bool) -> dict:
    """Weights and card into an (empty, staging) folder; returns the card as written."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if half and v.is_floating_point() and not k.endswith(("running_var", "running_mean")):
            v = v.to(torch.float16)
        tensors[k] = v.contiguous()
    save_file(tensors, str(folder / WEIGHTS))
    card = dict(card)
    card.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    card["name"] = name
    card["sha256"] = sha256_of(folder / WEIGHTS)
    (folder / CARD).write_text(json.dumps(card, indent=2))
    return card


def save_model(
    state_dict: dict, card: dict, name: str, root: Path | None = None, half: bool = False
) -> ModelInfo:
    """Write a new model folder atomically (staged, then renamed); refuses an existing name."""
    check_name(name)
    root = Path(root) if root else user_model_dir()
    final = root / name
    if final.exists() or any(i.name == name for i in list_models(unusable=True)):
        raise ModelError(f"a model named {name!r} already exists: choose another name")
    with staged_folder(final) as staging:
        card = _write_model_folder(staging, state_dict, card, name, half)
    return ModelInfo(name, final, card, shipped=False)


@dataclass
class SavedModel:
    """Where a trained model went: the store (``info``), or when the store failed (``error``) a
    complete importable folder (``fallback``), or nowhere (both None: the error says why)."""

    name: str
    info: ModelInfo | None = None
    fallback: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.info is not None

    def message(self) -> str:
        """One sentence for the terminal and the widget."""
        if self.info is not None:
            return f"saved model {self.info.name} in {self.info.path}"
        if self.fallback is not None:
            return (
                f"could not save model {self.name} in the model store ({self.error}); a complete "
                f"copy is in {self.fallback}: add it with `lggseg models import {self.fallback}`"
            )
        return f"could not save model {self.name} anywhere: {self.error}"


def unsaved_model_dir() -> Path:
    """Where a trained model goes when the store cannot take it (``$LGGSEG_UNSAVED_DIR`` in tests)."""
    env = os.environ.get("LGGSEG_UNSAVED_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-lggseg", appauthor=False)) / "unsaved-models"


def _save_failure(exc: BaseException) -> str | None:
    """Why saving failed, when it is the disk's or the store's fault (else None: a bug)."""
    from safetensors import SafetensorError

    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return where + (exc.strerror or str(exc))
    if isinstance(exc, (ModelError, SafetensorError)):
        return str(exc)
    return None


def _save_fallback(state_dict: dict, card: dict, name: str) -> tuple[Path | None, str | None]:
    """A complete model folder under the user data folder, else the system temp folder."""
    errors = []
    for root in (unsaved_model_dir(), Path(tempfile.gettempdir()) / "napari-lggseg-unsaved-models"):
        target, k = root / name, 2
        while target.exists():
            target, k = root / f"{name}-{k}", k + 1
        try:
            with staged_folder(target) as staging:
                _write_model_folder(staging, state_dict, card, target.name, half=False)
            return target, None
        except Exception as exc:
            why = _save_failure(exc)
            if why is None:
                raise
            errors.append(why)
    return None, "; ".join(errors)


def save_trained_model(state_dict: dict, card: dict, name: str) -> SavedModel:
    """Save a just-trained model under ``name`` (or the next free version of it) so that it is
    never lost: when the store is read-only or the disk is full, a complete importable folder
    goes to :func:`unsaved_model_dir` (or the system temp folder). Training paths call this."""
    try:
        final = unique_name(name)
        return SavedModel(final, info=save_model(state_dict, card, final))
    except Exception as exc:
        error = _save_failure(exc)
        if error is None:
            raise
    fallback, also = _save_fallback(state_dict, card, name)
    return SavedModel(name, fallback=fallback, error=error if also is None else f"{error}; {also}")


def _user_info(name: str) -> ModelInfo:
    info = _find(name)
    if info.shipped:
        raise ModelError(f"{name!r} is a shipped model: it cannot be renamed or deleted")
    return info


def rename_model(name: str, new_name: str) -> ModelInfo:
    info = _usable(_user_info(name))
    check_name(new_name)
    if any(i.name == new_name for i in list_models(unusable=True)):
        raise ModelError(f"a model named {new_name!r} already exists")
    card = dict(info.card, name=new_name)
    target = info.path.parent / new_name
    os.replace(info.path, target)
    _write_card(target, card)
    return ModelInfo(new_name, target, card, False)


def _write_card(folder: Path, card: dict) -> None:
    write_text(folder / CARD, json.dumps(card, indent=2))


def delete_model(name: str) -> None:
    info = _user_info(name)
    trash = info.path.parent / f".{name}.deleting"
    os.replace(info.path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def export_model(name: str, dest: str | os.PathLike) -> Path:
    """Copy a model folder (weights + card) to ``dest/<name>``, whole or not at all."""
    info = get_model(name)
    target = Path(dest) / info.name
    if target.exists():
        raise ModelError(f"{target} already exists")
    with staged_folder(target) as staging:
        for f in (WEIGHTS, CARD):
            shutil.copy2(info.path / f, staging / f)
    return target


def import_model(folder: str | os.PathLike, name: str | None = None) -> ModelInfo:
    """Copy an exported model folder into the user store after checking its hash."""
    src = Path(folder)
    info = _read_info(src, shipped=False)
    if info is None or not (src / WEIGHTS).is_file():
        raise ModelError(f"{src}: not a model folder (needs {WEIGHTS} and {CARD})")
    if info.problem:
        raise ModelError(f"{src}: not imported: {info.problem}")
    _built(info)  # the hash matches and the weights fit the architecture
    name = check_name(name or info.name)
    if any(i.name == name for i in list_models(unusable=True)):
        raise ModelError(f"a model named {name!r} already exists: import it under another name")
    with staged_folder(user_model_dir() / name) as staging:
        for f in (WEIGHTS, CARD):
            shutil.copy2(src / f, staging / f)
        write_text(staging / CARD, json.dumps(dict(info.card, name=name), indent=2))
    return get_model(name)


def download_reference() -> ModelInfo:
    """Fetch Buda et al.'s published weights once (pooch, cached), store them as a user model.

    They were trained on 100 of the 110 LGG patients: never use them to initialise, select or
    distil our models, and never report them on our test split as if unseen.
    """
    existing = [i for i in list_models() if i.name == REFERENCE_NAME]
    if existing:
        return existing[0]
    import pooch
    import torch

    from .preprocess import REFERENCE
    from .unet import UNet, load_state_dict_strict

    try:
        path = pooch.retrieve(REFERENCE_URL, known_hash=None, path=cache_dir(), progressbar=False)
    except Exception as exc:
        raise ModelError(
            f"could not download the reference weights from {REFERENCE_URL} ({type(exc).__name__}: {exc}). "
            "Are you offline? The shipped models work without a network."
        ) from exc
    # torch.hub convention: the file name carries the first 8 hex digits of its sha256
    prefix = REFERENCE_URL.rsplit("-", 1)[-1].split(".")[0]
    if not sha256_of(Path(path)).startswith(prefix):
        Path(path).unlink(missing_ok=True)
        raise ModelError(
            f"{path}: downloaded file does not match its published hash prefix {prefix}; "
            "deleted it, try again"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    model = UNet(3, 1, 32)
    load_state_dict_strict(model, sd, source=path)
    card = {
        "architecture": {"name": "unet-buda2019", "width": 32, "in_channels": 3, "out_channels": 1},
        "preprocessing": REFERENCE.to_dict(),
        "postprocessing": {"method": "largest", "threshold": 0.5},
        "parent": None,
        "training_data": {"source": "Buda et al. 2019, 100 of the 110 LGG patients (not ours)"},
        "intended_use": "comparison with the published model; trained on patients outside our splits",
        "data_licence": "TCGA-LGG / kaggle LGG dataset, CC BY-NC-SA 4.0",
        "source_url": REFERENCE_URL,
    }
    return save_model(model.state_dict(), card, REFERENCE_NAME)

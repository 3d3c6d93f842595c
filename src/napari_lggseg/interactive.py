"""Click correction: positive and negative clicks that re-segment a few slices around them.

The interactive network is the automatic U-Net with three more input channels (DeepEdit /
DeepGrow style): a positive-click map, a negative-click map (Gaussians on the network's grid,
fading over neighbouring slices) and the current mask. A click recomputes only the slices within
``window`` of it and merges only changes of its kind that reach it (a positive click adds, a
negative one removes); it never changes a slice painted by hand, and every
click can be undone exactly (a slice painted since keeps its paint). The first mask comes from
the automatic model (the card's ``first_step``) unless the caller gives one. No Qt, no napari.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .click_jobs import ClickIgnored, check_click
from .devices import resolve_device
from .model_cards import EXTRA_CHANNELS, card_postprocessing, is_interactive
from .preprocess import Recipe, prepare, prepare_mask, restore


@dataclass(frozen=True)
class ClickEncoding:
    """How clicks become input channels; stored in the card's ``interactive`` section."""

    sigma_px: float = 3.0  # in-plane Gaussian, pixels of the network's grid
    sigma_slices: float = 1.5  # fades over neighbouring slices
    window: int = 3  # slices recomputed on each side of a click

    def weight(self, dz: int) -> float:
        return float(np.exp(-(dz**2) / (2 * self.sigma_slices**2)))

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), extra_channels=list(EXTRA_CHANNELS))

    @classmethod
    def from_card(cls, card: dict) -> ClickEncoding:
        sec = card.get("interactive", {})
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: type(getattr(cls(), k))(sec[k]) for k in names if k in sec})


def gaussian_patch(sigma: float) -> tuple[np.ndarray, int]:
    """(2r+1, 2r+1) Gaussian with peak 1, and its radius r (3 sigma)."""
    r = int(np.ceil(3 * sigma))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.exp(-(yy**2 + xx**2) / (2 * sigma**2)).astype(np.float32), r


def stamp(plane: np.ndarray, gy: float, gx: float, weight: float, sigma: float) -> None:
    """Max a Gaussian of peak ``weight`` centred at grid (gy, gx) into a (S, S) map, in place."""
    patch, r = gaussian_patch(sigma)
    cy, cx = int(round(gy)), int(round(gx))
    s = plane.shape[0]
    y0, y1, x0, x1 = max(0, cy - r), min(s, cy + r + 1), max(0, cx - r), min(s, cx + r + 1)
    if y0 >= y1 or x0 >= x1:
        return
    sub = patch[y0 - cy + r : y1 - cy + r, x0 - cx + r : x1 - cx + r] * weight
    np.maximum(plane[y0:y1, x0:x1], sub, out=plane[y0:y1, x0:x1])


def click_change(old, new, at, positive: bool, radius: float) -> np.ndarray:
    """The window's mask after a click: of the network's changes ``new`` vs ``old`` only those of
    the click's kind (a positive click adds, a negative one removes), in 3-D regions that reach
    the click's disk (``radius`` voxels in-plane, on its slice or one either side). A click so never
    takes away correct mask elsewhere, which re-predicting the whole window did."""
    change = (new & ~old) if positive else (old & ~new)
    labels, _ = ndimage.label(change)
    z, y, x = at
    yy, xx = np.ogrid[: old.shape[1], : old.shape[2]]
    disk = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
    reached = np.unique(labels[max(0, z - 1) : z + 2][:, disk])
    keep = np.isin(labels, reached[reached > 0])
    return (old | keep) if positive else (old & ~keep)


def make_interactive(net: torch.nn.Module, card: dict, encoding: ClickEncoding | None = None):
    """(interactive U-Net, card) from an automatic model: the same weights, the extra first-layer
    weights zero, so before any training its output ignores the clicks and the mask."""
    from .models import build_model

    encoding = encoding or ClickEncoding()
    arch = card["architecture"]
    base_in = int(arch.get("in_channels", 3))
    new_card = copy.deepcopy(card)
    new_card["architecture"] = dict(arch, in_channels=base_in + len(EXTRA_CHANNELS))
    new_card["interactive"] = dict(encoding.to_dict(), first_step=card.get("name"))
    new_card.update(role="interactive", default=False, parent=card.get("name"))
    out = build_model(new_card)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    key = "encoder1.enc1conv1.weight"
    w = state[key]
    state[key] = torch.cat([w, w.new_zeros(w.shape[0], len(EXTRA_CHANNELS), *w.shape[2:])], 1)
    out.load_state_dict(state, strict=True)
    return out.eval(), new_card


@dataclass
class ClickModel:
    """An interactive network with what it needs to run: recipe, click encoding, first step."""

    net: torch.nn.Module
    card: dict

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.card["preprocessing"])

    @property
    def encoding(self) -> ClickEncoding:
        return ClickEncoding.from_card(self.card)

    @property
    def name(self) -> str:
        return str(self.card.get("name", ""))

    @property
    def first_step(self) -> str | None:
        return self.card.get("interactive", {}).get("first_step")

    @property
    def threshold(self) -> float:
        threshold = card_postprocessing(self.card).threshold
        return 0.5 if threshold is None else threshold

    @classmethod
    def from_store(cls, name: str | None = None) -> ClickModel:
        """A stored interactive model; None: the shipped one (a clear error when none is)."""
        from .models import ModelError, list_models, load_model

        if name is None:
            shipped = [i for i in list_models() if i.shipped and is_interactive(i.card)]
            if not shipped:
                raise ModelError(
                    "no interactive (click correction) model is installed: train one with "
                    "training/train_interactive.py, or pass a model name"
                )
            name = shipped[0].name
        net, info = load_model(name)
        if not is_interactive(info.card):
            raise ModelError(
                f"model {info.name!r} is an automatic model, not an interactive one: click "
                "correction needs a model whose card has an 'interactive' section"
            )
        return cls(net, dict(info.card, name=info.name))

    @classmethod
    def from_automatic(cls, name: str | None = None) -> ClickModel:
        """An automatic model with zero click weights: the no-training baseline."""
        from .models import default_model_name, load_model

        net, info = load_model(name or default_model_name("cpu"))
        inet, card = make_interactive(net, dict(info.card, name=info.name))
        card["name"] = f"{info.name}+zero-clicks"
        card["interactive"]["first_step"] = info.name
        return cls(inet, card)


@dataclass
class _Step:
    click: tuple[int, int, int, bool]
    z0: int  # first slice of the recomputed window (original slice index)
    old: np.ndarray  # the window's mask before the click
    changed: tuple[int, ...]


class ClickSession:
    """Click correction of one volume at a time; ``start`` begins afresh (reuse across patients)."""

    def __init__(self, model: ClickModel | str | None = None, device="auto"):
        if not isinstance(model, ClickModel):
            model = ClickModel.from_store(model)
        self.model = model
        self.device = resolve_device(device, fallback=True)
        self.net = model.net.eval().to(self.device)
        self.recipe, self.encoding = model.recipe, model.encoding
        self._segmenters: dict = {}
        self._mask: np.ndarray | None = None
        self._history: list[_Step] = []
        self.last_changed: tuple[int, ...] = ()  # slices the last click or undo changed

    # ------------------------------------------------------------------ state
    @property
    def clicks(self) -> list[list]:
        """[[z, y, x, positive], ...] voxel indices, oldest first (the sidecar's ``clicks:``)."""
        return [[z, y, x, bool(p)] for z, y, x, p in (s.click for s in self._history)]

    @property
    def changed_slices(self) -> list[int]:
        """Slices that the clicks so far changed (they count as reviewed)."""
        return sorted({z for s in self._history for z in s.changed})

    @property
    def mask(self) -> np.ndarray:
        self._require_started()
        return self._mask.copy()

    def _require_started(self) -> None:
        if self._mask is None:
            raise RuntimeError("ClickSession: call start(volume) before clicking")

    # ------------------------------------------------------------------ start
    def start(self, volume, mask=None, spacing=None, locked_slices=()) -> np.ndarray:
        """Begin on a volume ((Z, H, W, 3) or (Z, H, W) FLAIR); ``mask`` None runs the automatic
        first step. ``spacing`` (z, y, x mm) is kept for the caller; clicks live on the grid.
        After painting, call it again with the painted mask (the same array is not re-prepared)."""
        volume = np.asarray(volume)
        if volume is getattr(self, "_volume", None):  # the same array again: reuse its grid
            x, geom = self._x, self._geom
        else:
            x, geom = prepare(volume, self.recipe)
        if mask is None:
            mask = self._first_step(volume)
        mask = np.asarray(mask) > 0
        if mask.shape != geom.shape:
            raise ValueError(f"mask has shape {mask.shape}, the volume's slices are {geom.shape}")
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self._volume, self._x, self._geom = volume, x, geom
        self._pos = np.zeros((x.shape[0], geom.size, geom.size), np.float32)
        self._neg = np.zeros_like(self._pos)
        self._grid_mask = (prepare_mask(mask, geom) >= 0.5).astype(np.float32)
        self._mask = mask.copy()
        self._locked = {int(z) for z in locked_slices if 0 <= int(z) < geom.shape[0]}
        self._history, self.last_changed = [], ()
        return self._mask.copy()

    def _first_step(self, volume: np.ndarray) -> np.ndarray:
        from .inference import Segmenter

        name = self.model.first_step
        if name not in self._segmenters:
            self._segmenters[name] = Segmenter.from_store(name, self.device)
        return self._segmenters[name].segment(volume).mask > 0

    def lock_slices(self, slices) -> None:
        """Mark more slices as painted by hand (clicks never change them)."""
        self._locked |= {int(z) for z in slices}

    @property
    def locked_slices(self) -> list[int]:
        return sorted(self._locked)

    def set_locked(self, slices) -> None:
        """The slices painted by hand now (an undone stroke unlocks its slice again)."""
        self._require_started()
        self._locked = {int(z) for z in slices if 0 <= int(z) < self._geom.shape[0]}

    def set_slices(self, slices, values) -> None:
        """Take ``values[i]`` as slice ``slices[i]`` of the mask (the person painted it, or
        undid a stroke), so the next click sees the mask as it is on screen; no undo step."""
        self._require_started()
        g = self._geom
        for z, plane in zip(slices, values):
            z = int(z)
            self._mask[z] = np.asarray(plane) > 0
            if g.z0 <= z < g.z1:
                self._set_window(z, self._mask[z : z + 1])

    # ------------------------------------------------------------------ clicks
    def add_click(self, z: int, y: int, x: int, positive: bool = True) -> np.ndarray:
        """Apply a click at voxel (z, y, x); raises :class:`ClickIgnored` (with the reason) when
        it cannot apply: outside the volume or the head, or on a slice painted by hand."""
        self._require_started()
        z, y, x, positive = int(z), int(y), int(x), bool(positive)
        gy, gx = self._to_grid(z, y, x)
        click = (z, y, x, positive)
        self._history.append(self._apply(click, gy, gx))
        self.last_changed = self._history[-1].changed
        return self._mask.copy()

    def _to_grid(self, z: int, y: int, x: int) -> tuple[float, float]:
        g = self._geom
        check_click(z, y, x, g.shape, self._locked)
        if not (g.z0 <= z < g.z1 and g.y0 <= y < g.y1 and g.x0 <= x < g.x1):
            raise ClickIgnored(f"click at ({z}, {y}, {x}) is outside the head: ignored")
        return self._grid_of(z, y, x)

    def _window(self, z: int) -> tuple[int, int]:
        k, g = self.encoding.window, self._geom
        return max(g.z0, z - k), min(g.z1, z + k + 1)

    def _stamp(self, z: int, gy: float, gx: float, positive: bool) -> None:
        maps, enc, g = (self._pos if positive else self._neg), self.encoding, self._geom
        lo, hi = self._window(z)
        for zz in range(lo, hi):
            stamp(maps[zz - g.z0], gy, gx, enc.weight(zz - z), enc.sigma_px)

    def _apply(self, click, gy: float, gx: float) -> _Step:
        z, _, _, positive = click
        self._stamp(z, gy, gx, positive)
        lo, hi = self._window(z)
        old = self._mask[lo:hi].copy()
        g = self._geom
        radius = 6 * self.encoding.sigma_px * g.side / g.size  # voxels: twice the stamp's reach
        new = click_change(old, self._predict(lo, hi), (z - lo, *click[1:3]), positive, radius)
        for zz in self._locked:
            if lo <= zz < hi:
                new[zz - lo] = old[zz - lo]
        changed = tuple(lo + i for i in range(hi - lo) if not np.array_equal(new[i], old[i]))
        self._set_window(lo, new)
        return _Step(click, lo, old, changed)

    def _set_window(self, lo: int, slab: np.ndarray) -> None:
        g = self._geom
        self._mask[lo : lo + slab.shape[0]] = slab
        sub = dataclasses.replace(g, shape=(slab.shape[0],) + g.shape[1:], z0=0, z1=slab.shape[0])
        grid = prepare_mask(slab, sub) >= 0.5
        self._grid_mask[lo - g.z0 : lo - g.z0 + slab.shape[0]] = grid

    @torch.inference_mode()
    def _predict(self, lo: int, hi: int) -> np.ndarray:
        """The window's new mask (hi - lo, H, W) bool; outside the head box the old mask stays."""
        g = self._geom
        a, b = lo - g.z0, hi - g.z0
        inp = np.concatenate(
            [self._x[a:b], self._pos[a:b, None], self._neg[a:b, None], self._grid_mask[a:b, None]],
            axis=1,
        )
        xb = torch.from_numpy(inp).to(self.device)
        if self.device.type == "cpu":
            xb = xb.contiguous(memory_format=torch.channels_last)
        prob = torch.sigmoid(self.net(xb).float())[:, 0].cpu().numpy()
        sub = dataclasses.replace(g, shape=(hi - lo,) + g.shape[1:], z0=0, z1=hi - lo)
        new = self._mask[lo:hi].copy()
        inside = (slice(None), slice(g.y0, g.y1), slice(g.x0, g.x1))
        new[inside] = restore(prob, sub)[inside] >= self.model.threshold
        return new

    # ------------------------------------------------------------------ undo
    def undo(self) -> np.ndarray:
        """Take back the last click: the mask before it, exactly (no click: the mask as is);
        slices locked since the click keep what they hold now (the paint wins)."""
        self._require_started()
        self.last_changed = ()
        if self._history:
            step = self._history.pop()
            old = step.old.copy()
            n = old.shape[0]
            for zz in self._locked:
                if step.z0 <= zz < step.z0 + n:
                    old[zz - step.z0] = self._mask[zz]
            now = self._mask[step.z0 : step.z0 + n]
            self.last_changed = tuple(
                step.z0 + i for i in range(n) if not np.array_equal(old[i], now[i])
            )
            self._set_window(step.z0, old)
            self._redraw_maps()
        return self._mask.copy()

    def _redraw_maps(self) -> None:
        self._pos[:] = 0
        self._neg[:] = 0
        for z, y, x, positive in (s.click for s in self._history):
            gy, gx = self._grid_of(z, y, x)
            self._stamp(z, gy, gx, positive)

    def _grid_of(self, z: int, y: int, x: int) -> tuple[float, float]:
        g = self._geom
        scale = g.size / g.side
        return (y - g.y0 + g.pad[0] + 0.5) * scale - 0.5, (x - g.x0 + g.pad[2] + 0.5) * scale - 0.5


__all__ = [
    "ClickEncoding",
    "ClickIgnored",
    "ClickModel",
    "ClickSession",
    "check_click",
    "make_interactive",
]

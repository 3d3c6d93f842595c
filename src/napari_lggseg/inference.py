"""Volume -> tumour probability -> mask, batched, on CPU, CUDA or MPS. No Qt.

Progress and cancel are plain callbacks so the widget (napari progress) and the CLI (terminal
bar) adapt them. A :class:`Segmentation` keeps the probabilities, so changing the threshold or
the post-processing never re-runs the network.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import metrics
from .devices import autocast, is_cancelled, is_out_of_memory, resolve_device
from .lgg_io import describe_sequences, missing_sequences
from .model_cards import DEFAULT_POSTPROCESS
from .preprocess import Geometry, Recipe, prepare, restore

Progress = Callable[[int, int], None]


class Cancelled(Exception):
    """The caller's cancel flag was raised; nothing was produced."""


@dataclass
class Segmentation:
    """Probabilities on the original slices, and the mask they give with the chosen options."""

    prob: np.ndarray  # (Z, H, W) float32
    threshold: float = 0.5
    postprocess: str = DEFAULT_POSTPROCESS
    model: str = ""
    missing: tuple[str, ...] = ()
    seconds: float = 0.0
    device: str = "cpu"
    mask: np.ndarray = field(init=False)

    def __post_init__(self):
        self.mask = self.rethreshold(self.threshold, self.postprocess)

    def rethreshold(self, threshold: float, postprocess: str | None = None) -> np.ndarray:
        """New mask from the cached probabilities (no network)."""
        self.threshold = float(threshold)
        if postprocess is not None:
            self.postprocess = postprocess
        self.mask = metrics.postprocess(
            (self.prob >= self.threshold).astype(np.uint8), self.postprocess, prob=self.prob
        )
        return self.mask

    @property
    def sequences_note(self) -> str:
        return describe_sequences(self.missing)


class Segmenter:
    """A loaded network with its recipe on one device."""

    def __init__(
        self,
        model: torch.nn.Module,
        recipe: Recipe,
        device="auto",
        batch_size: int = 16,
        tta: bool = False,
        name: str = "",
        fast: bool = True,
        fallback: bool = True,
    ):
        self.device = resolve_device(device, fallback=fallback)
        self.recipe, self.name, self.tta, self.fast = recipe, name, tta, fast
        self.batch_size = batch_size
        self.default_postprocess = DEFAULT_POSTPROCESS  # a card's choice replaces it (from_store)
        self.model = model.eval().to(self.device)
        if self.device.type == "cpu" and fast:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_store(cls, name: str | None = None, device="auto", **kwargs) -> Segmenter:
        from .model_cards import card_postprocessing, is_interactive
        from .models import ModelError, default_model_name, load_model

        dev = resolve_device(device, fallback=kwargs.pop("fallback", True))
        name = name or default_model_name(dev.type)
        model, info = load_model(name)
        if is_interactive(info.card):
            raise ModelError(
                f"model {info.name!r} is an interactive (click correction) model: it refines a "
                "mask with clicks and cannot segment on its own; segment with an automatic model "
                f"such as {default_model_name(dev.type)!r}"
            )
        post = card_postprocessing(info.card)
        kwargs.setdefault("tta", post.tta)
        seg = cls(
            model, Recipe.from_dict(info.card["preprocessing"]), dev, name=info.name, **kwargs
        )
        seg.default_postprocess = post.method
        return seg

    def _forward(self, xb: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu" and self.fast:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, enabled=self.fast):
            logits = self.model(xb)
            if self.tta:
                logits = (logits + torch.flip(self.model(torch.flip(xb, dims=[3])), dims=[3])) / 2
        return torch.sigmoid(logits.float())[:, 0]

    @torch.inference_mode()
    def predict_grid(
        self, x: np.ndarray, progress: Progress | None = None, cancel=None
    ) -> np.ndarray:
        """(N, C, S, S) network input -> (N, S, S) probabilities, in batches."""
        n = x.shape[0]
        out = np.empty((n, x.shape[2], x.shape[3]), np.float32)
        i = 0
        while i < n:
            if is_cancelled(cancel):
                raise Cancelled()
            b = min(self.batch_size, n - i)
            try:
                xb = torch.from_numpy(x[i : i + b]).to(self.device, non_blocking=True)
                out[i : i + b] = self._forward(xb).cpu().numpy()
            except RuntimeError as exc:
                if not is_out_of_memory(exc) or self.device.type == "cpu":
                    raise
                self._shrink_after_oom(exc)
                continue
            i += b
            if progress:
                progress(i, n)
        return out

    def _shrink_after_oom(self, exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size > 1:
            self.batch_size //= 2
            warnings.warn(
                f"{self.device} ran out of memory; retrying with batch size {self.batch_size}",
                stacklevel=2,
            )
        else:
            warnings.warn(
                f"{self.device} ran out of memory even at batch size 1; using the CPU", stacklevel=2
            )
            self.device = torch.device("cpu")
            self.model = self.model.to(self.device)

    def probabilities(
        self, volume: np.ndarray, progress: Progress | None = None, cancel=None
    ) -> tuple[np.ndarray, Geometry]:
        x, geom = prepare(volume, self.recipe)
        prob = self.predict_grid(x, progress, cancel)
        return restore(prob, geom), geom

    def segment(
        self,
        volume: np.ndarray,
        threshold: float = 0.5,
        postprocess: str | None = None,
        progress: Progress | None = None,
        cancel=None,
    ) -> Segmentation:
        """(Z, H, W, 3) volume in LGG channel order (or (Z, H, W) FLAIR) -> Segmentation.

        ``postprocess`` None uses the model card's choice (made on validation data).
        """
        t0 = time.perf_counter()
        postprocess = postprocess or self.default_postprocess
        volume = np.asarray(volume)
        missing = missing_sequences(volume)
        prob, _ = self.probabilities(volume, progress, cancel)
        seg = Segmentation(prob, threshold, postprocess, self.name, missing, 0.0, str(self.device))
        seg.seconds = time.perf_counter() - t0
        return seg

"""What one training run is asked for (:class:`TrainConfig`, recorded in the model card) and what
it returns (:class:`TrainResult`, :class:`StopReason`); the loop is in :mod:`training`. No Qt,
no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

DEFAULT_EPOCHS = 10  # the budget when neither epochs nor minutes are given

# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Budget and hyper-parameters of one run; recorded in the model card.

    With both ``epochs`` and ``minutes``, the run stops at whichever comes first; the cosine
    learning-rate schedule follows whichever is further along. With neither, ``epochs`` is
    :data:`DEFAULT_EPOCHS`.
    """

    epochs: int | None = None
    minutes: float | None = None
    steps_per_epoch: int | None = None  # default: one pass over the labelled slices, 10..200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    loss: str = "dice+bce"
    tumour_fraction: float = 0.5
    augment: bool = True
    substitute: float = 0.4
    freeze_bn: bool | None = None  # None: freeze when fine-tuning on <= 8 volumes
    # fine-tuning only (a new site without forgetting the old ones; see finetune.fine_tune_config)
    l2sp: float = 0.0  # alpha of the penalty alpha * ||theta - theta_parent||^2 (L2-SP)
    site_bn: float = 0.0  # BatchNorm statistics: this share from the new volumes' slices (0..1)
    parent_share: float = 0.0  # the result: this share of the parent's weights (WiSE-FT), 0..1
    patience: int | None = None  # epochs without a better validation Dice before stopping
    seed: int = 0
    device: str = "auto"
    threshold: float = 0.5
    postprocess: str = "min-size"
    val_every: int = 1

    def __post_init__(self) -> None:
        if self.epochs is None and self.minutes is None:
            self.epochs = DEFAULT_EPOCHS

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- what a run returns


class StopReason(str, Enum):
    """Why a run ended (the card's ``training.stopped``); the prose is ``TrainResult.message``."""

    FINISHED = "finished"  # every step of the epochs done
    TIME_BUDGET = "time"  # the minutes ran out
    EARLY_STOP = "early-stopping"  # no better validation Dice for ``patience`` epochs
    CANCELLED = "cancelled"
    NON_FINITE = "non-finite"  # a NaN/inf loss or gradient; the last good weights are kept

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass
class TrainResult:
    state_dict: dict  # the best (or last, without validation) weights, on the CPU
    history: list[dict] = field(default_factory=list)  # one row per epoch (0: before training)
    best_epoch: int = 0
    best_val_dice: float | None = None
    val_per_patient: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    stopped: StopReason = StopReason.FINISHED
    message: str = ""  # the same for a person, with the step
    epochs_done: int = 0  # epochs that ran to their end (a cancelled or failed one does not count)
    data_summary: dict = field(default_factory=dict)

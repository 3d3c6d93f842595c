"""What training learns from: volumes and their trusted slices, loading them from expert folders,
corrections folders, scans with a label file or memory, the patient-level split, tumour-weighted
slice sampling and the augmentation. No Qt.

Only *labelled* slices are learned from: every slice of an expert patient folder or of a scan
(NIfTI, DICOM) with a label file, the reviewed slices of a corrections folder or of a saved scan
mask (a person checked them), and whatever a caller marks in memory. Thin-slice scans are
resampled through-plane as inference shows them to the network (:func:`geometry.to_network_slices`),
so the 2.5-D context a model learns is the one it is used with.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import cases, lgg_io, scan_io
from .lgg_io import SEQUENCES
from .preprocess import Geometry, Recipe, prepare, prepare_mask


class NothingToLearn(lgg_io.LGGFormatError):
    """The data hold no labelled slice (no expert masks, no reviewed slices)."""


@dataclass
class TrainVolume:
    """One volume to learn from; ``labelled`` marks slices whose mask is trusted (None = all)."""

    patient_id: str
    image: np.ndarray  # (Z, H, W, 3) in LGG channel order
    mask: np.ndarray  # (Z, H, W), >0 tumour
    labelled: np.ndarray | None = None
    source: str = "expert"  # "expert" | "corrections" | "memory"
    folder: Path | None = None  # where it was read from (None: from memory)
    why_unlabelled: str = "no reviewed slices"  # said when it has no labelled slice

    @property
    def labelled_slices(self) -> np.ndarray:
        z = self.mask.shape[0]
        return np.arange(z) if self.labelled is None else np.flatnonzero(self.labelled)


# --------------------------------------------------------------------------- loading


def _from_corrections(path: Path) -> TrainVolume:
    c = lgg_io.read_corrections(path)
    p = lgg_io.read_patient(c.source_folder, masks=False)
    if p.image.shape[:3] != c.mask.shape:
        raise lgg_io.LGGFormatError(
            f"{path}: corrected mask {c.mask.shape} does not match "
            f"its images {p.image.shape[:3]} in {c.source_folder}"
        )
    labelled = None
    if not c.whole_volume_reviewed:
        labelled = np.zeros(c.mask.shape[0], bool)
        labelled[c.reviewed_slices] = True
    return TrainVolume(c.patient_id, p.image, c.mask, labelled, "corrections", path)


def volumes_from_path(path: str | os.PathLike) -> list[TrainVolume]:
    """A patient folder with masks, a corrections folder, a scan case with a label file (NIfTI
    file or case folder, DICOM study), a folder of saved scan masks, or a root of any of these.

    Named directly, a patient or scan without masks is an error naming it; inside a root it
    comes back without labelled slices (see :func:`unlabelled`), so callers can say so and go on.
    """
    path = Path(path)
    if lgg_io.is_corrections_folder(path):
        return [_from_corrections(path)]
    if lgg_io.is_patient_folder(path):
        return [_from_patient(path, named=True)]
    if scan_io.is_mask_folder(path):
        return _from_saved_masks(path)
    scans = cases.find_cases(path)
    if scans == [path] or (path.is_file() and len(scans) == 1):  # a DICOM file: its study
        return [_from_scan(scans[0], named=True)]
    out = _from_root(path, scans)
    if out is None:
        raise lgg_io.LGGFormatError(
            f"{path}: not a patient folder, corrections folder or folder of patients, nor a "
            "scan case with a label file (NIfTI, DICOM), saved masks or a folder of them"
        )
    return out


def _from_patient(path: Path, named: bool) -> TrainVolume:
    p = lgg_io.read_patient(path)
    if p.mask is None:
        why = f"no masks to learn from (no {p.patient_id}_<n>_mask.tif)"
        if named:
            raise lgg_io.LGGFormatError(f"{path}: {why}")
        return _nothing(p.patient_id, path, why)
    return TrainVolume(p.patient_id, p.image, p.mask, folder=path)


def _from_root(path: Path, scans: list[Path]) -> list[TrainVolume] | None:
    """Everything a root holds, in name order; None when it holds nothing to train on."""
    if not path.is_dir():
        return None
    children = sorted(p for p in path.iterdir() if p.is_dir())
    found: list[tuple[str, Path]] = []
    for child in children:
        if lgg_io.is_corrections_folder(child):
            found.append(("corrections", child))
        elif lgg_io.is_patient_folder(child):
            found.append(("patient", child))
        elif scan_io.is_mask_folder(child):
            found.append(("masks", child))
    taken = {c for _, c in found}
    found += [("scan", s) for s in scans if s not in taken]
    if not found:
        return None
    out: list[TrainVolume] = []
    for kind, p in sorted(found, key=lambda kp: kp[1].name):
        if kind == "corrections":
            out.append(_from_corrections(p))
        elif kind == "patient":
            out.append(_from_patient(p, named=False))
        elif kind == "masks":
            out += _from_saved_masks(p)
        else:
            out.append(_from_scan(p, named=False))
    return out


def _nothing(patient_id: str, folder: Path, why: str) -> TrainVolume:
    """A volume with no labelled slice (and no voxels): only there to be named and left out."""
    empty = np.zeros((0, 1, 1), np.uint8)
    return TrainVolume(
        patient_id, np.zeros((0, 1, 1, 3), np.uint8), empty, np.zeros(0, bool), "expert", folder,
        why,
    )  # fmt: skip


def _from_scan(path: Path, named: bool) -> TrainVolume:
    """A scan case whose label file makes every slice labelled (as an expert patient's masks)."""
    case = cases.read_case(path)
    if case.label is None:
        why = "no label file to learn from (a <case>_seg / mask / label NIfTI beside the FLAIR)"
        if named:
            raise scan_io.ScanFormatError(f"{path}: {why}")
        return _nothing(case.case_id, path, why)
    image, mask, _ = on_network_slices(case.image, case.label, None, case.spacing[0])
    return TrainVolume(case.case_id, image, mask, None, "expert", path)


def _from_saved_masks(folder: Path) -> list[TrainVolume]:
    """Masks saved on scans (``<case>_mask.nii.gz`` + sidecar): their reviewed slices, all of
    them when the whole volume was reviewed; a prediction nobody reviewed has none."""
    from .scan_masks import read_saved_mask

    out = []
    for sidecar in sorted(folder.glob(f"*{scan_io.MASK_SIDECAR_SUFFIX}")):
        saved = read_saved_mask(sidecar)
        case = saved.case
        labelled = None
        if not saved.whole_volume_reviewed:
            labelled = np.zeros(saved.mask.shape[0], bool)
            labelled[[i for i in saved.reviewed_slices if 0 <= i < len(labelled)]] = True
        image, mask, labelled = on_network_slices(case.image, saved.mask, labelled, case.spacing[0])
        out.append(TrainVolume(case.case_id, image, mask, labelled, "corrections", folder))
    return out


def on_network_slices(image, mask, labelled, spacing_z: float, slice_spacing="auto"):
    """``(image, mask, labelled)`` on the slices inference shows the network
    (:func:`geometry.to_network_slices`); unchanged for slices as thick as the target. A
    resampled slice is labelled only when every slice it is made of was."""
    from .geometry import resample_matrix, to_network_slices

    n = len(image)
    net_image = to_network_slices(image, spacing_z, slice_spacing)
    if len(net_image) == n:
        return image, mask, labelled
    net_mask = to_network_slices(np.asarray(mask, np.float32), spacing_z, slice_spacing) > 0.5
    if labelled is not None:
        taps = resample_matrix(n, len(net_image)) > 0
        labelled = (~taps | np.asarray(labelled, bool)[None, :]).all(axis=1)
    return net_image, net_mask.astype(np.uint8), labelled


def unlabelled(volumes: list[TrainVolume]) -> list[TrainVolume]:
    """The volumes without a single labelled slice (corrections nobody marked as reviewed)."""
    return [v for v in volumes if len(v.labelled_slices) == 0]


def load_volumes(paths, patients: set[str] | None = None) -> list[TrainVolume]:
    """All training volumes under ``paths`` (one path or several); with ``patients``, only those
    ids. Raises :class:`NothingToLearn`, naming the folders, when none has a labelled slice."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = [v for p in paths for v in volumes_from_path(p)]
    if patients is not None:
        out = [v for v in out if v.patient_id in patients]
    if out and len(unlabelled(out)) == len(out):
        folders = ", ".join(str(v.folder or v.patient_id) for v in out)
        why = sorted({v.why_unlabelled for v in out})
        if why == ["no reviewed slices"]:
            raise NothingToLearn(
                f"{folders}: no reviewed slices to learn from (mark the slices you checked as "
                "reviewed in napari and save the corrections, or give patient folders with masks)"
            )
        raise NothingToLearn(f"{folders}: nothing to learn from ({'; '.join(why)})")
    return out


# --------------------------------------------------------------------------- split


def split_patients(ids, val_fraction: float = 0.15, seed: int = 0) -> tuple[list[str], list[str]]:
    """Patient-level split ``(train, validation)``, the same for the same seed.

    Stratified by institution (the ``CS`` in ``TCGA_CS_4941_19960909``): when the validation
    share has room for it, every institution with two or more patients gives at least one, and
    the rest go by largest remainder; an institution keeps at least one patient in training
    whenever it can. Scanners and protocols differ by institution, so this keeps validation
    representative of training.
    """
    ids = sorted({str(i) for i in ids})
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction <= 0 or len(ids) < 2 or n_val == 0:
        return ids, []
    n_val = min(n_val, len(ids) - 1)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for pid in ids:
        groups.setdefault(lgg_io.institution_of(pid), []).append(pid)
    shuffled = {g: [str(p) for p in rng.permutation(m)] for g, m in sorted(groups.items())}
    several = [g for g in sorted(groups) if len(groups[g]) >= 2]
    if len(groups) > 1 and len(several) <= n_val:
        alloc = {g: (1 if g in several else 0) for g in groups}
        for _ in range(n_val - sum(alloc.values())):
            # the group furthest below its share that can still spare a patient for validation
            spare = [g for g in groups if alloc[g] < len(groups[g]) - 1] or [
                g for g in groups if alloc[g] < len(groups[g])
            ]
            g = max(sorted(spare), key=lambda g: len(groups[g]) * val_fraction - alloc[g])
            alloc[g] += 1
        val = [p for g in sorted(groups) for p in shuffled[g][: alloc[g]]]
    else:
        val = [str(p) for p in rng.permutation(ids)[:n_val]]
    val_set = set(val)
    return [i for i in ids if i not in val_set], sorted(val_set)


# --------------------------------------------------------------------------- network inputs


@dataclass
class PreparedVolume:
    """A volume on the network's grid, ready to sample slices from or validate on."""

    patient_id: str
    x: torch.Tensor  # (Z, C, S, S) float16
    y: torch.Tensor  # (Z', S, S) float16 soft targets
    labelled: np.ndarray  # trusted slices, indices into the original volume (validation)
    grid: np.ndarray  # the same slices as indices into x/y (the reference recipe crops z)
    geom: Geometry
    mask: np.ndarray  # original-resolution mask, for validation


def prepare_volumes(volumes: list[TrainVolume], recipe: Recipe) -> list[PreparedVolume]:
    out = []
    for v in volumes:
        x, geom = prepare(v.image, recipe)
        y = prepare_mask(v.mask, geom)
        labelled = v.labelled_slices
        grid = labelled[(labelled >= geom.z0) & (labelled < geom.z1)] - geom.z0
        out.append(
            PreparedVolume(
                v.patient_id,
                torch.from_numpy(x).half(),
                torch.from_numpy(y).half(),
                labelled,
                grid,
                geom,
                (np.asarray(v.mask) > 0),
            )
        )
    return out


@dataclass
class SlicePool:
    """The labelled slices as ``(volume, slice)`` pairs, and those among them showing tumour."""

    slices: list[tuple[int, int]]
    tumour: list[tuple[int, int]]

    @classmethod
    def of(cls, data: list[PreparedVolume]) -> SlicePool:
        slices = [(i, int(z)) for i, d in enumerate(data) for z in d.grid]
        return cls(slices, [(i, z) for i, z in slices if float(data[i].y[z].sum()) > 0])

    def sample(self, rng: np.random.Generator, n: int, tumour_fraction: float) -> list:
        """``n`` slices; each is a tumour slice with probability ``tumour_fraction`` (when the
        data have any), else any labelled slice, so small lesions are not drowned out."""
        return [
            self.tumour[rng.integers(len(self.tumour))]
            if self.tumour and rng.random() < tumour_fraction
            else self.slices[rng.integers(len(self.slices))]
            for _ in range(n)
        ]


def summary(volumes, val_volumes, data, pool: SlicePool) -> dict:
    """What a run learned from, for the model card (``training_data``)."""
    return {
        "patients": sorted({v.patient_id for v in volumes}),
        "val_patients": sorted({v.patient_id for v in (val_volumes or [])}),
        "slices": len(pool.slices),
        "tumour_slices": len(pool.tumour),
        "slices_corrected_by_hand": sum(
            len(d.grid) for d, v in zip(data, volumes) if v.source != "expert"
        ),
        "volumes": len(volumes),
    }


# --------------------------------------------------------------------------- augmentation


def augment(
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    channels=SEQUENCES,
    substitute: float = 0.4,
    rotate_deg: float = 10.0,
    scale: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip left-right, small rotation/scale/shift, intensity jitter, and replace pre- and/or
    post-contrast by FLAIR (the LGG dataset's convention for a missing scan) for a fraction
    ``substitute`` of the batch, so models keep working when sequences are missing.

    ``x`` is (B, C, S, S) whose first channels are the recipe's ``channels`` (context slices
    follow), ``y`` (B, S, S) in [0, 1]; shapes are kept and ``y`` stays in [0, 1].
    """
    b = x.shape[0]
    x, y = x.clone(), y.clone()
    channels = list(channels)
    if "FLAIR" in channels and substitute > 0:
        f = channels.index("FLAIR")
        r = torch.rand(b, generator=gen)
        both = r < substitute / 2
        masks = {
            "pre-contrast": both | ((r >= substitute / 2) & (r < 3 * substitute / 4)),
            "post-contrast": both | ((r >= 3 * substitute / 4) & (r < substitute)),
        }
        for name, rows in masks.items():
            if name in channels:
                c = channels.index(name)
                x[rows, c] = x[rows, f]
    flip = torch.rand(b, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    y[flip] = y[flip].flip(-1)
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate_deg)
    s = 1 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.05
    theta = torch.stack(
        [
            torch.stack([torch.cos(ang) / s, -torch.sin(ang) / s, t[:, 0]], 1),
            torch.stack([torch.sin(ang) / s, torch.cos(ang) / s, t[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[
        :, 0
    ]
    gain = 1 + (torch.rand(b, x.shape[1], 1, 1, generator=gen) * 2 - 1) * 0.1
    shift = (torch.rand(b, x.shape[1], 1, 1, generator=gen) * 2 - 1) * 0.1
    return x * gain + shift, y.clamp_(0, 1)

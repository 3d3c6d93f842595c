"""Orientation, resampling and segment_case on synthetic grids (no viewer, no real data)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from nibabel import orientations as nio
from nifti_cases import affine_for, lesion_in_model_orientation, write_case

from napari_lggseg import cases, geometry
from napari_lggseg.geometry import Orientation

# every way to store an axial-ish volume: the 48 axis orders and flips
ALL_CODES = [
    "".join(c)
    for perm in itertools.permutations([("L", "R"), ("P", "A"), ("S", "I")])
    for c in itertools.product(*perm)
]


@pytest.mark.parametrize("codes", ALL_CODES)
def test_reorientation_is_exact_and_keeps_world_positions(codes):
    shape = (5, 6, 7)
    affine = affine_for(codes, spacing=(1.5, 2.0, 3.0), shape=shape)
    arr = np.random.default_rng(0).random(shape)
    orient = Orientation.of(affine, shape)
    model = orient.to_model(arr)
    np.testing.assert_array_equal(orient.to_file(model), arr)
    m_aff = orient.model_affine(affine)
    # the model orientation's axes: Z to the head's top, Y to the back, X to the patient's left
    assert nio.aff2axcodes(m_aff[:, [2, 1, 0, 3]]) == ("L", "P", "S")
    # each voxel keeps its world position
    inv = np.linalg.inv(affine)
    for z, y, x in [(0, 0, 0), (1, 2, 3), tuple(s - 1 for s in model.shape)]:
        i, j, k = np.rint(inv @ m_aff @ [z, y, x, 1])[:3].astype(int)
        assert model[z, y, x] == arr[i, j, k]
    assert orient.is_identity == (codes == "LPS")


@pytest.mark.parametrize(
    "codes, spacing, angle, note",
    [
        ("LPS", (3.5, 3.5, 3.5), 0.0, None),
        ("RAS", (3.2, 3.2, 5.0), 0.0, "stored as RAS"),
        ("LAS", (3.5, 3.5, 4.0), 20.0, "oblique by 20 degrees"),
        ("PIL", (3.5, 3.5, 5.0), 0.0, "acquired as sagittal slices"),
        ("LIP", (3.5, 3.5, 5.0), 0.0, "acquired as coronal slices"),
    ],
)
def test_any_storage_gives_the_same_anatomy(tmp_path, codes, spacing, angle, note):
    """The lesion (front, left, up of the head's centre) lands where it is in the world, whatever
    the file's axis order, flips, obliquity or voxel size."""
    shape = (40, 44, 36)
    folder = write_case(tmp_path / "C1", affine_for(codes, spacing, shape, angle), shape)
    case = cases.read_case(folder)
    header = cases.read_header(folder)  # what the writer uses: the same grid, no pixels
    assert header.shape == case.shape and np.allclose(header.model_affine, case.model_affine)
    z, y, x = (np.nonzero(case.label)[i].mean() for i in range(3))
    cz, cy, cx = ((s - 1) / 2 for s in case.shape)
    assert z > cz and y < cy and x > cx  # up, front (top of the slice), left (right of screen)
    np.testing.assert_array_equal(
        case.label, lesion_in_model_orientation(case.shape, case.model_affine)
    )
    assert np.allclose(sorted(case.spacing), sorted(spacing))
    if note is None:
        assert case.notes == []
    else:
        assert any(note in n for n in case.notes), case.notes


def test_napari_transform_is_spacing_and_lps_origin():
    affine = affine_for("RAS", (0.5, 0.8, 4.0), (10, 20, 30))
    orient = Orientation.of(affine, (10, 20, 30))
    t = geometry.napari_transform(orient.model_affine(affine))
    assert t["scale"] == pytest.approx((4.0, 0.8, 0.5))
    # voxel (0, 0, 0) of the model array: its LPS position, in napari's (Z, Y, X) order
    origin = orient.model_affine(affine) @ [0, 0, 0, 1]
    assert t["translate"] == pytest.approx((origin[2], -origin[1], -origin[0]))


def test_resample_matrix():
    for n_in, n_out in [(155, 39), (39, 155), (10, 10), (7, 3), (1, 4), (4, 1)]:
        m = geometry.resample_matrix(n_in, n_out)
        assert m.shape == (n_out, n_in) and np.allclose(m.sum(axis=1), 1.0)
        assert (m >= 0).all()
    np.testing.assert_allclose(geometry.resample_matrix(5, 5), np.eye(5))
    # shrinking 4 -> 1 mm... a thick slice averages the thin ones it covers, with their centre
    ramp = np.arange(160, dtype=np.float32)[:, None]
    thick = geometry.resample_axis0(ramp, 40)
    np.testing.assert_allclose(thick[1:-1, 0], np.arange(1, 39) * 4 + 1.5, atol=1e-4)


def test_through_plane_slices():
    assert geometry.through_plane_slices(155, 1.0, 4.0) == 39
    assert geometry.through_plane_slices(24, 5.0, 4.0) == 24  # thick already: as it is
    assert geometry.through_plane_slices(60, 3.0, 4.0) == 60  # within 1.5x: as it is
    assert geometry.through_plane_slices(155, 1.0, None) == 155


class _ThresholdSegmenter:
    """Stands in for inference.Segmenter: 'tumour' where FLAIR is bright; records what it saw."""

    name, device, default_postprocess, recipe = "threshold", "cpu", "none", None

    def __init__(self):
        self.seen = []

    def probabilities(self, volume, progress=None, cancel=None):
        self.seen.append(volume.shape)
        flair = volume[..., 1]
        return (flair > 500).astype(np.float32), None


def test_segment_case_resamples_thin_slices_and_maps_back(tmp_path):
    shape = (40, 44, 120)  # 1 mm slices
    case = cases.read_case(write_case(tmp_path / "C2", affine_for("RAS", (2, 2, 1), shape), shape))
    seg = _ThresholdSegmenter()
    result = geometry.segment_case(seg, case, slice_spacing=4.0)
    assert seg.seen == [(30, 44, 40, 3)]  # 120 slices of 1 mm seen as 30 of 4 mm
    assert result.prob.shape == result.mask.shape == case.shape
    from napari_lggseg.metrics import dice

    assert dice(result.mask, case.label) > 0.85
    native = geometry.segment_case(seg, case, slice_spacing=None)
    assert seg.seen[-1] == (120, 44, 40, 3)
    assert dice(native.mask, case.label) > 0.95
    assert result.missing == ()


def test_segment_case_keeps_thick_slices(tmp_path):
    shape = (40, 44, 12)
    case = cases.read_case(write_case(tmp_path / "C3", affine_for("LPS", (2, 2, 5), shape), shape))
    seg = _ThresholdSegmenter()
    result = geometry.segment_case(seg, case)
    assert seg.seen == [(12, 44, 40, 3)]
    assert result.mask.shape == case.shape


def test_segment_volume_takes_a_layer_scale_and_training_sees_the_same_slices(tmp_path):
    """The widget's path (arrays + a layer's scale) and training's resampling match the case's."""
    shape = (40, 44, 120)
    case = cases.read_case(write_case(tmp_path / "C4", affine_for("LPS", (2, 2, 1), shape), shape))
    seg = _ThresholdSegmenter()
    by_case = geometry.segment_case(seg, case)
    by_volume = geometry.segment_volume(seg, case.image, (1.0, 2.0, 2.0))
    np.testing.assert_array_equal(by_case.prob, by_volume.prob)
    assert seg.seen == [(30, 44, 40, 3)] * 2
    net = geometry.to_network_slices(case.image, case.spacing[0])
    assert net.shape == (30, 44, 40, 3)
    soft = geometry.to_network_slices(case.label.astype(np.float32), case.spacing[0])
    assert ((soft > 0.5).sum() * 4 - case.label.sum()) / case.label.sum() < 0.1  # same volume

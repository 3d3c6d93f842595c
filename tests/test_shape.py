"""Shape features on shapes whose values are known (napari_lggseg.shape)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_lggseg import shape


def ellipsoid_mask(size, semi_axes_mm, spacing=(1.0, 1.0, 1.0)):
    """A digitised ellipsoid: voxels whose centres (in mm) lie inside it."""
    grids = np.indices(size).astype(float)
    centre = [(s - 1) / 2 for s in size]
    q = sum(((g - c) * sp / a) ** 2 for g, c, sp, a in zip(grids, centre, spacing, semi_axes_mm))
    return q <= 1.0


def polar_shape(radius_of_angle, size=241):
    """A 2-D star-convex shape r <= radius(theta) about the centre."""
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    return np.hypot(yy, xx) <= radius_of_angle(np.arctan2(yy, xx))


DISC = polar_shape(lambda t: 60 + 0 * t)
STAR = polar_shape(lambda t: 60 * (1 + 0.25 * np.cos(10 * t)))


def noisy_outline(seed=0):
    rng = np.random.default_rng(seed)
    bumps = rng.normal(0, 3.0, 720)
    return polar_shape(lambda t: 60 + bumps[((t + np.pi) / (2 * np.pi) * 719).astype(int)])


# --------------------------------------------------------------------------- the ellipsoid


def test_minimum_ellipsoid_of_a_cube_is_its_circumscribed_sphere():
    corners = np.array([[x, y, z] for x in (0, 2) for y in (0, 2) for z in (0, 2)], float)
    a, centre = shape.min_volume_ellipsoid(corners)
    np.testing.assert_allclose(centre, [1, 1, 1], atol=1e-3)
    sphere = 4 / 3 * math.pi * math.sqrt(3) ** 3
    assert shape.ellipsoid_volume(a) == pytest.approx(sphere, rel=3e-3)


def test_minimum_ellipsoid_of_points_on_an_ellipsoid_is_that_ellipsoid():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    pts = v * [5.0, 2.0, 1.0] + [10, -3, 7]
    inside = rng.uniform(-0.5, 0.5, size=(500, 3)) * [5, 2, 1] + [10, -3, 7]
    a, centre = shape.min_volume_ellipsoid(np.vstack([pts, inside]))
    assert shape.ellipsoid_volume(a) == pytest.approx(4 / 3 * math.pi * 10, rel=3e-3)
    np.testing.assert_allclose(centre, [10, -3, 7], atol=0.02)
    reach = np.einsum("ij,jk,ik->i", pts - centre, a, pts - centre)
    assert reach.max() <= 1 + 1e-9  # it encloses every point


@pytest.mark.parametrize(
    "semi_axes, spacing",
    [((15, 15, 15), (1, 1, 1)), ((9, 16, 25), (1, 1, 1)), ((20, 12, 12), (4.0, 0.8, 0.8))],
)
def test_sphere_and_ellipsoids_have_bevr_near_one(semi_axes, spacing):
    size = tuple(int(2 * a / s) + 5 for a, s in zip(semi_axes, spacing))
    m = ellipsoid_mask(size, semi_axes, spacing)
    assert shape.bounding_ellipsoid_volume_ratio(m, spacing) == pytest.approx(1.0, abs=0.04)


def test_irregular_tumour_has_lower_bevr_than_an_ellipsoid():
    ball = ellipsoid_mask((40, 40, 40), (14, 14, 14))
    two_lobes = np.zeros((40, 60, 40), bool)
    two_lobes[:, :30] |= ellipsoid_mask((40, 30, 40), (10, 10, 10))
    two_lobes[:, 30:] |= ellipsoid_mask((40, 30, 40), (10, 10, 10))
    assert shape.bounding_ellipsoid_volume_ratio(two_lobes) < 0.75
    assert shape.bounding_ellipsoid_volume_ratio(ball) > 0.95


def test_bevr_does_not_depend_on_the_voxel_spacing():
    """The minimum enclosing ellipsoid is affine-equivariant, so a per-axis spacing scales the
    tumour and its ellipsoid by the same factor (the definition's ratio)."""
    rng = np.random.default_rng(3)
    m = ellipsoid_mask((30, 40, 50), (10, 15, 20))
    m &= rng.random(m.shape) > 0.05  # a rough one, so the value is not trivially 1
    m[:, :, 25:] &= ellipsoid_mask((30, 40, 25), (6, 9, 12))
    ref = shape.bounding_ellipsoid_volume_ratio(m)
    for sp in [(5.0, 0.5, 0.5), (1.0, 2.0, 0.3)]:
        assert shape.bounding_ellipsoid_volume_ratio(m, sp) == pytest.approx(ref, rel=2e-3)


# --------------------------------------------------------------------------- 2-D features


def test_disc_has_angular_sd_and_margin_fluctuation_near_zero():
    assert shape.angular_sd(DISC) < 0.01
    assert shape.margin_fluctuation(DISC) < 0.01


def test_star_and_noisy_outlines_score_clearly_higher_than_a_disc():
    disc_asd, disc_mf = shape.angular_sd(DISC), shape.margin_fluctuation(DISC)
    for irregular in (STAR, noisy_outline()):
        assert shape.margin_fluctuation(irregular) > 5 * disc_mf
        assert shape.angular_sd(irregular) > 5 * disc_asd


def test_margin_fluctuation_grows_with_the_roughness_of_the_margin():
    mf = [
        shape.margin_fluctuation(polar_shape(lambda t, a=a: 60 * (1 + a * np.cos(10 * t))))
        for a in (0.0, 0.05, 0.15, 0.3)
    ]
    assert mf == sorted(mf) and mf[-1] > 10 * mf[0]


def test_2d_features_do_not_depend_on_an_isotropic_pixel_size():
    for feature in (shape.angular_sd, shape.margin_fluctuation):
        ref = feature(STAR)
        assert feature(STAR, (0.43, 0.43)) == pytest.approx(ref, rel=1e-6)
        assert feature(STAR, (2.0, 2.0)) == pytest.approx(ref, rel=1e-6)


def test_2d_features_do_not_depend_on_the_slice_thickness():
    vol = np.stack([DISC[::2, ::2] & False, STAR[::2, ::2], DISC[::2, ::2] & STAR[::2, ::2]])
    thin = shape.shape_features(vol, (1.0, 1.0, 1.0))
    thick = shape.shape_features(vol, (6.0, 1.0, 1.0))
    for k in ("angular_sd", "margin_fluctuation", "slice_area_mm2"):
        assert thick[k] == pytest.approx(thin[k], rel=1e-9)
    assert thick["volume_ml"] == pytest.approx(6 * thin["volume_ml"])


def test_2d_features_use_the_slice_with_the_largest_tumour_area():
    vol = np.zeros((3, 241, 241), bool)
    vol[0] = STAR  # the largest
    vol[2] = polar_shape(lambda t: 40 + 0 * t)
    f = shape.shape_features(vol)
    assert f["largest_slice"] == 0
    assert f["margin_fluctuation"] == pytest.approx(shape.margin_fluctuation(STAR))


# --------------------------------------------------------------------------- volume, order, undefined


def test_volume_in_millilitres_follows_the_spacing():
    m = np.zeros((10, 10, 10), bool)
    m[2:7, 2:6, 2:4] = True  # 40 voxels
    assert shape.shape_features(m)["volume_ml"] == pytest.approx(0.040)
    assert shape.shape_features(m, (5.0, 0.5, 0.5))["volume_ml"] == pytest.approx(0.050)


def test_the_three_study_features_come_first_after_the_volume():
    f = shape.shape_features(ellipsoid_mask((20, 30, 30), (8, 12, 12)))
    assert list(f)[:4] == ["volume_ml", *shape.THREE_FEATURES]
    others = list(f)[4:]
    assert not [k for k in others if any(w in k for w in ("ellipsoid", "angular", "margin"))]


def test_study_features_are_the_first_four_of_shape_features():
    vol = np.zeros((5, 241, 241), bool)
    vol[1], vol[2], vol[3] = DISC, STAR, DISC & STAR
    full, quick = shape.shape_features(vol, (3, 0.5, 0.5)), shape.study_features(vol, (3, 0.5, 0.5))
    assert quick == {k: full[k] for k in ("volume_ml", *shape.THREE_FEATURES)}
    assert shape.study_features(np.zeros((2, 3, 3))) == {
        "volume_ml": 0.0,
        **dict.fromkeys(shape.THREE_FEATURES),
    }


@pytest.mark.parametrize("which", ["empty", "one voxel", "one slice", "a line"])
def test_undefined_features_are_none_never_nan_or_a_crash(which):
    m = np.zeros((6, 20, 20), bool)
    if which == "one voxel":
        m[2, 5, 5] = True
    elif which == "one slice":
        m[3, 4:12, 4:12] = True
    elif which == "a line":
        m[1:5, 7, 7] = True
    f = shape.shape_features(m)
    assert all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in f.values())
    if which in ("empty", "one voxel", "a line"):
        assert f["bounding_ellipsoid_volume_ratio"] is None
    if which in ("empty", "one voxel", "a line"):
        assert f["angular_sd"] is None and f["margin_fluctuation"] is None
    if which == "empty":
        assert f["volume_ml"] == 0.0 and f["largest_slice"] is None
    if which == "one slice":  # a flat tumour: 2-D features yes, no 3-D ellipsoid
        assert f["bounding_ellipsoid_volume_ratio"] is None
        assert f["angular_sd"] is not None and f["margin_fluctuation"] is not None


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="spacing"):
        shape.shape_features(np.ones((3, 3, 3)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="Z, Y, X"):
        shape.shape_features(np.ones((3, 3)))


# --------------------------------------------------------------------------- the report's statistics


def _radiogenomics():
    """training/radiogenomics.py (a script, not a package module)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "training" / "radiogenomics.py"
    spec = importlib.util.spec_from_file_location("radiogenomics", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("table", [[[3, 7], [9, 2]], [[10, 10], [12, 8]], [[0, 5], [6, 1]]])
def test_freeman_halton_is_fisher_exact_on_2x2(table):
    from scipy.stats import fisher_exact

    rg = _radiogenomics()
    assert rg.fisher_exact_2xk(table) == pytest.approx(fisher_exact(table).pvalue, rel=1e-9)


def test_freeman_halton_on_2xk_tables():
    rg = _radiogenomics()
    assert rg.fisher_exact_2xk([[5, 10, 15], [5, 10, 15]]) == pytest.approx(1.0)
    strong = [[15, 2, 1, 0], [1, 3, 14, 16]]
    p = rg.fisher_exact_2xk(strong)
    assert 0 < p < 1e-6
    # the same table with its columns reordered or its rows swapped: the same p
    assert rg.fisher_exact_2xk([[0, 1, 15, 2], [16, 14, 1, 3]]) == pytest.approx(p, rel=1e-9)
    assert rg.fisher_exact_2xk(strong[::-1]) == pytest.approx(p, rel=1e-9)
    # an empty column is no category
    assert rg.fisher_exact_2xk([[3, 7, 0], [9, 2, 0]]) == pytest.approx(
        rg.fisher_exact_2xk([[3, 7], [9, 2]])
    )


def test_association_splits_at_the_median_and_skips_blanks():
    rg = _radiogenomics()
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, None, 0.7]
    groups = ["1", "1", "1", "2", "2", "2", "1", ""]
    res = rg.association(values, groups)
    assert res["n"] == 6 and res["labels"] == ["1", "2"]
    assert res["table"] == [[3, 0], [0, 3]]  # low row, high row


def test_no_patient_gets_a_mask_from_a_model_that_trained_on_it():
    from napari_lggseg.models import ModelInfo

    rg = _radiogenomics()
    shipped = ModelInfo("lgg-fast", None, {"training_data": {"patients": ["A", "B", "C"]}}, True)
    fold0 = ModelInfo(
        "lgg-fold0",
        None,
        {"training_data": {"patients": ["C", "X"]}, "fold": {"held_out": ["A", "B"]}},
        False,
    )
    fold1 = ModelInfo(
        "lgg-fold1",
        None,
        {"training_data": {"patients": ["A", "B"]}, "fold": {"held_out": ["C"]}},
        False,
    )
    choice = rg.choose_models(["A", "B", "C", "X", "NEW"], shipped, [fold0, fold1])
    assert choice == {
        "A": "lgg-fold0",
        "B": "lgg-fold0",
        "C": "lgg-fold1",
        "X": "lgg-fast",
        "NEW": "lgg-fast",
    }
    assert rg.choose_models(["A", "NEW"], shipped, []) == {"A": None, "NEW": "lgg-fast"}
    leaky = ModelInfo(
        "bad", None, {"training_data": {"patients": ["A"]}, "fold": {"held_out": ["A"]}}, False
    )
    assert rg.choose_models(["A"], shipped, [leaky]) == {"A": None}

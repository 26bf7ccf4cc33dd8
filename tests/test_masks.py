"""Claims about hlvm.masks: the one mask object shared by the theory and the MAE models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hlvm.errors import MaskError
from hlvm.graphs import grid_hierarchy, id_grid, latent_nodes
from hlvm.masks import (
    MASK_KINDS,
    Mask,
    aligned_unit_masks,
    block_unit_masks,
    complementary_unit_masks,
    unit_masks,
    variable_counts,
    variable_unit_masks,
    check_unit,
    load_spec,
    mask_from_spec,
    num_masked,
    pixel_to_unit,
    random_unit_masks,
    unit_to_pixel,
)

IDS = id_grid(grid_hierarchy(depth=2, branching=2))  # 4x4 pixels x_r_c


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    ("units", "ratio", "n"), [(16, 0.75, 12), (64, 0.1, 6), (4, 0.5, 2), (16, 0.5, 8), (4, 0.125, 1), (196, 0.75, 147)]
)
def test_num_masked_rounds_half_up(units, ratio, n):
    assert num_masked(units, ratio) == n


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf"), "0.5", True, None])
def test_num_masked_rejects_ratios_outside_open_unit_interval(ratio):
    with pytest.raises(MaskError, match="mask ratio"):
        num_masked(16, ratio)


@pytest.mark.parametrize(("units", "ratio", "what"), [(4, 0.1, "no unit"), (4, 0.9, "every unit")])
def test_num_masked_rejects_ratios_that_round_to_empty_or_full(units, ratio, what):
    with pytest.raises(MaskError, match=what):
        num_masked(units, ratio)


# ----------------------------------------------------------------------------- random masks


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([(8, 8, 1), (8, 8, 2), (8, 8, 4), (12, 6, 3), (16, 16, 4)]),
    st.floats(0.05, 0.95),
    st.integers(0, 2**32 - 1),
)
def test_random_masks_mask_exactly_round_ratio_units_of_whole_units(shape, ratio, seed):
    h, w, unit = shape
    n_units = (h // unit) * (w // unit)
    n = int(np.floor(ratio * n_units + 0.5))
    if n in (0, n_units):
        with pytest.raises(MaskError):
            random_unit_masks(3, h, w, ratio, unit, np.random.default_rng(seed))
        return
    masks = random_unit_masks(5, h, w, ratio, unit, np.random.default_rng(seed))
    assert masks.shape == (5, h, w) and masks.dtype == bool
    units = pixel_to_unit(masks, unit)  # raises on a partly masked unit
    assert (units.reshape(5, -1).sum(axis=1) == n).all()
    assert (masks.reshape(5, -1).sum(axis=1) == n * unit * unit).all()


def test_random_masks_are_determined_by_the_seed():
    a = random_unit_masks(50, 16, 16, 0.5, 2, np.random.default_rng(3))
    b = random_unit_masks(50, 16, 16, 0.5, 2, np.random.default_rng(3))
    c = random_unit_masks(50, 16, 16, 0.5, 2, np.random.default_rng(4))
    assert a.tobytes() == b.tobytes()
    assert not (a == c).all()
    assert Mask.random(16, 16, 0.5, 2, seed=3) == Mask(a[0], 2)
    assert Mask.random(16, 16, 0.5, 2, rng=np.random.default_rng(3)) == Mask(a[0], 2)


def test_random_masks_cover_units_uniformly():
    # Each of 16 units is masked with probability n/16 = 0.25; 4000 masks put each within 4 sd.
    masks = random_unit_masks(4000, 8, 8, 0.25, 2, np.random.default_rng(0))
    freq = pixel_to_unit(masks, 2).mean(axis=0)
    assert np.abs(freq - 0.25).max() < 4 * np.sqrt(0.25 * 0.75 / 4000)


def test_random_mask_needs_exactly_one_of_seed_and_rng():
    with pytest.raises(TypeError):
        Mask.random(4, 4, 0.5)
    with pytest.raises(TypeError):
        Mask.random(4, 4, 0.5, seed=0, rng=np.random.default_rng(0))


# ----------------------------------------------------------------------------- aligned masks


@pytest.mark.parametrize(("side", "unit", "ratio"), [(16, 1, 0.1), (16, 1, 0.5), (16, 2, 0.3), (27, 1, 0.4)])
def test_aligned_masks_count_units_and_fill_whole_subtrees_depth_first(side, unit, ratio):
    b = 3 if side == 27 else 2
    masks = aligned_unit_masks(40, side, side, ratio, unit, b, np.random.default_rng(1))
    hu = side // unit
    n = num_masked(hu * hu, ratio)
    units = pixel_to_unit(masks, unit)
    assert (units.reshape(40, -1).sum(axis=1) == n).all()
    # Depth-first filling: at every block level at most one block is partly masked.
    size = hu
    while size > 1:
        size //= b
        blocks = units.reshape(40, hu // size, size, hu // size, size).sum(axis=(2, 4))  # (K, nb, nb)
        partial = ((blocks > 0) & (blocks < size * size)).reshape(40, -1).sum(axis=1)
        assert (partial <= 1).all()


def test_aligned_masks_are_seeded_and_vary():
    a = aligned_unit_masks(30, 8, 8, 0.3, 1, 2, np.random.default_rng(5))
    b = aligned_unit_masks(30, 8, 8, 0.3, 1, 2, np.random.default_rng(5))
    assert a.tobytes() == b.tobytes()
    assert len({m.tobytes() for m in a}) > 1


@pytest.mark.parametrize(
    ("h", "w", "unit", "b", "message"),
    [(8, 8, 1, 3, "power of 3"), (8, 4, 1, 2, "square"), (8, 8, 3, 2, "does not divide"), (8, 8, 1, 1, "branching")],
)
def test_aligned_masks_reject_grids_that_are_not_a_hierarchy(h, w, unit, b, message):
    with pytest.raises(MaskError, match=message):
        aligned_unit_masks(2, h, w, 0.5, unit, b, np.random.default_rng(0))


# ----------------------------------------------------------------------------- every distribution


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(MASK_KINDS),
    side_unit=st.sampled_from([(8, 1), (8, 2), (16, 2), (16, 4)]),
    ratio=st.floats(0.3, 0.7),
    seed=st.integers(0, 2**31),
)
def test_every_distribution_masks_its_stated_count_of_whole_units_and_is_seeded(kind, side_unit, ratio, seed):
    side, unit = side_unit
    u = (side // unit) ** 2
    try:
        masks = unit_masks(kind, 8, side, side, ratio, unit, np.random.default_rng(seed), spread=0.1)
    except MaskError:  # a count rounding to an empty or full mask, or complementary views that cannot be disjoint
        return
    counts = pixel_to_unit(masks, unit).reshape(8, -1).sum(axis=1)  # whole units, or pixel_to_unit raises
    if kind == "variable":
        lo, hi = variable_counts(u, ratio, 0.1)
        assert ((counts >= lo) & (counts <= hi)).all()
    else:
        assert (counts == num_masked(u, ratio)).all()
    again = unit_masks(kind, 8, side, side, ratio, unit, np.random.default_rng(seed), spread=0.1)
    assert again.tobytes() == masks.tobytes()


def test_complementary_masks_come_in_pairs_with_disjoint_visible_sets_each_like_maes():
    m = complementary_unit_masks(4000, 8, 8, 0.75, 1, np.random.default_rng(0))
    a, b = m[0::2], m[1::2]
    assert not (~a & ~b).any()  # no pixel visible in both masks of a pair
    assert (a.reshape(2000, -1).sum(1) == 48).all() and (b.reshape(2000, -1).sum(1) == 48).all()
    # each mask of the pair is uniform over the pixels, as MAE's: P(masked) = 0.75 everywhere
    assert np.abs(a.mean(0) - 0.75).max() < 0.04 and np.abs(b.mean(0) - 0.75).max() < 0.04
    # at ratio 0.5 the two visible sets tile the image: one mask is the other's complement
    h = complementary_unit_masks(10, 8, 8, 0.5, 2, np.random.default_rng(1))
    assert (h[0::2] == ~h[1::2]).all()
    with pytest.raises(MaskError, match="disjoint visible sets need 2 x 40 <= 64"):
        complementary_unit_masks(2, 8, 8, 0.375, 1, np.random.default_rng(0))


def _components(m: np.ndarray) -> int:
    from scipy.ndimage import label

    return int(label(m)[1])


def test_block_masks_are_rectangles_where_random_masks_scatter():
    rng = np.random.default_rng(3)
    blocks = block_unit_masks(300, 16, 16, 0.4, 1, rng)
    scattered = unit_masks("random", 300, 16, 16, 0.4, 1, rng)
    nb = np.mean([_components(m) for m in blocks])
    nr = np.mean([_components(m) for m in scattered])
    assert nb < 0.25 * nr  # a few rectangles against dozens of specks
    # the fill-up keeps the count exact even where rectangles cannot fit (2x2 units: only 1x1 blocks)
    tiny = block_unit_masks(50, 8, 8, 0.5, 4, rng)
    assert (pixel_to_unit(tiny, 4).reshape(50, -1).sum(1) == 2).all()


def test_variable_masks_cover_their_count_range_and_a_vit_batch_can_share_one():
    rng = np.random.default_rng(5)
    m = variable_unit_masks(2000, 8, 8, 0.5, 1, rng, spread=0.2)
    counts = m.reshape(2000, -1).sum(1)
    lo, hi = variable_counts(64, 0.5, 0.2)
    assert (lo, hi) == (19, 45) and counts.min() == lo and counts.max() == hi
    assert abs(counts.mean() - 32) < 0.6  # uniform over the counts: mean 32
    same = variable_unit_masks(30, 8, 8, 0.5, 1, rng, spread=0.2, same_count=True)
    assert len(set(same.reshape(30, -1).sum(1))) == 1
    with pytest.raises(MaskError, match="must lie inside \\(0, 1\\)"):
        variable_counts(64, 0.15, 0.2)
    with pytest.raises(MaskError, match="unknown mask kind 'checker'"):
        unit_masks("checker", 2, 8, 8, 0.5, 1, rng)


# ----------------------------------------------------------------------------- conversions


def test_unit_and_pixel_grids_round_trip():
    units = np.array([[1, 0], [0, 1]], bool)
    pix = unit_to_pixel(units, 3)
    assert pix.shape == (6, 6) and pix[:3, :3].all() and not pix[:3, 3:].any()
    assert (pixel_to_unit(pix, 3) == units).all()
    m = Mask.from_units(units, 3)
    assert m.unit == 3 and (m.units == units).all() and m.n_masked == 18 and m.ratio == 0.5


def test_tokens_are_row_major_for_any_token_size_dividing_the_unit():
    m = Mask.from_units(np.array([[1, 0], [0, 0]], bool), 2)
    assert m.tokens(2).tolist() == [True, False, False, False]
    assert m.tokens(1).reshape(4, 4)[:2, :2].all() and m.tokens(1).sum() == 4
    with pytest.raises(MaskError, match="whole 4x4 units"):
        Mask(np.eye(8, dtype=bool)).tokens(4)  # a diagonal cuts every 4x4 token


def test_node_ids_round_trip_through_masks():
    masked = ["x_0_0", "x_3_2", "x_1_1"]
    m = Mask.from_nodes(masked, IDS)
    assert m.masked_ids(IDS) == sorted(masked)
    assert mask_from_spec({"masked": masked}, IDS) == m
    assert mask_from_spec(m.to_spec(), IDS) == m
    assert m.render().splitlines()[0] == "x . . ."


def test_mask_is_frozen_and_hashable():
    m = Mask(np.eye(4, dtype=int))
    with pytest.raises(ValueError):
        m.grid[0, 0] = False
    assert m == Mask(np.eye(4, dtype=bool)) and hash(m) == hash(Mask(np.eye(4, dtype=bool)))
    assert m != Mask(np.eye(4, dtype=bool)[::-1])


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("grid", "unit", "message"),
    [
        (np.zeros(4, bool), 1, "2-D"),
        (np.zeros((0, 3), bool), 1, "2-D"),
        (np.full((2, 2), 2), 1, "0 \\(visible\\) or 1"),
        (np.zeros((4, 4), bool), 1, "mask is empty"),
        (np.ones((4, 4), bool), 1, "mask is full"),
        (np.eye(4, dtype=bool), 2, "whole 2x2 units"),
        (np.eye(4, dtype=bool), 3, "does not divide"),
        (np.eye(4, dtype=bool), 0, "positive integer"),
        (np.eye(4, dtype=bool), 1.0, "positive integer"),
    ],
)
def test_mask_rejects_bad_grids(grid, unit, message):
    with pytest.raises(MaskError, match=message) as e:
        Mask(grid, unit)
    assert "\n" not in str(e.value)


def test_check_unit_accepts_divisors_only():
    check_unit(12, 6, 3)
    with pytest.raises(MaskError, match="does not divide the 12x8 image"):
        check_unit(12, 8, 3)


def test_from_nodes_rejects_unknown_and_latent_nodes():
    latents = latent_nodes(grid_hierarchy(depth=2, branching=2))
    with pytest.raises(MaskError, match="unknown node 'x_7_7'"):
        Mask.from_nodes(["x_7_7"], IDS, latents)
    with pytest.raises(MaskError, match="'z_1_0_0' is a latent node"):
        Mask.from_nodes(["z_1_0_0"], IDS, latents)


def test_masked_ids_checks_the_image_shape():
    with pytest.raises(MaskError, match="mask is 2x2 but the image is 4x4"):
        Mask(np.eye(2, dtype=bool)).masked_ids(IDS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one of .* found none"),
        ({"masked": ["x_0_0"], "grid": [[1]]}, "found 'masked' and 'grid'"),
        ({"ratio": 0.5, "masked": ["x_0_0"]}, "found 'masked' and 'ratio'"),
        ({"masked": ["x_0_0"], "seed": 1}, "unknown key 'seed'"),
        ({"masked": "x_0_0"}, "list of observed node ids"),
        ({"masked": []}, "mask is empty"),
        ({"grid": "0101"}, "list of rows"),
        ({"grid": []}, "'grid' is empty"),
        ({"grid": [[0, 1, 0, 1]] * 3}, "must be 4x4 for this image, got 3 rows"),
        ({"grid": [[0, 1, 0]] * 4}, "must be 4x4 for this image"),
        ({"grid": [[0, 2, 0, 0]] * 4}, "values must be 0"),
        ({"grid": [[0, 0.5, 0, 0]] * 4}, "values must be 0"),
        ({"grid": [[1.0, 0, 0, 0]] * 4}, "values must be 0"),
        ({"grid": [[1] * 4] * 4}, "mask is full"),
        ({"ratio": 1.2}, "mask ratio must be in \\(0, 1\\)"),
        ({"ratio": 0.0}, "mask ratio must be in \\(0, 1\\)"),
        ({"ratio": 0.5, "patch_size": 3}, "does not divide the 4x4 image"),
        ({"ratio": 0.5, "seed": -1}, "'seed' must be a non-negative integer"),
        ({"ratio": 0.5, "seed": "0"}, "'seed' must be a non-negative integer"),
    ],
)
def test_bad_specs_raise_one_line_mask_errors(spec, message):
    with pytest.raises(MaskError, match=message) as e:
        mask_from_spec(spec, IDS)
    assert "\n" not in str(e.value)


def test_spec_forms_build_the_masks_they_describe():
    r = mask_from_spec({"ratio": 0.25, "patch_size": 2, "seed": 9, "graph": "g.json"}, IDS)
    assert r == Mask.random(4, 4, 0.25, 2, seed=9) and r.unit == 2 and r.units.sum() == 1
    g = mask_from_spec({"grid": [[1, 1, 0, 0], [1, 1, 0, 0], [0] * 4, [0] * 4]}, IDS)
    assert g.masked_ids(IDS) == ["x_0_0", "x_0_1", "x_1_0", "x_1_1"]


def test_load_spec_reads_objects_and_rejects_the_rest(tmp_path):
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"ratio": 0.5}))
    assert load_spec(good) == {"ratio": 0.5}
    bad = tmp_path / "bad.json"
    bad.write_text("{ratio: 0.5")
    with pytest.raises(MaskError, match="is not valid JSON"):
        load_spec(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(MaskError, match="must be a JSON object, got list"):
        load_spec(arr)
    with pytest.raises(MaskError, match="mask spec not found"):
        load_spec(tmp_path / "missing.json")

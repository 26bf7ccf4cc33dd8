"""Claims about hlvm.predict: the theory's curves over mask ratio x masking unit."""

from __future__ import annotations

import csv
import json
import math
from math import comb

import networkx as nx
import numpy as np
import pytest

from hlvm.errors import ConfigError
from hlvm.graphs import grid_hierarchy
from hlvm.locate import locate
from hlvm.masks import Mask, random_unit_masks
from hlvm.rules import MIN_EFFECT
from hlvm.predict import (
    PredictConfig,
    _cell_rng,
    default_units,
    figure4_masks,
    figure4_rows,
    predict,
    predict_columns,
    verdicts,
    write_outputs,
)

G3 = grid_hierarchy(depth=3, branching=2)  # 8x8 pixels, latent levels 0..2


def test_default_units_are_the_powers_of_the_branching_that_leave_two_units():
    assert default_units(grid_hierarchy(depth=4, branching=2)) == (1, 2, 4, 8)
    assert default_units(grid_hierarchy(depth=2, branching=3)) == (1, 3)


def test_rows_have_the_stable_column_set_in_order():
    rows = predict(G3, ratios=(0.1, 0.5), units=(1, 4), k=20, seed=0)
    assert predict_columns(G3)[-3:] == ["c_level_0", "c_level_1", "c_level_2"]
    assert len(rows) == 2 * 2 * 2  # kinds x units x ratios
    for r in rows:
        assert list(r) == predict_columns(G3)


def test_infeasible_cells_are_marked_and_empty():
    rows = predict(G3, ratios=(0.1, 0.5), units=(4,), k=5, kinds=("random",))
    tiny = next(r for r in rows if r["mask_ratio"] == 0.1)  # 0.1 of 4 units rounds to none
    assert tiny["feasible"] is False and tiny["n_masked_units"] == 0 and math.isnan(tiny["abstraction"])
    ok = next(r for r in rows if r["mask_ratio"] == 0.5)
    assert ok["feasible"] is True and ok["n_masked_units"] == 2


def test_whole_top_blocks_always_share_only_the_root():
    # Units of 4 pixels are the level-1 blocks: every mask leaves them pure and mixes only the root.
    (row,) = predict(G3, ratios=(0.5,), units=(4,), k=50, kinds=("random",))
    assert row["abstraction"] == 1.0 and row["mean_dim_c"] == 2.0 and row["mean_c_nodes"] == 1.0
    assert row["c_level_0"] == 1.0 and row["c_level_2"] == 0.0 and row["abstraction_se"] == 0.0
    assert row["frac_noise_shared"] == pytest.approx(2 / (2 + 4 + 16))


def test_aligned_quarter_masks_one_whole_subtree_and_lifts_c_to_the_root():
    rows = predict(G3, ratios=(0.25,), units=(1,), k=200, kinds=("aligned", "random"))
    aligned, random_ = rows
    assert aligned["abstraction"] == 1.0 and aligned["mean_dim_c"] == 2.0
    # Random pixels almost never fill a whole block: c stays at the deepest latent level.
    assert random_["abstraction"] < 0.05 and random_["c_level_2"] > 0.95


def _p_mixed(n_units: int, n_block: int, n_masked: int) -> float:
    """Probability that a block of ``n_block`` of ``n_units`` units is mixed when exactly ``n_masked`` are masked."""
    all_masked = comb(n_units - n_block, n_masked - n_block) / comb(n_units, n_masked) if n_masked >= n_block else 0
    all_visible = comb(n_units - n_block, n_masked) / comb(n_units, n_masked)
    return 1 - all_masked - all_visible


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75])
def test_mean_shared_size_matches_the_hypergeometric_expectation(ratio):
    k = 2000
    (row,) = predict(G3, ratios=(ratio,), units=(1,), k=k, seed=1, kinds=("random",))
    m = row["n_masked_units"]
    expected = 1 * _p_mixed(64, 64, m) + 4 * _p_mixed(64, 16, m) + 16 * _p_mixed(64, 4, m)
    # |CA| is at most 21, so its sd is at most 10.5: 5 standard errors of the mean.
    assert abs(row["mean_shared_nodes"] - expected) < 5 * 10.5 / math.sqrt(k)
    assert row["mean_noise_shared"] == pytest.approx(row["mean_shared_nodes"] + 1)  # root noise 2, others 1


def test_a_cell_summarises_exactly_the_masks_its_seed_draws():
    (row,) = predict(G3, ratios=(0.3,), units=(2,), k=40, seed=5, kinds=("random",))
    masks = random_unit_masks(40, 8, 8, 0.3, 2, _cell_rng(5, "random", 0.3, 2))
    one = [locate(G3, Mask(m)) for m in masks]
    assert row["mean_dim_c"] == pytest.approx(np.mean([r.dim_c for r in one]))
    assert row["mean_c_nodes"] == pytest.approx(np.mean([len(r.c) for r in one]))
    assert row["abstraction"] == pytest.approx(np.mean([r.abstraction for r in one]))

    def a_of_ca(r):  # the report's predicted A, written out: noise-weighted level of CA
        d = [G3.nodes[v]["noise_dim"] for v in r.shared]
        lv = [G3.nodes[v]["level"] for v in r.shared]
        return 1 - np.dot(d, lv) / np.sum(d) / 2

    assert row["ca_abstraction"] == pytest.approx(np.mean([a_of_ca(r) for r in one]))
    levels = [lv for r in one for lv in r.c_levels]
    assert row["c_level_1"] == pytest.approx(levels.count(1) / len(levels))


def test_predict_is_determined_by_its_seed():
    a = predict(G3, ratios=(0.3, 0.6), units=(1, 2), k=30, seed=2)
    b = predict(G3, ratios=(0.3, 0.6), units=(1, 2), k=30, seed=2)
    c = predict(G3, ratios=(0.3, 0.6), units=(1, 2), k=30, seed=3)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(c)
    # A cell does not depend on which other cells run.
    alone = predict(G3, ratios=(0.6,), units=(2,), k=30, seed=2, kinds=("random",))
    assert alone[0] == next(r for r in a if (r["mask_kind"], r["mask_ratio"], r["mask_unit"]) == ("random", 0.6, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": (0.0, 0.5)}, "mask ratio must be in \\(0, 1\\)"),
        ({"ratios": (1.5,)}, "mask ratio must be in \\(0, 1\\)"),
        ({"ratios": ()}, "at least one mask ratio"),
        ({"ratios": (0.5, 0.5)}, "repeat"),
        ({"units": (3,)}, "does not divide the 8x8 image"),
        ({"units": (0,)}, "positive integer"),
        ({"k": 0}, "positive integer"),
        ({"seed": -1}, "non-negative"),
        ({"kinds": ("blocky",)}, "unknown mask kind 'blocky'"),
    ],
)
def test_bad_options_raise_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        predict(G3, **{"ratios": (0.5,), "k": 2, **kwargs})


def test_aligned_masks_need_a_grid_hierarchy():
    g = nx.DiGraph(G3)
    g.graph.pop("branching")
    with pytest.raises(ConfigError, match="grid hierarchy"):
        predict(g, ratios=(0.5,), k=2, kinds=("aligned",))
    assert predict(g, ratios=(0.5,), units=(1,), k=2, kinds=("random",))[0]["feasible"]


def test_config_serialises():
    cfg = PredictConfig(ratios=(0.2, 0.4), units=(1, 2), k=3)
    assert json.loads(json.dumps(cfg.to_dict())) == {
        "ratios": [0.2, 0.4], "units": [1, 2], "k": 3, "seed": 0, "kinds": ["random", "aligned"], "spread": 0.2
    }


# ----------------------------------------------------------------------------- Figure 4


def test_figure4_masks_are_one_subtree_a_pixel_less_and_a_pixel_more():
    masks = figure4_masks(G3)
    assert sorted(masks) == sorted(f"subtree_l{lv}_{n}" for lv in (1, 2) for n in ("exact", "less", "more"))
    assert masks["subtree_l1_exact"].n_masked == 16
    assert masks["subtree_l1_less"].n_masked == 15 and masks["subtree_l1_more"].n_masked == 17
    rows = {r["mask"]: r for r in figure4_rows(G3)}
    # Exactly a subtree lifts c to the subtree's parent; a pixel less or more leaves a deepest-level c.
    assert rows["subtree_l1_exact"]["c"] == "z_0_0_0" and rows["subtree_l1_exact"]["abstraction"] == 1.0
    assert rows["subtree_l2_exact"]["c"] == "z_1_0_0" and rows["subtree_l2_exact"]["abstraction"] == 0.5
    assert rows["subtree_l1_less"]["c"] == "z_2_1_1" and rows["subtree_l1_more"]["c"] == "z_2_0_2"
    assert rows["subtree_l2_less"]["c"] == "z_2_0_0" and rows["subtree_l2_more"]["c"] == "z_2_0_1"
    assert all(rows[f"subtree_l{lv}_{n}"]["abstraction"] == 0.0 for lv in (1, 2) for n in ("less", "more"))


# ----------------------------------------------------------------------------- verdicts


def _row(kind, ratio, unit, a, se=0.01, feasible=True, k=100):
    return {"mask_kind": kind, "mask_ratio": ratio, "mask_unit": unit, "feasible": feasible, "k": k,
            "ca_abstraction": a if feasible else math.nan, "ca_abstraction_se": se}


def _v(rows, claim):
    return next(v for v in verdicts(rows) if v["claim"] == claim)


def test_claim2_parts_are_each_intermediate_ratio_against_both_extremes():
    rows = [_row("random", r, 1, a) for r, a in ((0.1, 0.2), (0.5, 0.6), (0.9, 0.3))]
    rows += [_row("random", r, 2, a) for r, a in ((0.1, 0.2), (0.3, 0.21), (0.5, 0.6), (0.9, 0.7))]
    v2 = _v(rows, 2)
    got = {p["scope"]: p["verdict"] for p in v2["parts"]}
    # unit 1: 0.6 beats 0.2 and 0.3; unit 2: 0.6 does not beat 0.7, 0.21 beats neither
    assert got == {"unit 1, ratio 0.5": "hold", "unit 2, ratio 0.3": "fail", "unit 2, ratio 0.5": "fail"}
    assert v2["verdict"] == "mixed" and "1 hold, 2 fail of 3 parts" in v2["statement"]


def test_claim2_needs_the_sweeps_extremes_a_real_difference_and_room_to_rise():
    tiny = MIN_EFFECT / 2
    rows = [_row("random", r, 1, a, se=0.0) for r, a in ((0.1, 0.3), (0.5, 0.3 + tiny), (0.9, 0.3))]
    rows += [_row("random", 0.1, 8, 0, feasible=False), _row("random", 0.5, 8, 1.0), _row("random", 0.9, 8, 0, feasible=False)]
    v2 = _v(rows, 2)
    assert [p["verdict"] for p in v2["parts"]][0] == "fail"  # real but below the smallest effect counted
    assert v2["parts"][1]["verdict"].startswith("not testable (ratio 0.1 or 0.9 is infeasible")
    assert v2["verdict"] == "fail"
    only_coarse = [r for r in rows if r["mask_unit"] == 8]
    assert _v(only_coarse, 2)["verdict"] == "not testable"
    ceiling = [_row("aligned", r, 2, a, se=0.0) for r, a in ((0.1, 0.97), (0.5, 1.0), (0.9, 0.96))]
    v = _v(ceiling, 2)
    assert v["parts"][0]["verdict"].startswith("not testable (ceiling") and v["verdict"] == "not testable"


def test_claim3_compares_every_larger_unit_with_the_smallest_and_skips_ceilings():
    rows = [_row("aligned", 0.5, u, a) for u, a in ((1, 0.1), (2, 0.5), (4, 0.9), (8, 0.12))]
    rows += [_row("aligned", 0.25, u, a, se=0.0) for u, a in ((1, 1.0), (2, 1.0))]
    v3 = _v(rows, 3)
    got = {p["scope"]: p["verdict"] for p in v3["parts"]}
    assert got["ratio 0.5, unit 2 vs 1"] == "hold" and got["ratio 0.5, unit 4 vs 1"] == "hold"
    assert got["ratio 0.5, unit 8 vs 1"] == "fail"  # too large: reported as a failing part
    assert got["ratio 0.25, unit 2 vs 1"].startswith("not testable (ceiling")
    assert v3["verdict"] == "mixed"


def test_predict_and_report_share_one_rule_on_the_same_aligned_masks():
    """The issue's disagreement: at unit 4 the sweep's extremes (0.1, 0.9) are infeasible; both say 'not testable'."""
    rows = predict(G3, ratios=(0.1, 0.25, 0.5, 0.75, 0.9), units=(1, 2, 4), k=50, seed=0, kinds=("aligned",))
    v2 = _v(rows, 2)
    unit4 = [p for p in v2["parts"] if p["scope"].startswith("unit 4")]
    assert len(unit4) == 1 and unit4[0]["verdict"].startswith("not testable")
    # whole quadrants lift CA to the root alone: A = 1 at 0.25, 0.5, 0.75 on every unit
    assert {p["scope"]: p["verdict"] for p in v2["parts"] if p["scope"].startswith("unit 1")} == {
        "unit 1, ratio 0.25": "hold", "unit 1, ratio 0.5": "hold", "unit 1, ratio 0.75": "hold"}


# ----------------------------------------------------------------------------- output


def test_write_outputs_writes_tables_verdicts_and_figures(tmp_path):
    rows = predict(G3, ratios=(0.1, 0.5, 0.9), units=(1, 2), k=10)
    fig4 = figure4_rows(G3)
    out = write_outputs(tmp_path, G3, rows, fig4, verdicts(rows), {"k": 10})
    assert sorted(out.files) == sorted(
        ["predict.csv", "figure4.csv", "verdicts.json", "config.json", "heatmap.png", "lines.png"]
    )
    with open(tmp_path / "predict.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == predict_columns(G3) and len(table) == len(rows)
    assert float(table[0]["mean_dim_c"]) == pytest.approx(rows[0]["mean_dim_c"])
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "verdicts.json").read_text())[0]["claim"] == 2

"""hlvm.report: loading a results table, abstraction, the verdict rules, and the written report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hlvm.errors import DataError
from hlvm.report import (
    REQUIRED_COLUMNS,
    abstraction,
    build_report,
    cells,
    claim1,
    claim2,
    claim3,
    load_results,
    overall,
    summarise_masks,
    Verdict,
)

# A two-level toy: the root (level 0, noise_dim 2) and two level-1 latents.
NODES = [("r", 0, 2), ("a", 1, 1), ("b", 1, 1)]


def toy_rows(spec, *, point_prefix="p", floor=0.0):
    """Rows from ``spec``: {(ratio, unit): [(roles per node, r2 per node), ...] per seed x mask}."""
    rows = []
    for (ratio, unit), masks in spec.items():
        for i, (roles, r2) in enumerate(masks):
            seed, mi = i // 2, i % 2
            pid = f"{point_prefix}-{ratio}-{unit}-{seed}"
            for (node, level, nd), role, r in zip(NODES, roles, r2):
                rows.append(
                    dict(point_id=pid, mask_ratio=ratio, mask_unit=unit, seed=seed, mask_index=mi, node=node,
                         level=level, role=role, noise_dim=nd, r2_noise=floor if role == "private_masked" else r,
                         agreement=0.9)
                )
    return rows


def write_rows(path: Path, rows, drop=()):
    cols = [c for c in rows[0] if c not in drop]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


ROOT_ONLY = ("c", "private_masked", "private_visible")  # CA = {root}: A = 1
ROOT_A = ("shared", "c", "private_masked")  # CA = {root, a}: A = 1 - 1/3


def perfect(roles, jitter=0.0):
    """An encoder holding CA's noise (the level-1 node's R^2 lowered by ``jitter``) and nothing private."""
    r2 = [1.0 if roles[0] in ("c", "shared") else 0.0]
    r2 += [(1.0 - jitter) if r in ("c", "shared") else 0.0 for r in roles[1:]]
    return roles, r2


# ----------------------------------------------------------------------------- abstraction


def test_abstraction_weights_noise_dims_by_level():
    assert abstraction([0, 1, 1], [2, 1, 1], [1, 0, 0], 1) == 1.0
    assert abstraction([0, 1, 1], [2, 1, 1], [1, 1, 0], 1) == pytest.approx(1 - 1 / 3)
    assert abstraction([0, 1, 1], [2, 1, 1], [1, 1, 1], 1) == 0.5
    # membership is clipped to [0, 1]: negative R^2 holds nothing, > 1 cannot happen but is capped
    assert abstraction([0, 1], [1, 1], [1, -0.3], 1) == 1.0
    assert math.isnan(abstraction([0, 1], [1, 1], [0, 0], 1))


def test_perfect_encoder_measures_the_predicted_abstraction():
    spec = {(0.5, 1): [perfect(ROOT_A), perfect(ROOT_ONLY)] * 2}
    ms = summarise_masks(load_like(toy_rows(spec)))
    for m in ms:
        assert m.a_measured == pytest.approx(m.a_predicted)
    assert sorted({round(m.a_predicted, 6) for m in ms}) == [round(1 - 1 / 3, 6), 1.0]


def load_like(rows):
    """Rows as load_results types them (the toy rows are already typed; fill the optional columns)."""
    out = []
    for r in rows:
        d = dict(r)
        for k, v in (("mask_kind", "random"), ("objective", "mae"), ("bottleneck", ""), ("representation", "code"), ("r2_value", float("nan"))):
            d.setdefault(k, v)
        out.append(d)
    return out


# ----------------------------------------------------------------------------- verdict rules


def claim2_spec(mid_roles, ext_roles, n=4):
    """Three ratios at unit 1: the middle one has ``mid_roles`` masks, the extremes ``ext_roles``; jitter keeps SE > 0."""
    jit = [0.0, 0.1, 0.05, 0.15][:n]
    return {
        (0.1, 1): [perfect(ext_roles, j) for j in jit],
        (0.5, 1): [perfect(mid_roles, j) for j in jit],
        (0.9, 1): [perfect(ext_roles, j) for j in jit],
    }


def test_claim2_holds_when_intermediate_ratios_are_clearly_more_abstract():
    table = cells(summarise_masks(load_like(toy_rows(claim2_spec(ROOT_ONLY, ROOT_A)))))
    (v,) = claim2(table)
    assert v.verdict == "hold" and v.predicted.startswith("hold")
    assert "D = A(0.5)" in v.numbers


def test_claim2_fails_when_extremes_are_clearly_more_abstract():
    table = cells(summarise_masks(load_like(toy_rows(claim2_spec(ROOT_A, ROOT_ONLY)))))
    (v,) = claim2(table)
    assert v.verdict == "fail" and v.predicted.startswith("fail")


def test_claim2_is_inconclusive_when_the_difference_is_within_noise():
    # Same roles everywhere; only the probe's noise differs, in both directions.
    spec = {
        (0.1, 1): [perfect(ROOT_A, j) for j in (0.0, 0.6, 0.1, 0.5)],
        (0.5, 1): [perfect(ROOT_A, j) for j in (0.5, 0.0, 0.6, 0.1)],
        (0.9, 1): [perfect(ROOT_A, j) for j in (0.1, 0.5, 0.0, 0.6)],
    }
    (v,) = claim2(cells(summarise_masks(load_like(toy_rows(spec)))))
    assert v.verdict == "inconclusive"


def test_claim2_needs_three_ratios_and_claim3_two_units():
    spec = {(0.1, 1): [perfect(ROOT_A, j) for j in (0, 0.1)], (0.5, 1): [perfect(ROOT_ONLY, j) for j in (0, 0.1)]}
    table = cells(summarise_masks(load_like(toy_rows(spec))))
    assert claim2(table) == [] and claim3(table) == []


def test_claim3_holds_when_a_larger_unit_is_more_abstract():
    spec = {(0.5, 1): [perfect(ROOT_A, j) for j in (0, 0.1, 0.05, 0.15)], (0.5, 2): [perfect(ROOT_ONLY, j) for j in (0, 0.1, 0.05, 0.15)]}
    (v,) = claim3(cells(summarise_masks(load_like(toy_rows(spec)))))
    assert v.verdict == "hold" and "A(u=2) - A(u=1)" in v.numbers


def test_claim1_rules():
    good = {(0.5, 1): [perfect(ROOT_A, j) for j in (0, 0.05)]}
    (v,) = claim1(summarise_masks(load_like(toy_rows(good))))
    assert v.verdict == "hold"
    weak = {(0.5, 1): [(ROOT_A, [0.3, 0.2, 0.0]), (ROOT_A, [0.35, 0.25, 0.0])]}
    (v,) = claim1(summarise_masks(load_like(toy_rows(weak))))
    assert v.verdict == "fail" and "R^2(CA noise) 0.275" in v.numbers
    middling = {(0.5, 1): [(ROOT_A, [0.7, 0.6, 0.0]), (ROOT_A, [0.7, 0.6, 0.0])]}
    assert claim1(summarise_masks(load_like(toy_rows(middling))))[0].verdict == "inconclusive"
    # a floor far above 0 means the probe itself is broken: no verdict on the model
    (v,) = claim1(summarise_masks(load_like(toy_rows(good, floor=0.4))))
    assert v.verdict == "inconclusive" and "s_m floor 0.400" in v.numbers


def test_overall_combines_parts():
    def vs(*xs):
        return [Verdict(2, "s", x, "") for x in xs]

    assert overall(vs("hold", "inconclusive")) == "hold"
    assert overall(vs("fail", "fail")) == "fail"
    assert overall(vs("hold", "fail")) == "mixed"
    assert overall(vs("inconclusive")) == "inconclusive"
    assert overall([]) == "inconclusive"


# ----------------------------------------------------------------------------- files


def test_report_from_a_small_results_file(tmp_path):
    spec = claim2_spec(ROOT_ONLY, ROOT_A)
    spec[(0.5, 2)] = [perfect(ROOT_ONLY, j) for j in (0, 0.1, 0.05, 0.15)]
    rows = toy_rows(spec)
    write_rows(tmp_path / "results.csv", rows)
    (tmp_path / "prediction.csv").write_text("mask_kind,mask_ratio,mask_unit,abstraction\nrandom,0.5,1,0.9\n")
    path = build_report(tmp_path)
    text = path.read_text()
    assert "| 2. extreme mask ratios give a low-level c; intermediate ratios a higher-level one | random masks, mae, no bottleneck, code representation | **hold** | hold | 1 / 0 / 0 |" in text
    assert "Verdict rules" in text and "D - 2 SE_D > 0" in text and "D >= 0.05" in text
    figs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figs == ["abstraction_random-mae.png", "agreement_random-mae.png", "recovery_vs_ratio_random-mae.png", "recovery_vs_unit_random-mae.png"]
    for f in figs:
        assert f"]({f})" in text
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert verdicts["claims"]["1"]["verdict"] == "hold"
    assert verdicts["claims"]["2"]["verdict"] == "hold" and verdicts["claims"]["2"]["theory"] == "hold"
    assert verdicts["claims"]["2"]["by_group"] == {"random masks, mae, no bottleneck, code representation": {"verdict": "hold", "theory": "hold"}}


@pytest.mark.parametrize("missing", ["r2_noise", "role", "mask_unit"])
def test_missing_columns_are_a_data_error_naming_them(tmp_path, missing):
    write_rows(tmp_path / "results.csv", toy_rows(claim2_spec(ROOT_ONLY, ROOT_A)), drop=(missing,))
    with pytest.raises(DataError, match=f"lacks column\\(s\\) {missing}"):
        load_results(tmp_path)


def test_bad_results_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_results(tmp_path / "nope")
    (tmp_path / "results.csv").write_text(",".join(REQUIRED_COLUMNS) + "\n")
    with pytest.raises(DataError, match="no rows"):
        load_results(tmp_path)
    rows = toy_rows(claim2_spec(ROOT_ONLY, ROOT_A))
    rows[3]["role"] = "mystery"
    write_rows(tmp_path / "results.csv", rows)
    with pytest.raises(DataError, match="line 5: unknown role 'mystery'"):
        load_results(tmp_path)
    rows[3]["role"], rows[3]["mask_ratio"] = "c", "half"
    write_rows(tmp_path / "results.csv", rows)
    with pytest.raises(DataError, match="line 5"):
        load_results(tmp_path)


def test_loaded_rows_keep_raw_numbers(tmp_path):
    rows = toy_rows(claim2_spec(ROOT_ONLY, ROOT_A))
    write_rows(tmp_path / "results.csv", rows)
    got = load_results(tmp_path / "results.csv")
    assert [g["r2_noise"] for g in got] == [float(r["r2_noise"]) for r in rows]
    assert {g["mask_kind"] for g in got} == {"random"}  # optional column defaulted
    assert np.isnan(got[0]["r2_value"])


def test_interval_rule_edges():
    from hlvm.report import _interval_verdict

    assert _interval_verdict(0.2, 0.05) == "hold"
    assert _interval_verdict(0.04, 0.001) == "fail"  # real but below the smallest effect counted
    assert _interval_verdict(0.0, 0.0) == "fail"
    assert _interval_verdict(-0.2, 0.05) == "fail"
    assert _interval_verdict(0.1, 0.06) == "inconclusive"
    assert _interval_verdict(0.2, float("nan")) == "inconclusive"

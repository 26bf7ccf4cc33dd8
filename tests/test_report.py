"""hlvm.report and hlvm.rules: loading a results table, abstraction, the verdict rules beside the controls, the report.

Rows here are hand-made: a two-level toy hierarchy (the root with noise dim 2,
two level-1 latents with 1) whose roles and R^2 per node are set directly, for
several encoders and seeds, so that every rule can be checked against an
answer worked out by hand.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hlvm import rules
from hlvm.errors import DataError
from hlvm.report import REQUIRED_COLUMNS, abstraction, build_report, judge, load_results, summarise_masks
from hlvm.rules import EVIDENCE, EXPLAINED, Estimate

# A two-level toy: the root (level 0, noise_dim 2) and two level-1 latents.
NODES = [("r", 0, 2), ("a", 1, 1), ("b", 1, 1)]
ROOT_ONLY = ("c", "private_masked", "private_visible")  # CA = {root}: A = 1
ROOT_A = ("shared", "c", "private_masked")  # CA = {root, a}: A = 1 - 1/3


def held(roles, ca=1.0, leak=0.0):
    """R^2 per node: ``ca`` on CA's nodes, 0 on the masked side's, ``leak`` on the visible side's."""
    return [ca if r in ("c", "shared") else (leak if r == "private_visible" else 0.0) for r in roles]


def toy_rows(spec, *, encoder="trained", seeds=(0, 1, 2), jitter=0.01, masks=2, **extra):
    """Rows from ``spec``: {(ratio, unit): roles, or (roles, ca, leak)} for every seed and mask.

    Each seed's R^2 is shifted by ``jitter * seed`` so that the SE over seeds is small but not 0.
    """
    rows = []
    for (ratio, unit), what in spec.items():
        roles, ca, leak = (what, 1.0, 0.0) if isinstance(what[0], str) else what
        for seed in seeds:
            pid = f"{encoder}-{ratio}-{unit}-{seed}-" + "-".join(f"{k}={v}" for k, v in sorted(extra.items()))
            for mi in range(masks):
                r2 = [x - jitter * seed if x else 0.0 for x in held(roles, ca, leak)]
                ca_nodes = [x for x, r in zip(r2, roles) if r in ("c", "shared")]
                v_nodes = [x for x, r in zip(r2, roles) if r == "private_visible"]
                for (node, level, nd), role, r in zip(NODES, roles, r2):
                    rows.append(dict(
                        point_id=pid, encoder=encoder, mask_ratio=ratio, mask_unit=unit, seed=seed, mask_index=mi,
                        mask_kind="random", node=node, level=level, role=role, noise_dim=nd, r2_noise=r,
                        r2_noise_linear=r, agreement=0.5,
                        r2_ca_noise=float(np.mean(ca_nodes)) if ca_nodes else "",
                        r2_private_masked_noise=0.0,
                        r2_private_visible_noise=float(np.mean(v_nodes)) if v_nodes else leak,
                        r2_ca_noise_linear=float(np.mean(ca_nodes)) if ca_nodes else "",
                        r2_private_masked_noise_linear=0.0,
                        r2_private_visible_noise_linear=float(np.mean(v_nodes)) if v_nodes else leak,
                        **extra,
                    ))
    return rows


def write_rows(path: Path, rows, drop=()):
    cols = []
    for r in rows:
        cols.extend(c for c in r if c not in cols and c not in drop)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows(rows)


def typed(tmp_path, rows):
    write_rows(tmp_path / "results.csv", rows)
    return load_results(tmp_path)


CLAIM2 = {(0.1, 1): ROOT_A, (0.5, 1): ROOT_ONLY, (0.9, 1): ROOT_A}  # intermediate ratio more abstract: holds


# ----------------------------------------------------------------------------- abstraction and summaries


def test_abstraction_weights_noise_dims_by_level():
    assert abstraction([0, 1, 1], [2, 1, 1], [1, 0, 0], 1) == 1.0
    assert abstraction([0, 1, 1], [2, 1, 1], [1, 1, 0], 1) == pytest.approx(1 - 1 / 3)
    assert abstraction([0, 1, 1], [2, 1, 1], [1, 1, 1], 1) == 0.5
    # membership is clipped to [0, 1]: negative R^2 holds nothing
    assert abstraction([0, 1], [1, 1], [1, -0.3], 1) == 1.0
    assert math.isnan(abstraction([0, 1], [1, 1], [0, 0], 1))


def test_a_perfect_code_measures_the_predicted_abstraction_and_a_all_counts_the_leak(tmp_path):
    rows = typed(tmp_path, toy_rows({(0.5, 1): ROOT_A, (0.25, 1): (ROOT_ONLY, 1.0, 1.0)}, jitter=0.0))
    for m in summarise_masks(rows):
        assert m.values["a"] == pytest.approx(m.values["a_pred"]) == pytest.approx(m.values["a_linear"])
        if m.mask_ratio == 0.25:  # the leak of b (level 1) lowers A over everything held
            assert m.values["a"] == 1.0 and m.values["a_all"] == pytest.approx(1 - 1 / 3)
            assert m.values["selectivity"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- the rules


def test_decide_uses_students_t_over_replicates():
    assert rules.critical(3) == pytest.approx(4.303, abs=1e-3)
    assert rules.critical(10**6) == pytest.approx(1.96, abs=1e-3)
    assert rules.decide(Estimate(0.2, 0.03, 3)) == "hold"  # 0.2 - 4.30 * 0.03 > 0
    assert rules.decide(Estimate(0.2, 0.05, 3)) == "inconclusive"  # would hold at 2 SE, not at t(2)
    assert rules.decide(Estimate(0.2, 0.05, 1000)) == "hold"
    assert rules.decide(Estimate(0.04, 0.001, 5)) == "fail"  # real but below the smallest effect counted
    assert rules.decide(Estimate(0.0, 0.0, 3)) == "fail"
    assert rules.decide(Estimate(-0.2, 0.05, 3)) == "fail"
    assert rules.decide(Estimate(0.3, float("nan"), 1)) == "inconclusive"  # one seed decides nothing


def test_overall_combines_parts():
    assert rules.overall(["hold", "inconclusive"]) == "hold"
    assert rules.overall(["fail", "fail", "not testable (ceiling: x)"]) == "fail"
    assert rules.overall(["hold", "fail"]) == "mixed"
    assert rules.overall(["inconclusive"]) == "inconclusive"
    assert rules.overall(["not testable (ceiling: x)"]) == rules.NOT_TESTABLE
    assert rules.overall([]) == rules.NOT_TESTABLE


def test_the_evidence_rule_on_hand_made_rows(tmp_path):
    """Trained equal to the pixels: explained without training; trained beating them by 0.2: evidence."""
    pix = toy_rows(CLAIM2, encoder="pixels", jitter=0.01)
    same = toy_rows(CLAIM2, encoder="trained", jitter=0.01, train_mask_kind="random", objective="mae")
    (r2,) = [r for r in judge(typed(tmp_path, same + pix))["claims"] if r.claim == "2" and r.measure == "A"]
    assert r2.verdicts["trained"] == r2.verdicts["pixels"] == "hold"
    assert [e[1] for e in r2.evidence] == [EXPLAINED] and r2.evidence_summary().startswith(EXPLAINED)
    # The trained model's intermediate ratio holds only the root where the pixels hold root and a: A 1 vs 2/3.
    pix_flat = toy_rows({**CLAIM2, (0.5, 1): ROOT_A}, encoder="pixels", jitter=0.01)
    (r2,) = [r for r in judge(typed(tmp_path, same + pix_flat))["claims"] if r.claim == "2" and r.measure == "A"]
    assert r2.verdicts["trained"] == "hold" and r2.verdicts["pixels"] == "fail"
    ((scope, label, d),) = r2.evidence
    assert label == EVIDENCE and d.mean == pytest.approx(1 / 3, abs=0.02) and d.n == 3
    # Claim 1: a trained code 0.2 below the pixels on R^2(CA) is evidence too (of a difference, not of success).
    low = toy_rows({(0.5, 1): (ROOT_A, 0.75, 0.0)}, encoder="trained", train_mask_kind="random", objective="mae")
    (c1,) = [r for r in judge(typed(tmp_path, low + toy_rows({(0.5, 1): ROOT_A}, encoder="pixels")))["claims"] if r.claim == "1"]
    assert c1.evidence[0][1] == EVIDENCE and c1.evidence[0][2].mean == pytest.approx(-0.25, abs=1e-9)


def test_claim2_is_judged_per_intermediate_ratio_and_claim3_per_larger_unit(tmp_path):
    spec = {(0.1, 1): ROOT_A, (0.3, 1): ROOT_A, (0.5, 1): ROOT_ONLY, (0.9, 1): ROOT_A,
            (0.5, 2): ROOT_ONLY, (0.1, 2): ROOT_ONLY}
    j = judge(typed(tmp_path, toy_rows(spec)), ratios=[0.1, 0.3, 0.5, 0.9])
    c2 = next(r for r in j["claims"] if r.claim == "2" and r.measure == "A")
    got = {p.scope: p.verdict for p in c2.parts["trained"]}
    assert got["unit 1, ratio 0.5"] == "hold" and got["unit 1, ratio 0.3"] == "fail"
    assert got["unit 2"].startswith("not testable (ratio 0.1 or 0.9 is infeasible")
    assert c2.verdicts["trained"] == "mixed" and c2.verdicts["theory"] == "mixed"
    c3 = next(r for r in j["claims"] if r.claim == "3" and r.measure == "A")
    got3 = {p.scope: p.verdict for p in c3.parts["trained"]}
    assert got3["ratio 0.1, unit 2 vs 1"] == "hold"
    assert got3["ratio 0.5, unit 2 vs 1"].startswith("not testable (ceiling")  # A = 1 already at unit 1


def test_theorem2_cells_judge_a_dim_c_wide_code_beside_the_pixels(tmp_path):
    bott = dict(train_mask_kind="aligned", objective="mae", bottleneck="dim_c", bottleneck_width=2, dim_c=2)
    trained = toy_rows({(0.25, 1): (ROOT_ONLY, 0.96, 0.02)}, **bott)
    pixels = toy_rows({(0.25, 1): (ROOT_ONLY, 0.99, 0.98)}, encoder="pixels", dim_c=2)
    oracle = toy_rows({(0.25, 1): (ROOT_ONLY, 0.995, 0.0)}, encoder="oracle", dim_c=2)
    j = judge(typed(tmp_path, trained + pixels + oracle))
    ((slug, (cell,)),) = j["theorem2"].items()
    assert cell.dim_c == 2 and cell.verdicts == {"trained": "hold", "pixels": "fail", "oracle": "hold"}
    assert cell.evidence[0] == EVIDENCE and cell.evidence[1].mean == pytest.approx(0.94 - 0.01, abs=0.02)
    # a wide code (no bottleneck) is not Theorem 2's setting: no cell
    wide = toy_rows({(0.25, 1): ROOT_ONLY}, train_mask_kind="random", objective="mae", dim_c=2)
    assert judge(typed(tmp_path, wide + pixels))["theorem2"] == {}


def test_theorem2_evidence_about_training_needs_the_trained_code_to_beat_every_linear_code_of_width_dim_c(tmp_path):
    bott = dict(train_mask_kind="aligned", objective="mae", bottleneck="dim_c", bottleneck_width=2, dim_c=2)
    width = dict(bottleneck=2, bottleneck_width=2, dim_c=2)
    spec = {(0.25, 1): (ROOT_ONLY, 0.96, 0.02), (0.5, 1): (ROOT_ONLY, 0.96, 0.02)}
    trained = toy_rows(spec, **bott)
    pixels = toy_rows(spec | {k: (ROOT_ONLY, 0.99, 0.98) for k in spec}, encoder="pixels", dim_c=2)
    # PCA as selective as training at ratio 0.25, far less at 0.5; the linear MAE and the random projection weak.
    pca = toy_rows({(0.25, 1): (ROOT_ONLY, 0.96, 0.02), (0.5, 1): (ROOT_ONLY, 0.5, 0.3)}, encoder="pca", **width)
    lmae = toy_rows({k: (ROOT_ONLY, 0.6, 0.2) for k in spec}, encoder="linear_mae", **width)
    rp = toy_rows({k: (ROOT_ONLY, 0.4, 0.3) for k in spec}, encoder="random_projection", **width)
    unt = toy_rows({k: (ROOT_ONLY, 0.3, 0.1) for k in spec}, encoder="untrained", **width)
    wide_pca = toy_rows({k: (ROOT_ONLY, 0.99, 0.9) for k in spec}, encoder="pca", bottleneck="", bottleneck_width="", dim_c=2)
    j = judge(typed(tmp_path, trained + pixels + pca + lmae + rp + unt + wide_pca))
    ((slug, cells),) = j["theorem2"].items()
    by = {c.key: c for c in cells}
    same, beaten = by[(0.25, 1)], by[(0.5, 1)]
    assert same.verdicts["pca"] == "hold" and same.verdicts["trained"] == "hold"
    assert same.against.label == f"{rules.EXPLAINED_LINEAR} (pca as well)" and same.against.control == "pca"
    assert beaten.against.label == rules.EVIDENCE_TRAINING and beaten.against.control == "linear_mae"  # smallest margin
    assert set(beaten.against.per_control) == {"untrained", "pca", "random_projection", "linear_mae"}
    # The wide PCA stands beside no dim_c code: the width decides which controls a panel holds.
    assert beaten.selectivity["pca"].mean == pytest.approx(0.5 - 0.3, abs=0.02)
    text = build_report(tmp_path).read_text()
    assert "## Against the strongest control of the same width" in text
    assert f"| {rules.EVIDENCE_TRAINING} in 1 of 2 cells; {rules.EXPLAINED_LINEAR} (pca as well) in 1 |" in text
    assert f"{rules.EVIDENCE_TRAINING} (Δ vs linear_mae" in text


def test_untrained_control_matches_the_arms_width_cell_by_cell(tmp_path):
    arm = dict(train_mask_kind="aligned", objective="mae", bottleneck="dim_c")
    trained = toy_rows({(0.1, 1): ROOT_A}, bottleneck_width=3, **arm) + toy_rows({(0.5, 1): ROOT_ONLY}, bottleneck_width=2, **arm)
    unt = (toy_rows({(0.1, 1): ROOT_A}, encoder="untrained", bottleneck=3, bottleneck_width=3)
           + toy_rows({(0.1, 1): ROOT_A}, encoder="untrained", bottleneck="", bottleneck_width="")
           + toy_rows({(0.5, 1): ROOT_ONLY}, encoder="untrained", bottleneck=2, bottleneck_width=2))
    (panel,) = judge(typed(tmp_path, trained + unt))["panels"]
    series = panel.series["untrained"]
    assert series.cells == [(0.1, 1), (0.5, 1)] and series.widths((0.1, 1)) == {3} and series.widths((0.5, 1)) == {2}


# ----------------------------------------------------------------------------- files


def test_report_from_a_small_results_file_with_controls(tmp_path):
    rows = toy_rows({**CLAIM2, (0.5, 2): ROOT_ONLY}, train_mask_kind="random", objective="mae")
    rows += toy_rows({**CLAIM2, (0.5, 2): ROOT_ONLY}, encoder="pixels")
    rows += toy_rows({**CLAIM2, (0.5, 2): ROOT_ONLY}, encoder="oracle")
    write_rows(tmp_path / "results.csv", rows)
    (tmp_path / "prediction.csv").write_text("mask_kind,mask_ratio,mask_unit,abstraction\nrandom,0.5,1,0.9\n")
    path = build_report(tmp_path)
    text = path.read_text()
    # One column per encoder the file has (trained, pixels, oracle), then the theory and the two evidence tests.
    assert "| 2 | random eval masks; mae, random-trained, no bottleneck | **hold** | **hold** | **hold** | hold | explained without training" in text
    assert "| trained vs pixels | trained vs its width's controls |" in text
    assert f"| {rules.NO_CONTROL} |" in text  # no control of the trained code's width in this file
    assert "Evidence about MAE" in text and "Student's" in text  # the rules are printed
    assert "lacks the columns of `hlvm.predict`" in text  # a prediction.csv with wrong columns is said, not dropped silently
    figs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figs == ["abstraction_random-mae-random.png", "controls_random-mae-random.png", "levels_random-mae-random.png",
                    "selectivity_random-mae-random.png"]
    for f in figs:
        assert f"]({f})" in text and (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    c2 = next(c for c in verdicts["claims"] if c["claim"] == "2" and c["measure"] == "A")
    assert c2["verdicts"] == {"trained": "hold", "pixels": "hold", "oracle": "hold", "theory": "hold"}
    assert verdicts["has_controls"] and verdicts["seeds"] == [0, 1, 2]
    assert {"hlvm_version", "git_commit", "config_hash", "created_utc"} <= set(verdicts["provenance"])
    assert verdicts["source_provenance"] is None  # no sweep.json here
    assert "Report: hlvm " in text


def test_a_results_file_from_before_controls_is_read_and_said_to_have_none(tmp_path):
    rows = toy_rows(CLAIM2, seeds=(0,))
    write_rows(tmp_path / "results.csv", rows,
               drop=("encoder", "r2_ca_noise", "r2_private_masked_noise", "r2_private_visible_noise", "r2_ca_noise_linear",
                     "r2_private_masked_noise_linear", "r2_private_visible_noise_linear"))
    got = load_results(tmp_path)
    assert {r["encoder"] for r in got} == {"trained"} and not got.has_controls and not got.has_mask_figures
    text = build_report(tmp_path).read_text()
    assert "This results file holds no controls" in text and "One seed" in text
    assert "latent nodes only" in text


@pytest.mark.parametrize("missing", ["r2_noise", "role", "mask_unit"])
def test_missing_columns_are_a_data_error_naming_them(tmp_path, missing):
    write_rows(tmp_path / "results.csv", toy_rows(CLAIM2), drop=(missing,))
    with pytest.raises(DataError, match=f"lacks column\\(s\\) {missing}"):
        load_results(tmp_path)


def test_bad_results_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_results(tmp_path / "nope")
    (tmp_path / "results.csv").write_text(",".join(REQUIRED_COLUMNS) + "\n")
    with pytest.raises(DataError, match="no rows"):
        load_results(tmp_path)
    rows = toy_rows(CLAIM2)
    rows[3]["role"] = "mystery"
    write_rows(tmp_path / "results.csv", rows)
    with pytest.raises(DataError, match="line 5: unknown role 'mystery'"):
        load_results(tmp_path)
    rows[3]["role"], rows[3]["mask_ratio"] = "c", "half"
    write_rows(tmp_path / "results.csv", rows)
    with pytest.raises(DataError, match="line 5"):
        load_results(tmp_path)
    rows[3]["mask_ratio"] = 0.1
    write_rows(tmp_path / "results.csv", rows)
    text = (tmp_path / "results.csv").read_text()
    (tmp_path / "results.csv").write_text(text[: text.rindex(",", 0, len(text) - 40)] + "\n")  # a torn last row
    with pytest.raises(DataError, match=f"line {len(rows) + 1} has fewer fields than the header"):
        load_results(tmp_path)
    (tmp_path / "results.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20)
    with pytest.raises(DataError, match="not a text CSV file|lacks column"):
        load_results(tmp_path)


def test_loaded_rows_keep_raw_numbers(tmp_path):
    rows = toy_rows(CLAIM2)
    got = typed(tmp_path, rows)
    assert [g["r2_noise"] for g in got] == [float(r["r2_noise"]) for r in rows]
    assert {g["mask_kind"] for g in got} == {"random"}
    assert np.isnan(got[0]["r2_value"])  # optional column absent: NaN


def test_report_out_naming_a_file_is_a_data_error(tmp_path):
    write_rows(tmp_path / "results.csv", toy_rows(CLAIM2))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        build_report(tmp_path, tmp_path / "afile")


def test_arms_are_compared_with_their_one_factor_reference_and_the_best_arm_keeps_ca(tmp_path):
    # Every arm sees the same masks (roles: CA = {root, a}, predicted A 2/3); the arms differ in what they recover.
    cells = {(0.5, 1): ROOT_A, (0.5, 2): ROOT_A}

    def with_r2(rows, root, a, ca):
        for r in rows:
            if r["node"] in ("r", "a"):
                r["r2_noise"] = r["r2_noise_linear"] = root if r["node"] == "r" else a
            r["r2_ca_noise"] = r["r2_ca_noise_linear"] = ca
        return rows

    # the reference holds a (level 1) fully and the root only half: A = 1 - 1 / (1 + 1) = 0.5, CA 0.67
    ref = with_r2(toy_rows(cells, train_mask_kind="random", objective="mae"), 0.5, 1.0, 2 / 3)
    # aligned training recovers the root too: A rises to the theory's 2/3 and CA rises with it
    lifted = with_r2(toy_rows(cells, train_mask_kind="aligned", objective="mae"), 1.0, 1.0, 1.0)
    # boundary-ignoring that raises A by losing CA: the level-1 node's noise is not recovered (A = 1, CA 0.5)
    lossy = with_r2(toy_rows(cells, train_mask_kind="random", objective="mae", boundary_ignore=1), 1.0, 0.0, 0.5)
    j = judge(typed(tmp_path, ref + lifted + lossy))
    got = {(c.arm.arm.label(), c.factor): (c.verdict, c.note, c.verdict_selectivity) for c in j["arms"]}
    # A rises with CA and the leak kept: more abstract, and isolating c better (selectivity +1/3)
    assert got[("mae, aligned-trained, no bottleneck", "train_mask_kind")] == ("hold", "", "hold")
    # A rises because CA is lost: flagged, and selectivity falls
    assert got[("mae, random-trained, no bottleneck, boundary-ignore 1", "boundary_ignore")] == (
        "hold", "lifts A by losing CA", "fail")
    (best, means) = j["best"][("random", "code")]
    assert best == "mae, aligned-trained, no bottleneck"  # the lossy arm's higher A does not count: its CA is 0.5
    assert means["mae, random-trained, no bottleneck, boundary-ignore 1"][1] == pytest.approx(0.5)
    text = build_report(tmp_path).read_text()
    assert "## Arms compared" in text and "lifts A by losing CA" in text and "**best**" in text


def test_arm_comparisons_and_the_best_arm_skip_cells_at_the_ceiling(tmp_path):
    cells = {(0.5, 1): ROOT_ONLY}  # CA = the root alone: predicted A = 1, no room for any arm to rise
    rows = toy_rows(cells, train_mask_kind="random", objective="mae") + toy_rows(cells, train_mask_kind="block", objective="mae")
    j = judge(typed(tmp_path, rows))
    (c,) = j["arms"]
    assert c.verdict == c.verdict_linear == "not testable (ceiling)"
    assert j["best"][("random", "code")] == (None, {})


def test_provenance_names_the_first_run_and_how_often_it_was_resumed(tmp_path):
    from hlvm.report import _provenance_lines

    sweep = {"config": {"graph": {"depth": 2}, "model": "mlp", "steps": 5},
             "provenance": {"hlvm_version": "0.1.0", "git_commit": "aaa111", "created_utc": "2026-01-01T00:00:00+00:00"}}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    line = _provenance_lines(tmp_path)[0]
    assert "commit `aaa111`, begun 2026-01-01T00:00:00+00:00." in line and "resumed" not in line
    sweep["resumes"] = [{"provenance": {"git_commit": "bbb222", "created_utc": "2026-02-01T00:00:00+00:00"}},
                        {"provenance": {"git_commit": "ccc333", "created_utc": "2026-03-01T00:00:00+00:00"}}]
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    line = _provenance_lines(tmp_path)[0]
    assert "commit `aaa111`, begun 2026-01-01" in line
    assert "resumed 2 times, last with commit `ccc333` at 2026-03-01T00:00:00+00:00." in line


def test_training_curves_draw_every_run_from_its_metrics_and_name_its_point(tmp_path):
    from hlvm.report.figures import training_curves

    assert training_curves(tmp_path, tmp_path) == []  # no runs: no section
    commits = []
    for i, (pid, ratio) in enumerate([("p1", 0.25), ("p2", 0.75)]):
        run = tmp_path / "runs" / pid
        run.mkdir(parents=True)
        rows = [{"step": s, "loss": 1.0 / (s + i), "lr": 1e-3} for s in (10, 20, 30)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "lo')  # torn
        commits.append({"point_id": pid, "point": {"mask_ratio": ratio, "mask_unit": 2, "objective": "mae",
                                                   "bottleneck": None, "seed": 0}})
    (tmp_path / "points.jsonl").write_text("".join(json.dumps(c) + "\n" for c in commits))
    out = tmp_path / "report"
    out.mkdir()
    lines = training_curves(tmp_path, out)
    assert lines[0] == "## Training" and "(training_loss.png)" in lines[2] and "2 trained runs" in lines[2]
    assert (out / "training_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_mimae_is_compared_with_its_own_control_arm_the_multi_view_mae_without_the_mi_terms(tmp_path):
    cells = {(0.5, 1): ROOT_A, (0.5, 2): ROOT_A}
    mae = toy_rows({k: (ROOT_A, 0.8, 0.4) for k in cells}, train_mask_kind="random", objective="mae")
    views = toy_rows({k: (ROOT_A, 0.9, 0.4) for k in cells}, train_mask_kind="random", objective="mimae_views")
    mimae = toy_rows({k: (ROOT_A, 0.9, 0.1) for k in cells}, train_mask_kind="random", objective="mimae")
    j = judge(typed(tmp_path, mae + views + mimae))
    got = {(c.arm.arm.objective, c.reference.arm.objective, c.factor): c.verdict_selectivity for c in j["arms"]}
    # MI-MAE against MAE (one factor: the objective) and against its control arm: only the latter isolates
    # what the information terms add (here the leak they drop: selectivity +0.3 at the same CA).
    assert got[("mimae", "mae", "objective")] == "hold"
    assert got[("mimae", "mimae_views", "objective's control")] == "hold"
    c = next(c for c in j["arms"] if c.factor == "objective's control")
    assert all(d["leak"].mean == pytest.approx(-0.3, abs=1e-9) for d in c.cells.values())

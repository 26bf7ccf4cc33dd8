"""hlvm.rules: the evidence rules, Theorem 2's symmetric rule, and judging a trained figure against every control of its width."""

from __future__ import annotations

import pytest

from hlvm.rules import (
    EVIDENCE,
    EVIDENCE_TRAINING,
    EXPLAINED,
    EXPLAINED_LINEAR,
    MIN_EFFECT,
    NO_CONTROL,
    Estimate,
    against_controls,
    beats,
    critical,
    evidence,
    theorem2,
)


def test_evidence_counts_a_difference_only_beyond_the_minimum_given():
    d = Estimate.of([0.02, 0.021, 0.019])  # two points of top-1, tight over three seeds
    assert evidence(d) == EXPLAINED  # below the default MIN_EFFECT (0.05, a scale for A and R^2)
    assert evidence(d, min_effect=0.01) == EVIDENCE
    assert evidence(Estimate.of([0.005, 0.006, 0.004]), min_effect=0.01) == EXPLAINED  # half a point: under it
    assert evidence(Estimate.of([0.03, -0.01, 0.07]), min_effect=0.01) == EXPLAINED  # mean 3 points, SE too wide
    assert evidence(Estimate.of([-0.02, -0.021, -0.019]), min_effect=0.01) == EVIDENCE  # below the control counts too
    assert MIN_EFFECT == 0.05


# ----------------------------------------------------------------------------- Theorem 2: one symmetric rule


def test_theorem2_holds_only_when_both_bounds_lie_inside_and_fails_when_one_lies_outside():
    t = critical(3)  # 4.30
    tight = Estimate(0.0, 0.001, 3)
    # R^2(CA): the bound mean - t SE must clear 0.9 for a hold; mean + t SE below 0.9 is a fail.
    assert theorem2(Estimate(0.9 + t * 0.01, 0.01, 3), tight) == "hold"
    assert theorem2(Estimate(0.9 + t * 0.01 - 1e-6, 0.01, 3), tight) == "inconclusive"
    assert theorem2(Estimate(0.9 - t * 0.01 - 1e-6, 0.01, 3), tight) == "fail"
    assert theorem2(Estimate(0.9 - t * 0.01 + 1e-6, 0.01, 3), tight) == "inconclusive"
    # The leak mirrors it: mean + t SE must stay under 0.1 for a hold; mean - t SE above 0.1 is a fail.
    good = Estimate(0.99, 0.001, 3)
    assert theorem2(good, Estimate(0.1 - t * 0.01, 0.01, 3)) == "hold"
    assert theorem2(good, Estimate(0.1 - t * 0.01 + 1e-6, 0.01, 3)) == "inconclusive"
    assert theorem2(good, Estimate(0.1 + t * 0.01 + 1e-6, 0.01, 3)) == "fail"


def test_theorem2_no_longer_holds_on_a_mean_that_one_bad_seed_drags_down():
    # The default study's cell 0.4/2 held under the old rule (mean >= 0.9) with one seed's mask at 0.662.
    ca, leak = Estimate.of([0.662, 0.99, 0.995]), Estimate.of([0.0, 0.001, -0.002])
    assert ca.mean < 0.9 or ca.mean - critical(3) * ca.se < 0.9
    assert theorem2(ca, leak) == "inconclusive"
    assert theorem2(Estimate.of([0.97, 0.971, 0.969]), leak) == "hold"


def test_theorem2_decides_nothing_from_one_replicate():
    assert theorem2(Estimate.of([0.999]), Estimate.of([0.0])) == "inconclusive"
    assert theorem2(Estimate.of([0.1]), Estimate.of([0.9])) == "inconclusive"
    assert theorem2(Estimate(float("nan"), float("nan"), 0), Estimate.of([0.0, 0.0])) == "inconclusive"


# ----------------------------------------------------------------------------- against every control of the width


def test_evidence_about_training_needs_the_trained_figure_to_beat_every_control_of_its_width():
    trained = {0: 0.90, 1: 0.92, 2: 0.91}
    weak = {0: 0.50, 1: 0.52, 2: 0.49}
    a = against_controls(trained, {"pca": weak, "untrained": {0: 0.2, 1: 0.21, 2: 0.19}})
    assert a.label == EVIDENCE_TRAINING and a.is_evidence
    assert a.control == "pca"  # the strongest: the smallest margin
    assert a.d.mean == pytest.approx((0.90 + 0.92 + 0.91 - 0.50 - 0.52 - 0.49) / 3, rel=1e-12)
    # One control the trained figure does not beat is enough to explain it, and it is named.
    b = against_controls(trained, {"pca": weak, "linear_mae": {0: 0.89, 1: 0.90, 2: 0.92}})
    assert b.label == f"{EXPLAINED_LINEAR} (linear_mae as well)" and b.control == "linear_mae"
    c = against_controls(trained, {"linear_mae": {0: 0.99, 1: 0.995, 2: 0.99}})
    assert c.label == f"{EXPLAINED_LINEAR} (linear_mae does better)"
    d = against_controls(trained, {"untrained": {0: 0.89, 1: 0.91, 2: 0.90}, "pca": weak})
    assert d.label == f"{EXPLAINED} (untrained as well)"
    # A gain under MIN_EFFECT, however tight, is no evidence.
    e = against_controls(trained, {"pca": {k: v - 0.04 for k, v in trained.items()}})
    assert not e.is_evidence
    assert against_controls(trained, {}).label == NO_CONTROL
    # Pairing by seed: only the seeds both have count.
    f = against_controls({0: 0.9, 1: 0.9}, {"pca": {0: 0.1, 2: 0.1}})
    assert f.d.n == 1 and not f.is_evidence


def test_beats_is_one_sided():
    assert beats(Estimate.of([0.2, 0.21, 0.19]))
    assert not beats(Estimate.of([-0.2, -0.21, -0.19]))
    assert not beats(Estimate.of([0.2]))


def test_the_budget_is_the_shortest_length_whose_doubling_gains_under_two_percent():
    from hlvm.rules import budget

    curve = {500: 0.60, 1000: 0.45, 2000: 0.40, 4000: 0.395, 8000: 0.394}
    assert budget(curve) == 2000  # 4000 gains 1.25 % over 2000; 2000 gained 11 % over 1000
    assert budget({**curve, 4000: 0.39}) == 4000  # 2.5 % is still a gain worth the doubling
    assert budget({500: 0.6, 1000: 0.5, 2000: 0.45}) is None  # every doubling of the pilot still pays: train longer
    assert budget({1000: 0.5, 3000: 0.5}) is None  # only doublings count
    assert budget({1000: 0.5, 2000: 0.6}) == 1000  # longer and worse is no gain

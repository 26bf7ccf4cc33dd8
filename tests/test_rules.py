"""hlvm.rules: the evidence rule with a study's own smallest effect."""

from __future__ import annotations

from hlvm.rules import EVIDENCE, EXPLAINED, MIN_EFFECT, Estimate, evidence


def test_evidence_counts_a_difference_only_beyond_the_minimum_given():
    d = Estimate.of([0.02, 0.021, 0.019])  # two points of top-1, tight over three seeds
    assert evidence(d) == EXPLAINED  # below the default MIN_EFFECT (0.05, a scale for A and R^2)
    assert evidence(d, min_effect=0.01) == EVIDENCE
    assert evidence(Estimate.of([0.005, 0.006, 0.004]), min_effect=0.01) == EXPLAINED  # half a point: under it
    assert evidence(Estimate.of([0.03, -0.01, 0.07]), min_effect=0.01) == EXPLAINED  # mean 3 points, SE too wide
    assert evidence(Estimate.of([-0.02, -0.021, -0.019]), min_effect=0.01) == EVIDENCE  # below the control counts too
    assert MIN_EFFECT == 0.05

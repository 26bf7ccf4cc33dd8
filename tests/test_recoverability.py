"""hlvm.recoverability: the check that picks a study's mixings before any MAE is trained."""

from __future__ import annotations

import pytest

from hlvm.errors import ConfigError
from hlvm.graphs import GridSpec
from hlvm.mixing import MixingSpec
from hlvm.recoverability import recoverability
from hlvm.simulate import SimulateConfig, Simulator


def sim(**mixing):
    return Simulator.from_config(SimulateConfig(grid=GridSpec(depth=2), mixing=MixingSpec(**mixing), seed=0))


def test_a_linear_mixing_is_recoverable_and_wholly_linear():
    r = recoverability(sim(kind="linear"), n=600, seed=0)
    assert r.recoverable and r.worst_one_pixel > 0.98
    assert r.linear_readability() > 0.99
    assert set(r.by_level()) == {0, 1}
    assert set(r.from_one_pixel) == {"x_0_0", "x_0_3", "x_3_0", "x_3_3", "x_2_1"}
    assert set(r.from_one_pixel["x_0_0"]) == {"z_0_0_0", "z_1_0_0", "x_0_0"}  # An*(pixel): its ancestors and itself


def test_a_steep_deep_mixing_hides_the_hierarchy_from_one_pixel_and_from_linear_codes():
    lin, steep = recoverability(sim(kind="linear"), n=600), recoverability(sim(slope=0.05, layers=4), n=600)
    assert not steep.recoverable
    assert steep.linear_readability() < lin.linear_readability() - 0.1


def test_the_same_seed_gives_the_same_numbers_and_bad_input_is_refused():
    a, b = recoverability(sim(), n=300, seed=1), recoverability(sim(), n=300, seed=1)
    assert a.to_dict() == b.to_dict()
    with pytest.raises(ConfigError, match="n must be"):
        recoverability(sim(), n=10)
    with pytest.raises(ConfigError, match="not a pixel"):
        recoverability(sim(), n=300, pixels=["z_0_0_0"])

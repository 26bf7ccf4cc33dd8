"""hlvm.probe: LARS, MAE's BatchNorm+Linear probe, the L-BFGS probe, splits, and refusing encoder-less checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hlvm.errors import ConfigError, DataError
from hlvm.probe import LARS, LinearProbe, ProbeConfig, fit_probe, load_encoder, stratified_split


def _separable(n=600, d=20, k=4, seed=0, scale=1.0):
    """k Gaussian blobs with well-separated means, features on an arbitrary scale and offset."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d)) * 4.0
    y = rng.integers(0, k, n)
    x = (means[y] + rng.standard_normal((n, d)) * 0.5) * scale + 100.0 * scale
    return x, y


@pytest.mark.parametrize("method", ["lbfgs", "lars", "sgd"])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_probe_on_separable_features_reaches_100_percent(method, scale):
    # BatchNorm (or standardisation) makes the probe indifferent to the feature scale and offset.
    x, y = _separable(scale=scale)
    tr, te = stratified_split(y, 0.25, seed=0)
    # LARS's trust ratio (0.001 ||w|| / ||g||) makes steps relative to the weights: it needs MAE's large-run
    # lr (blr 0.1 at batch 16384 is lr 6.4), here reached with a small batch through blr.
    blr = 25.6 if method == "lars" else 0.1
    cfg = ProbeConfig(method=method, epochs=30, warmup_epochs=3, batch=64, blr=blr)
    res = fit_probe(x[tr], y[tr], x[te], y[te], cfg)
    assert res.top1 >= 0.99 and res.train_top1 >= 0.99
    assert (res.n_train, res.n_test, res.n_features, res.n_classes) == (len(tr), len(te), 20, 4)


def test_probe_on_pure_noise_is_near_chance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 10))
    y = rng.integers(0, 4, 2000)
    tr, te = stratified_split(y, 0.5, seed=0)
    res = fit_probe(x[tr], y[tr], x[te], y[te], ProbeConfig(method="lbfgs"))
    assert abs(res.top1 - 0.25) < 0.05


def test_lbfgs_probe_matches_sklearn_logistic_regression():
    # Same objective (multinomial logistic, L2 on weights, standardised features): same predictions.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _separable(n=400, d=8, k=3, seed=3)
    x = x + np.random.default_rng(4).standard_normal(x.shape) * 6.0  # overlapping classes, so the optimum matters
    tr, te = stratified_split(y, 0.3, seed=1)
    l2 = 1e-2
    res = fit_probe(x[tr], y[tr], x[te], y[te], ProbeConfig(method="lbfgs", l2=l2))
    sc = StandardScaler().fit(x[tr])
    # sklearn minimises C * sum(loss) + 0.5 ||W||^2, ours mean(loss) + l2 ||W||^2: C = 1 / (2 l2 n).
    lr = LogisticRegression(C=1.0 / (2 * l2 * len(tr)), max_iter=5000, tol=1e-10).fit(sc.transform(x[tr]), y[tr])
    ref = (lr.predict(sc.transform(x[te])) == y[te]).mean()
    assert res.top1 == pytest.approx(ref, abs=1.0 / len(te) + 1e-9)


def test_lars_trust_ratio_matches_hand_computation():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=0.1, weight_decay=0.5, momentum=0.9, trust_coefficient=0.001)
    w.grad = torch.tensor([[1.0, 0.0]])
    b.grad = torch.tensor([2.0])
    opt.step()
    d = torch.tensor([[1.0, 0.0]]) + 0.5 * torch.tensor([[3.0, 4.0]])  # grad + wd * w = [2.5, 2]
    q = 0.001 * 5.0 / torch.linalg.norm(d)
    torch.testing.assert_close(w.data, torch.tensor([[3.0, 4.0]]) - 0.1 * q * d)
    # The 1-d bias: plain SGD step, no weight decay, no trust ratio.
    torch.testing.assert_close(b.data, torch.tensor([1.0 - 0.1 * 2.0]))
    # Second step: momentum accumulates the scaled update.
    w0 = w.data.clone()
    w.grad = torch.tensor([[1.0, 0.0]])
    b.grad = torch.tensor([0.0])
    opt.step()
    d2 = torch.tensor([[1.0, 0.0]]) + 0.5 * w0
    q2 = 0.001 * torch.linalg.norm(w0) / torch.linalg.norm(d2)
    torch.testing.assert_close(w.data, w0 - 0.1 * (0.9 * q * d + q2 * d2))
    torch.testing.assert_close(b.data, torch.tensor([0.8 - 0.1 * 0.9 * 2.0]))


def test_lars_zero_weight_uses_unit_ratio():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=1.0, momentum=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    torch.testing.assert_close(w.data, -torch.ones(2, 2))


def test_linear_probe_head_is_batchnorm_without_affine_then_linear():
    torch.manual_seed(0)
    head = LinearProbe(16, 5)
    assert head.bn.affine is False and not list(head.bn.parameters())
    assert head.linear.weight.std().item() < 0.02 and torch.all(head.linear.bias == 0)
    assert head(torch.randn(8, 16)).shape == (8, 5)


def test_stratified_split_is_seeded_disjoint_and_per_class():
    y = np.repeat(np.arange(3), [10, 20, 5])
    tr, te = stratified_split(y, 0.2, seed=0)
    assert set(tr).isdisjoint(te) and len(tr) + len(te) == len(y)
    assert [int((y[te] == c).sum()) for c in range(3)] == [2, 4, 1]
    tr2, te2 = stratified_split(y, 0.2, seed=0)
    assert np.array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(y, 0.2, seed=1)[1])


def test_probe_config_validates():
    with pytest.raises(ConfigError, match="method"):
        ProbeConfig(method="adam")
    with pytest.raises(ConfigError, match="pool"):
        ProbeConfig(pool="max")
    with pytest.raises(ConfigError, match="test_fraction"):
        ProbeConfig(test_fraction=1.0)


def test_bad_features_are_data_errors():
    with pytest.raises(DataError, match="NaN"):
        fit_probe(np.full((4, 2), np.nan), np.zeros(4), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(DataError, match="width"):
        fit_probe(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 3)), np.zeros(2))


def test_checkpoint_without_encoder_is_one_line_data_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {"decoder_embed.weight": torch.zeros(2, 2), "decoder_pred.bias": torch.zeros(2)}},
               run / "checkpoint.pt")
    with pytest.raises(DataError, match="no encoder weights") as e:
        load_encoder(run)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no checkpoint"):
        load_encoder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_encoder(tmp_path / "missing")
    (run / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read checkpoint"):
        load_encoder(run)

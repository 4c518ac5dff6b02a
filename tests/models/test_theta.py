"""theta: time pooling of H (any T) then Linear(K, C, bias=False)."""

from __future__ import annotations

import pytest
import torch

from l2i.config import ThetaConfig
from l2i.models.theta import Theta


@pytest.mark.parametrize("T", [1, 50, 431, 1000])
def test_attention_theta_any_T(T):
    theta = Theta(12, 5, ThetaConfig(hidden=16))
    H = torch.rand(3, 12, T)
    z = theta.pool(H)
    assert z.shape == (3, 12) and theta(H).shape == (3, 5)
    assert bool((z >= 0).all())
    # a convex combination over time: between the per-component min and max
    assert bool((z <= H.amax(-1) + 1e-6).all()) and bool((z >= H.amin(-1) - 1e-6).all())


def test_attention_weights_sum_to_one_over_time():
    theta = Theta(4, 3, ThetaConfig(hidden=8))
    a = theta.attention(torch.rand(2, 4, 37))
    assert torch.allclose(a.sum(-1), torch.ones(2, 4), atol=1e-6) and bool((a >= 0).all())


def test_mean_and_max_pooling_values():
    H = torch.tensor([[[1.0, 3.0, 2.0], [0.0, 0.0, 6.0]]])  # (1, K=2, T=3)
    assert torch.allclose(Theta(2, 2, ThetaConfig(pooling="mean")).pool(H),
                          torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(Theta(2, 2, ThetaConfig(pooling="max")).pool(H),
                          torch.tensor([[3.0, 6.0]]))


def test_linear_head_has_no_bias_and_gives_logits():
    theta = Theta(3, 2, ThetaConfig(pooling="mean", normalize=False))
    assert theta.linear.bias is None and theta.linear.weight.shape == (2, 3)
    with torch.no_grad():
        theta.linear.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]))
    H = torch.tensor([[[2.0, 2.0], [4.0, 0.0], [1.0, 1.0]]])  # z = [2, 2, 1]
    assert torch.allclose(theta(H), torch.tensor([[1.0, 2.5]]))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="expects H"):
        Theta(3, 2, ThetaConfig()).pool(torch.rand(1, 4, 10))


def test_normalized_logits_ignore_the_scale_of_H_but_keep_relevance():
    theta = Theta(5, 3, ThetaConfig(pooling="mean", normalize=True))
    H = torch.rand(2, 5, 20)
    assert torch.allclose(theta(H), theta(7.0 * H), atol=1e-4)
    z = theta.pool(H)
    w = theta.linear.weight  # (C, K)
    z_used = z / z.mean(-1, keepdim=True)
    assert torch.allclose(theta(H), z_used @ w.T, atol=1e-5)
    r = w[0] * z[0] / (w[0] * z[0]).abs().max()  # relevance from z is the same from z_used
    r_used = w[0] * z_used[0] / (w[0] * z_used[0]).abs().max()
    assert torch.allclose(r, r_used, atol=1e-5)


def test_theta_takes_a_typed_config_whose_defaults_it_uses():
    from types import SimpleNamespace

    assert Theta(3, 2, ThetaConfig()).normalize is ThetaConfig().normalize is True
    with pytest.raises(TypeError, match="ThetaConfig"):
        Theta(3, 2, SimpleNamespace(pooling="mean", hidden=4))

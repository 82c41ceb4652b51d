import math

import pytest
import torch
from scipy.stats import norm

from density_rlhf.advantages import (
    compute_advantages,
    gaussian_quantile_advantages,
    softmax_advantages,
    softmax_weights,
    weight_statistics,
)


REWARDS = torch.tensor([1.0, 3.0, 2.0, 0.5, 0.2, 0.2, 0.9, 0.1])


def test_softmax_weights_sum_to_one_per_group():
    w = softmax_weights(REWARDS, 4, temperature=0.7)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(w[0], torch.softmax(REWARDS[:4] / 0.7, dim=0))


def test_softmax_advantages_are_n_w_minus_one_and_zero_mean():
    adv = softmax_advantages(REWARDS, 4, temperature=1.0).view(2, 4)
    torch.testing.assert_close(adv, 4 * softmax_weights(REWARDS, 4) - 1)
    torch.testing.assert_close(adv.sum(dim=1), torch.zeros(2), atol=1e-6, rtol=0)


def test_softmax_temperature_limits():
    cold = softmax_advantages(REWARDS, 4, temperature=1e-4).view(2, 4)
    # tau -> 0: one-hot on the best sample (best-of-N): advantage n-1 for it, -1 for the rest.
    torch.testing.assert_close(cold[0], torch.tensor([-1.0, 3.0, -1.0, -1.0]))
    hot = softmax_advantages(REWARDS, 4, temperature=1e6)
    torch.testing.assert_close(hot, torch.zeros(8), atol=1e-5, rtol=0)  # tau -> inf: uniform, zero advantages
    with pytest.raises(ValueError, match="temperature"):
        softmax_advantages(REWARDS, 4, temperature=0.0)


def test_gaussian_quantiles_rank_preserving_and_zero_mean():
    rewards = torch.tensor([5.0, -1.0, 2.0, 10.0, 0.0])
    adv = gaussian_quantile_advantages(rewards, 5)
    assert torch.argsort(adv).tolist() == torch.argsort(rewards).tolist()
    assert abs(adv.sum().item()) < 1e-6
    expected = norm.ppf((torch.arange(5) + 0.5).numpy() / 5)
    assert sorted(adv.tolist()) == pytest.approx(sorted(expected), abs=1e-6)
    # Invariant to any monotone transform of the rewards: only ranks matter.
    torch.testing.assert_close(gaussian_quantile_advantages(rewards**3 + 7, 5), adv)


@pytest.mark.parametrize("fn", [softmax_advantages, gaussian_quantile_advantages])
def test_tied_rewards_get_equal_advantages(fn):
    rewards = torch.tensor([1.0, 2.0, 2.0, 0.0, 3.0, 3.0, 3.0, 3.0])
    adv = fn(rewards, 4)
    assert adv[1].item() == pytest.approx(adv[2].item())
    torch.testing.assert_close(adv[4:], torch.zeros(4), atol=1e-4, rtol=0)  # an all-tied group carries no signal
    assert abs(adv[:4].sum().item()) < 1e-4


@pytest.mark.parametrize("mode", ["softmax", "gaussian_quantile"])
def test_nan_rewards_are_left_out_as_in_trl(mode):
    rewards = torch.tensor([1.0, math.nan, 3.0, 2.0, math.nan, math.nan, math.nan, math.nan])
    adv = compute_advantages(rewards, 4, mode)
    assert adv[1].item() == 0.0 and torch.all(adv[4:] == 0)  # unscorable -> 0; an all-NaN group -> 0
    assert not torch.isnan(adv).any()
    scorable = compute_advantages(torch.tensor([1.0, 3.0, 2.0]), 3, mode)
    torch.testing.assert_close(adv[[0, 2, 3]], scorable)  # the NaN completion does not change the others


def test_weight_statistics():
    stats = weight_statistics(torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]))
    assert stats["max_weight"] == pytest.approx((0.25 + 1.0) / 2)
    assert stats["effective_n"] == pytest.approx((4 + 1) / 2)
    assert stats["weight_entropy"] == pytest.approx(math.log(4) / 2)


def test_bad_shapes_and_modes():
    with pytest.raises(ValueError, match="cannot be grouped"):
        softmax_advantages(torch.ones(7), 4)
    with pytest.raises(ValueError, match="1-D"):
        softmax_advantages(torch.ones(2, 4), 4)
    with pytest.raises(ValueError, match="advantage_mode"):
        compute_advantages(REWARDS, 4, "ppo")
    with pytest.raises(ValueError, match="TRL's own whitening"):
        compute_advantages(REWARDS, 4, "grpo")

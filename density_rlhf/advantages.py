r"""Group advantage schemes for GRPO, as pure functions.

Rewards arrive as a 1-D float tensor grouped consecutively by `num_generations` (the completions of one prompt are
adjacent), exactly as TRL's `GRPOTrainer` holds them. A NaN reward marks an unscorable completion (every reward
function returned `None`): it is left out of its group's statistics and its advantage is 0, as in TRL.

`advantage_mode="grpo"` is TRL's own group whitening, computed by TRL's `GRPOTrainer`; this module holds the other
two:
- `softmax_advantages`: advantage-weighted regression's weights w_i = softmax(R_i / tau) within the group. Their
  weighted log-likelihood loss -sum_i w_i log pi(y_i) equals, up to the factor 1/N of GRPO's per-sample mean, the policy
  gradient loss -(1/N) sum_i A_i log pi(y_i) with **A_i = N w_i - 1** plus the baseline term (1/N) sum_i log pi(y_i),
  whose expected gradient is zero. So A_i = N w_i - 1: zero-mean per group, N - 1 for the best sample as tau -> 0
  (best-of-N), 0 everywhere as tau -> infinity.
- `gaussian_quantile_advantages`: rewards mapped through their within-group ranks to standard-normal quantiles,
  A = Phi^-1((rank - 1/2) / N), so every moment matches a Gaussian, not only mean and std. Tied rewards share the
  mean of their quantiles, which keeps the group exactly zero-mean.
"""

import torch


def _groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(rewards.shape)}.")
    if num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards cannot be grouped by num_generations={num_generations}.")
    return rewards.float().view(-1, num_generations)


def softmax_weights(rewards: torch.Tensor, num_generations: int, temperature: float = 1.0) -> torch.Tensor:
    """w = softmax(R / tau) within each group (NaN rewards get weight 0); shape (num_groups, num_generations)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    grouped = _groups(rewards, num_generations)
    logits = torch.where(torch.isnan(grouped), torch.full_like(grouped, -torch.inf), grouped / temperature)
    weights = torch.softmax(logits, dim=1)
    return torch.nan_to_num(weights, nan=0.0)  # a group with no scorable completion has no weight at all


def softmax_advantages(rewards: torch.Tensor, num_generations: int, temperature: float = 1.0) -> torch.Tensor:
    """AWR-style advantages A_i = n_g * w_i - 1 with w = softmax(R / tau) over the n_g scorable completions."""
    grouped = _groups(rewards, num_generations)
    weights = softmax_weights(rewards, num_generations, temperature)
    scorable = ~torch.isnan(grouped)
    n = scorable.sum(dim=1, keepdim=True).float()
    advantages = torch.where(scorable, n * weights - 1.0, torch.zeros_like(weights))
    return advantages.reshape(-1)


def gaussian_quantile_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Within-group ranks mapped to standard-normal quantiles Phi^-1((rank - 1/2) / n); ties share their mean."""
    grouped = _groups(rewards, num_generations)
    advantages = torch.zeros_like(grouped)
    for g in range(grouped.shape[0]):
        row = grouped[g]
        idx = torch.nonzero(~torch.isnan(row)).flatten()
        n = idx.numel()
        if n < 2:
            continue
        values = row[idx]
        order = torch.argsort(values, stable=True)
        quantiles = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).float()
        sorted_values = values[order]
        out = torch.empty(n)
        start = 0
        while start < n:  # average the quantiles of each run of tied rewards
            end = start + 1
            while end < n and sorted_values[end] == sorted_values[start]:
                end += 1
            out[start:end] = quantiles[start:end].mean()
            start = end
        advantages[g, idx[order]] = out.to(advantages.dtype)
    return advantages.reshape(-1)


def weight_statistics(weights: torch.Tensor) -> dict[str, float]:
    """Diagnostics of per-group weights (num_groups, n): max weight, entropy, effective n = 1/sum w^2."""
    valid = weights.sum(dim=1) > 0
    w = weights[valid]
    if w.numel() == 0:
        return {}
    entropy = -(w * torch.log(w.clamp_min(1e-30))).sum(dim=1)
    return {
        "max_weight": w.max(dim=1).values.mean().item(),
        "weight_entropy": entropy.mean().item(),
        "effective_n": (1.0 / (w**2).sum(dim=1)).mean().item(),
    }


ADVANTAGE_MODES = ("grpo", "softmax", "gaussian_quantile")


def compute_advantages(
    rewards: torch.Tensor, num_generations: int, mode: str, *, temperature: float = 1.0
) -> torch.Tensor:
    """The `softmax` or `gaussian_quantile` advantages of `rewards`; `grpo` is TRL's, computed by its trainer."""
    if mode == "softmax":
        return softmax_advantages(rewards, num_generations, temperature)
    if mode == "gaussian_quantile":
        return gaussian_quantile_advantages(rewards, num_generations)
    if mode == "grpo":
        raise ValueError("advantage_mode 'grpo' is TRL's own whitening: GRPOTrainer computes it, not this function.")
    raise ValueError(f"advantage_mode must be one of {ADVANTAGE_MODES}, got {mode!r}.")

"""density_rlhf: density-aware sampling for reward-model and GRPO training with TRL.

Heavy dependencies (FAISS, sentence-transformers, the trainers) are imported lazily, so
`from density_rlhf import DensitySampler` only pulls in torch and numpy.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .prompts import add_prompt_ids, normalize_text, prompt_id, prompt_text, unique_prompts
from .version import __version__


_LAZY = {
    "DensitySampler": "density_rlhf.sampler",
    "DensityRepeatSampler": "density_rlhf.sampler",
    "DensityIndex": "density_rlhf.index",
    "DensityGRPOConfig": "density_rlhf.grpo_trainer",
    "DensityGRPOTrainer": "density_rlhf.grpo_trainer",
    "DensityRewardConfig": "density_rlhf.reward_trainer",
    "DensityRewardTrainer": "density_rlhf.reward_trainer",
    "DensitySamplingMixin": "density_rlhf.mixin",
    "with_density_sampling": "density_rlhf.mixin",
    "density_config": "density_rlhf.config",
    "DensityConfigMixin": "density_rlhf.config",
    "SearchSettings": "density_rlhf.settings",
    "WeightingSettings": "density_rlhf.settings",
}

__all__ = [
    "DensityConfigMixin",
    "DensityGRPOConfig",
    "DensityGRPOTrainer",
    "DensityIndex",
    "DensityRepeatSampler",
    "DensityRewardConfig",
    "DensityRewardTrainer",
    "DensitySampler",
    "DensitySamplingMixin",
    "SearchSettings",
    "WeightingSettings",
    "__version__",
    "add_prompt_ids",
    "density_config",
    "normalize_text",
    "prompt_id",
    "prompt_text",
    "unique_prompts",
    "with_density_sampling",
]

if TYPE_CHECKING:
    from .config import DensityConfigMixin, density_config
    from .grpo_trainer import DensityGRPOConfig, DensityGRPOTrainer
    from .index import DensityIndex
    from .mixin import DensitySamplingMixin, with_density_sampling
    from .reward_trainer import DensityRewardConfig, DensityRewardTrainer
    from .sampler import DensityRepeatSampler, DensitySampler
    from .settings import SearchSettings, WeightingSettings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'density_rlhf' has no attribute {name!r}")

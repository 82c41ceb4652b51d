"""The private upstream names density_rlhf relies on, pinned in one place: an upgrade of TRL, transformers, datasets
or DeepSpeed that moves one fails here, naming it, instead of somewhere inside a training run.

Each entry is (object, attribute, the parameters or source fragments the code relies on). The version ranges the
library declares live in setup.cfg (`install_requires`, `deepspeed` extra); this test runs against the installed ones.
"""

import inspect

import pytest
import transformers
import trl
from transformers import Trainer
from trl import GRPOTrainer, KTOTrainer, RewardTrainer
from trl.trainer.utils import RepeatSampler


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# (owner, name, parameters the override passes on)
HOOKS = [
    (Trainer, "_get_train_sampler", ["self", "train_dataset"]),  # DensitySamplingMixin._get_train_sampler
    (Trainer, "_save_checkpoint", ["self", "model", "trial"]),  # the sampler state next to TRL's
    (Trainer, "_get_output_dir", ["self", "trial"]),
    (Trainer, "_set_signature_columns_if_needed", ["self"]),  # DensityRewardTrainer keeps its group columns
    (Trainer, "_remove_unused_columns", ["self", "dataset", "description"]),
    (GRPOTrainer, "_calculate_rewards", ["self", "inputs", "prompts", "completions", "completion_ids_list"]),
    (GRPOTrainer, "_generate_and_score_completions", ["self", "inputs"]),
]


@pytest.mark.parametrize("owner, name, params", HOOKS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_overridden_hooks_exist_with_the_parameters_passed_on(owner, name, params):
    assert hasattr(owner, name), f"{owner.__name__}.{name} is gone"
    assert _params(getattr(owner, name))[: len(params)] == params, f"{owner.__name__}.{name} changed its signature"


# (owner, source fragment): attributes set inside upstream methods that the code reads
SOURCE_FRAGMENTS = [
    (Trainer, "self.current_gradient_accumulation_steps"),
    (
        Trainer,
        "self._signature_columns",
    ),  # DensityRewardTrainer adds its group columns to them  # DensityGRPOTrainer scales its SFT term by it
    (GRPOTrainer, "self.reward_func_names"),  # the per-bucket metric of every reward function
    (GRPOTrainer, 'self._logs["advantages"].extend(all_process_advantages'),  # the completions table's advantages
    (GRPOTrainer, "self.multi_objective_aggregation"),  # refused with the softmax and quantile advantages
    (GRPOTrainer, "self._metrics"),  # metrics go in self._metrics[mode]
    (GRPOTrainer, '"advantages"'),  # _generate_and_score_completions' output keys replaced or read
    (GRPOTrainer, '"prompt_ids"'),
    (RewardTrainer, "self._metrics"),
    (KTOTrainer, "self.calculate_KL"),  # the mixin refuses density sampling with KTO's KL term
    (KTOTrainer, "train_sampling_strategy"),
]


@pytest.mark.parametrize("owner, fragment", SOURCE_FRAGMENTS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_upstream_attributes_the_code_reads_are_still_set(owner, fragment):
    assert fragment in inspect.getsource(owner), f"{owner.__name__} no longer has {fragment}"


def test_trl_helpers_and_tag_names():
    from trl.data_utils import _tokenize
    from trl.trainer.utils import nanstd

    # called as _tokenize(tokenizer, text_or_messages, add_generation_prompt=True): the keywords reach the template
    parameters = inspect.signature(_tokenize).parameters
    assert list(parameters)[:2] == ["processing_class", "input"]
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert callable(nanstd) and "dim" in inspect.signature(nanstd).parameters
    for trainer in (GRPOTrainer, RewardTrainer, trl.DPOTrainer, KTOTrainer, trl.SFTTrainer, trl.RLOOTrainer):
        assert isinstance(getattr(trainer, "_tag_names", None), list), f"{trainer.__name__}._tag_names"


def test_repeat_sampler_attributes_read_by_density_repeat_sampler():
    from density_rlhf.sampler import DensityRepeatSampler

    sampler = RepeatSampler(list(range(8)), mini_repeat_count=2, batch_size=2, repeat_count=3, shuffle=True, seed=1)
    assert DensityRepeatSampler.repeat_params(sampler) == {"mini_repeat_count": 2, "batch_size": 2, "repeat_count": 3}
    assert sampler.seed == 1


def test_reward_trainer_lays_out_chosen_then_rejected():
    """DensityRewardTrainer splits the logits with `torch.chunk(..., 2)`: chosen first, then rejected."""
    source = inspect.getsource(RewardTrainer)
    assert "chosen_input_ids" in source and "rejected_input_ids" in source
    assert "rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)" in source


def test_datasets_indices_mapping():
    from datasets import Dataset

    selected = Dataset.from_dict({"x": [1, 2, 3]}).select([2, 0])
    assert selected._indices is not None and selected.flatten_indices()._indices is None


def test_deepspeed_and_transformers_private_state():
    deepspeed = pytest.importorskip("deepspeed")
    from transformers.integrations import deepspeed as hf_deepspeed

    assert hasattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref")
    assert hasattr(hf_deepspeed, "set_hf_deepspeed_config") and hasattr(hf_deepspeed, "unset_hf_deepspeed_config")
    import deepspeed.comm as ds_comm

    assert hasattr(ds_comm, "cdb") and hasattr(ds_comm, "destroy_process_group")
    assert deepspeed.__version__


def test_installed_versions_are_within_the_declared_ranges():
    from packaging.requirements import Requirement
    from packaging.version import Version

    from .conftest import REPO

    text = (REPO / "setup.cfg").read_text()
    block = text.split("install_requires =", 1)[1].split("\n\n", 1)[0]
    wanted = {Requirement(line.strip()).name: Requirement(line.strip()) for line in block.splitlines() if line.strip()}
    for name, module in (("transformers", transformers), ("trl", trl)):
        assert Version(module.__version__) in wanted[name].specifier, (name, module.__version__, wanted[name])

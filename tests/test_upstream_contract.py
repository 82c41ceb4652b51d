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
from trl import GRPOTrainer, KTOTrainer, RewardTrainer, RLOOTrainer
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
    (Trainer, "_prepare_inputs", ["self", "inputs"]),  # compare-rm scores held-out pairs through the trainer
    (GRPOTrainer, "_calculate_rewards", ["self", "inputs", "prompts", "completions", "completion_ids_list"]),
    (GRPOTrainer, "_generate_and_score_completions", ["self", "inputs"]),
    # the mixin records each generation group's rewards for the selection rules (GRPO and RLOO)
    (RLOOTrainer, "_calculate_rewards", ["self", "inputs", "prompts", "completions", "completion_ids_list"]),
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
    # DensitySamplingMixin._trl_weighted_rewards and DensityGRPOTrainer._trl_process_rows mirror these lines of
    # _generate_and_score_completions (the weighted sum is the same in RLOO)
    *(
        (trainer, line)
        for trainer in (GRPOTrainer, RLOOTrainer)
        for line in (
            "unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)",
            "rewards = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)",
            "rewards[unscorable_mask] = torch.nan",
            "self.num_generations = args.num_generations",  # the group size the rewards are recorded by
            "rewards_per_func = gather(rewards_per_func)",  # recorded gathered: the same history on every rank
        )
    ),
    (GRPOTrainer, "self.accelerator.process_index * len(prompts),"),
    (GRPOTrainer, '"frac_reward_zero_std"'),
    # RewardModelScorer.prepare places the reward model as these lines of GRPOTrainer.__init__ do
    (GRPOTrainer, "self.reward_funcs[i] = prepare_deepspeed(reward_func, self.accelerator)"),
    (GRPOTrainer, "reward_func, evaluation_mode=True, device_placement=True"),
    (GRPOTrainer, 'self._logs["advantages"].extend(all_process_advantages'),  # the completions table's advantages
    (GRPOTrainer, "self.multi_objective_aggregation"),  # refused with the softmax and quantile advantages
    (GRPOTrainer, "self._metrics"),  # metrics go in self._metrics[mode]
    (GRPOTrainer, '"advantages"'),  # _generate_and_score_completions' output keys replaced or read
    (GRPOTrainer, '"prompt_ids"'),
    (RewardTrainer, "self._metrics"),
    (RewardTrainer, 'inputs["margin"]'),  # the per-pair eval loss carries TRL's margin and centering terms
    (RewardTrainer, "self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)"),
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
    import deepspeed.comm.comm as ds_comm  # distributed_run reads the live backend here, not the package's copy
    from deepspeed.utils import groups

    assert hasattr(ds_comm, "cdb") and hasattr(ds_comm, "destroy_process_group")
    assert hasattr(groups, "_WORLD_GROUP") and hasattr(groups, "_clone_world_group")
    # distributed_run frees ZeRO-3 engines: DeepSpeed's module stack and the lru_cache (inside instrument_w_nvtx's
    # closure) that keep them, then DeepSpeedEngine.destroy
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero import parameter_offload
    from deepspeed.runtime.zero.partitioned_param_coordinator import PartitionedParameterCoordinator

    assert isinstance(parameter_offload.FWD_MODULE_STACK, list) and callable(DeepSpeedEngine.destroy)
    method = vars(PartitionedParameterCoordinator)["_PartitionedParameterCoordinator__params_to_release"]
    assert any(hasattr(cell.cell_contents, "cache_clear") for cell in method.__closure__ or ())
    # ... and imports, before the group starts, the modules that bind WORLD as a default argument
    import inspect

    import torch.distributed.nn.functional as dist_nn
    from deepspeed.comm.torch import TorchBackend

    assert "group" in inspect.signature(TorchBackend.barrier).parameters
    assert "group" in inspect.signature(dist_nn.broadcast).parameters
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


# Upstream names the library reads that the hooks and fragments above do not name: (owner, name) must exist.
ATTRIBUTES = [
    (GRPOTrainer, "_name"),  # with_density_sampling names its trainer after the base's `_name`
    (RewardTrainer, "_name"),
    (trl.DPOTrainer, "_name"),
    (Trainer, "_get_output_dir"),
    (Trainer, "_save_checkpoint"),
]
# Instance attributes set in upstream methods (not on the class): (owner, source fragment).
INSTANCE_FRAGMENTS = [
    (transformers.PretrainedConfig, "self._name_or_path"),  # the experiment's tiny models set it; TRL reads it
    (trl.DPOTrainer, "self._metrics"),  # the mixin's density/* metrics go in self._metrics on every TRL trainer
    (KTOTrainer, "self._metrics"),
    (trl.SFTTrainer, "self._metrics"),
    (trl.RLOOTrainer, "self._metrics"),
    (GRPOTrainer, "self._logs"),
    (GRPOTrainer, "self.reward_weights"),  # the GRPO trainer's weighted reward sum
    (GRPOTrainer, "self.num_generations_eval"),
]
# Private names of other libraries the library uses: module, name.
MODULE_NAMES = [
    ("transformers.integrations.deepspeed", "_hf_deepspeed_config_weak_ref"),
    ("trl.data_utils", "_tokenize"),
    ("trl.models", "prepare_deepspeed"),
    ("trl.trainer.utils", "get_config_model_id"),
    ("evaluate", "Metric._info"),  # the diversity metrics override it
]
# Private names that match an upstream name but are this package's own.
OWN = {
    "_fingerprint": "DensitySampler._fingerprint (datasets has its own)",
    "_generate": "density_rlhf.experiment.world._generate",
}


@pytest.mark.parametrize("owner, name", ATTRIBUTES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_upstream_attributes_exist(owner, name):
    assert hasattr(owner, name), f"{owner.__name__}.{name} is gone"


@pytest.mark.parametrize("owner, fragment", INSTANCE_FRAGMENTS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_upstream_instance_attributes_are_still_set(owner, fragment):
    assert fragment in inspect.getsource(owner), f"{owner.__name__} no longer has {fragment}"


@pytest.mark.parametrize("module, name", MODULE_NAMES)
def test_upstream_module_names_exist(module, name):
    import importlib

    owner = importlib.import_module(module)
    for part in name.split("."):
        assert hasattr(owner, part), f"{module}.{name} is gone"
        owner = getattr(owner, part)


def _pinned() -> set[str]:
    """Every name this file pins."""
    import re

    names = {name for _, name, _ in HOOKS} | {name for _, name in ATTRIBUTES}
    names |= {part for _, name in MODULE_NAMES for part in name.split(".")}
    for _, fragment in SOURCE_FRAGMENTS + INSTANCE_FRAGMENTS:
        names.update(re.findall(r"\.(\w+)", fragment) or [fragment.strip('"')])
    return names | {"_indices", "_tag_names"}  # test_datasets_indices_mapping, test_trl_helpers_and_tag_names


def _private_names_in_the_package() -> dict[str, set[str]]:
    """Every single-underscore name the package's source uses as an attribute, a definition, a `getattr` string or a
    `from x import _y`, with the files that use it."""
    import ast
    from collections import defaultdict

    from .conftest import REPO

    used = defaultdict(set)
    for path in sorted((REPO / "density_rlhf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Assign):
                names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                names = [node.args[1].value]
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    used[name].add(path.relative_to(REPO).as_posix())
    return used


UPSTREAM_MODULES = [
    "transformers.trainer", "transformers.training_args", "transformers.configuration_utils",
    "transformers.integrations.deepspeed", "trl.trainer.base_trainer", "trl.trainer.grpo_trainer",
    "trl.trainer.rloo_trainer", "trl.trainer.dpo_trainer", "trl.trainer.kto_trainer", "trl.trainer.sft_trainer",
    "trl.trainer.reward_trainer", "trl.trainer.utils", "trl.data_utils", "datasets.arrow_dataset",
]  # fmt: skip


def test_every_private_upstream_name_the_package_uses_is_pinned():
    """A private name the package uses that upstream source also defines or sets (`.name`, `def name`, `name =`) is
    a dependence on upstream internals: it must be pinned in this file, or listed in OWN when it is ours."""
    import importlib
    import re

    sources = "\n".join(inspect.getsource(importlib.import_module(m)) for m in UPSTREAM_MODULES)
    used = _private_names_in_the_package()
    upstream = {
        name: files
        for name, files in used.items()
        if re.search(rf"(\.|def |class |^\s*){re.escape(name)}\b", sources, re.MULTILINE)
    }
    assert "_metrics" in upstream and "_get_train_sampler" in upstream  # the walk sees what the mixin touches
    unpinned = {name: sorted(files) for name, files in upstream.items() if name not in _pinned() and name not in OWN}
    assert not unpinned, f"private upstream names used but not pinned in tests/test_upstream_contract.py: {unpinned}"

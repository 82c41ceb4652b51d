"""Every accepted config field has an effect or is refused: a walk over every field of every config class."""

import dataclasses
import re
from pathlib import Path

import pytest

from density_rlhf import DensityGRPOConfig, DensityRewardConfig
from density_rlhf.config import DensityConfigMixin
from density_rlhf.experiment.evaluation import EvaluateArguments
from density_rlhf.experiment.graph import RunnerArguments
from density_rlhf.experiment.prepare import PrepareDataArguments
from density_rlhf.recipe_kit import BuildDensityArguments, DensityReportArguments, DensityScriptArguments
from density_rlhf.recipes import train_grpo
from density_rlhf.settings import REWEIGHTABLE, SearchSettings, WeightingSettings

from .conftest import REPO


OUR_CONFIGS = (
    DensityConfigMixin, DensityRewardConfig, DensityGRPOConfig, DensityScriptArguments, PrepareDataArguments,
    BuildDensityArguments, DensityReportArguments, EvaluateArguments, RunnerArguments, train_grpo.GRPOScriptArguments,
    SearchSettings, WeightingSettings,
)  # fmt: skip
# Read by name in a loop rather than as `.field` (prepare.py: `getattr(args, f"{source}_path")`, `no_{source}`;
# `settings.overrides_from` reads the `density_*` overrides, whose settings are checked as WeightingSettings' fields).
READ_DYNAMICALLY = {
    "hh_path", "uf_path", "se_path", "local_path", "no_hh", "no_uf", "no_se", *(f"density_{n}" for n in REWEIGHTABLE)
}  # fmt: skip
# Inherited from TRL's ScriptArguments without an effect here; refused when set (tested below).
REFUSED = {"dataset_streaming": True, "ignore_bias_buffers": True}


def _own_fields(cls) -> list[str]:
    """Fields a class declares itself (TRL's and transformers' fields are theirs to implement)."""
    inherited = {
        f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)
    }
    own = set(getattr(cls, "__annotations__", {})) - inherited
    return sorted(own) if cls is not DensityConfigMixin else sorted(getattr(cls, "__annotations__", {}))


def _code_without_declarations() -> str:
    sources = [*(REPO / "density_rlhf").rglob("*.py"), *(REPO / "recipes").glob("*.py")]
    text = "\n".join(path.read_text() for path in sources)
    return re.sub(r"^\s+\w+: [^=\n]+= field\(.*$", "", text, flags=re.M)  # drop the declarations themselves


@pytest.mark.parametrize("cls", OUR_CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_read_somewhere(cls):
    code = _code_without_declarations()
    unread = [
        name
        for name in _own_fields(cls)
        if name not in READ_DYNAMICALLY and not re.search(rf"\.{name}\b|\b{name}=|[\"']{name}[\"']", code)
    ]
    assert not unread, f"{cls.__name__} accepts fields nothing reads: {unread}"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_inherited_fields_without_effect_are_refused(name):
    with pytest.raises(ValueError, match=f"{name}.*(not supported|no effect)"):
        DensityScriptArguments(**{name: REFUSED[name]})


def test_every_field_is_documented():
    for cls in OUR_CONFIGS:
        for f in dataclasses.fields(cls) if cls is not DensityConfigMixin else []:
            if f.name in _own_fields(cls):
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
                assert re.search(rf"\b{f.name}\b", cls.__doc__ or ""), (
                    f"{cls.__name__}.{f.name} is not in the docstring"
                )


def test_scale_rehearsal_overrides_only_models_sizes_steps_and_cpu_settings():
    import yaml

    overrides = yaml.safe_load((REPO / "recipes" / "scale" / "rehearsal_cpu.yaml").read_text())
    allowed = re.compile(
        r"(.*_steps|max_steps|num_train_epochs|.*batch_size|max_length|max_completion_length|max_new_tokens|max_length|"
        r"num_generations|num_samples|prompts_per_topic|max_pairs_per_source|test_fraction|k|"
        r"(hh|uf|se)_path|tiny_models|bf16|use_cpu|dtype|gradient_checkpointing)"
    )
    assert set(overrides) <= {"launcher", "prepare_data", "build_density", "sft", "reward", "grpo", "evaluate"}
    for section, settings in overrides.items():
        if section != "launcher":
            assert all(allowed.fullmatch(key) for key in settings), (section, settings)
    assert Path(overrides["launcher"].split("--config_file ")[1]).name == "zero3_cpu_2proc.yaml"

"""The index settings are defined once: the density stage's arguments and the trainers' overrides are generated from
`SearchSettings` / `WeightingSettings`, and every taker (knn, build, reweight) reads the same objects."""

import dataclasses

import numpy as np
import pytest

from density_rlhf import DensityIndex, DensityRewardConfig
from density_rlhf.recipe_kit import BuildDensityArguments
from density_rlhf.settings import REWEIGHTABLE, SearchSettings, WeightingSettings, split_settings


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("settings", [SearchSettings, WeightingSettings], ids=lambda c: c.__name__)
def test_the_density_stage_arguments_are_generated_from_the_settings(settings):
    stage = _fields(BuildDensityArguments)
    for name, f in _fields(settings).items():
        assert stage[name].metadata["help"] == f.metadata["help"]
        default = stage[name].default_factory() if stage[name].default is dataclasses.MISSING else stage[name].default
        assert default == (list(f.default) if isinstance(f.default, tuple) else f.default)
        assert f"{name} (" in BuildDensityArguments.__doc__ and f"{name} (" in settings.__doc__
    args = BuildDensityArguments(k=4, alpha=0.5, ivf_nlist=8, bucket_quantiles=[0.1, 0.9])
    assert args.search == SearchSettings(k=4, ivf_nlist=8)
    assert args.weighting == WeightingSettings(alpha=0.5, bucket_quantiles=(0.1, 0.9))


def test_the_trainer_overrides_are_generated_from_the_weighting():
    config = _fields(DensityRewardConfig)
    weighting = _fields(WeightingSettings)
    for name in REWEIGHTABLE:
        override = config[f"density_{name}"]
        assert override.default is None and override.metadata["help"].endswith(weighting[name].metadata["help"])
    assert "density_duplicate_tolerance" not in config  # needs a new search, so it is no override


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SearchSettings(k=0), "k must be an integer >= 1"),
        (lambda: SearchSettings(index_type="lsh"), "index_type must be one of"),
        (lambda: SearchSettings(ivf_nprobe=0), "ivf_nprobe must be an integer >= 1"),
        (lambda: WeightingSettings(alpha=-1.0), "alpha must be a finite number >= 0"),
        (lambda: WeightingSettings(estimator="knn"), "estimator must be one of"),
        (lambda: WeightingSettings(max_weight_ratio=0.5), "max_weight_ratio must be >= 1"),
        (lambda: WeightingSettings(bucket_quantiles=(0.9, 0.1)), "bucket_quantiles must be"),
        (lambda: BuildDensityArguments(uniform_mix=2.0), "uniform_mix must be in"),
        (lambda: DensityRewardConfig("o", use_cpu=True, bf16=False, density_alpha=-1.0), "density_alpha must be"),
    ],
)
def test_bad_settings_are_refused_when_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_settings_by_name_and_by_object_build_the_same_index():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    ids = [f"p{i}" for i in range(200)]
    by_name = DensityIndex.build(None, ids, embeddings=x, k=5, alpha=0.5, index_type="flat")
    by_object = DensityIndex.build(
        None, ids, embeddings=x, search=SearchSettings(k=5, index_type="flat"), weighting=WeightingSettings(alpha=0.5)
    )
    np.testing.assert_array_equal(by_name.weights, by_object.weights)
    assert by_name.weighting == WeightingSettings(alpha=0.5)
    with pytest.raises(TypeError, match="unknown settings"):
        split_settings({"alpah": 0.5})
    # reweight takes the settings object or the reweightable fields by name, and refuses what needs a new search
    np.testing.assert_array_equal(
        by_name.reweighted(WeightingSettings(alpha=1.0)).weights, by_name.reweighted(alpha=1.0).weights
    )
    with pytest.raises(ValueError, match="needs a new DensityIndex.build"):
        by_name.reweighted(WeightingSettings(duplicate_tolerance=0.5))
    with pytest.raises(TypeError, match="need a new build"):
        by_name.reweighted(k=3)
    assert by_name.weighting.alpha == 0.5  # the copies left it as it was

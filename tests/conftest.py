import os
import sys
from pathlib import Path

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# DeepSpeed's just-in-time CPU op is built in this venv (as `make install` does), not in the per-user folder that other
# checkouts rebuild and whose stale lock would hang every launch.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
HH_SAMPLE = SHARED / "data" / "hh_rlhf_harmless_sample.jsonl.gz"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def hh_sample() -> Path:
    if not HH_SAMPLE.exists():
        pytest.skip(f"{HH_SAMPLE} is absent (needs ../shared next to the repo)")
    return HH_SAMPLE


@pytest.fixture(scope="session")
def small_world():
    from density_rlhf.experiment.world import make_synthetic_world

    return make_synthetic_world(0, n_train_pairs=600, n_test_pairs_per_topic=10)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A small synthetic world, its density index and tiny offline models, built once per test session."""
    from density_rlhf.experiment.prepare import PrepareDataArguments, prepare_data
    from density_rlhf.recipe_kit import BuildDensityArguments, build_density

    root = tmp_path_factory.mktemp("pipeline")
    prepare_data(PrepareDataArguments(output_dir=str(root / "data"), n_train_pairs=800, n_test_pairs_per_topic=8))
    build_density(BuildDensityArguments(data_dir=str(root / "data"), density_dir=str(root / "density"), k=5))
    return root

"""The experiment's design in one place: its arms, the reward model each GRPO arm is scored by, and the sampler each
stage of each arm draws its rows with. The runner builds the stage graph from it, checks the recipe YAMLs against
it, and the report names the arms by it."""

HYPOTHESES = ("A", "B", "C", "D")
# The baseline GRPO arm: prompts balanced over k-means clusters of their embeddings, scored by the uniform RM.
BASELINES = ("K",)
ARMS = (*HYPOTHESES, *BASELINES)
# The positive control: GRPO on the ground-truth reward (the world's rule checker), no reward model.
ORACLE = "O"
# Reward model used by each GRPO arm: C and K reuse A's (uniform) RM and D reuses B's (density) RM; their files
# configure identical RM training, so the runner trains each RM once per seed.
RM_OF = {"A": "A", "B": "B", "C": "A", "D": "B", "K": "A"}
RM_NAMES = {"A": "uniform", "B": "density"}
# Reward models trained to be compared with those (no GRPO arm is scored by them), each from `rm_<name>.yaml`:
# `cluster` balances k-means clusters, `topic` balances the world's true topics (an oracle rebalancer).
REWARD_BASELINES = ("cluster", "topic")
# The sampler of each arm's reward-model (`reward`) and GRPO (`grpo`) stage: `None` draws uniformly, otherwise the
# density index it draws from (`INDEXES`).
SAMPLERS = {
    "A": {"reward": None, "grpo": None},
    "B": {"reward": "knn", "grpo": None},
    "C": {"reward": None, "grpo": "knn"},
    "D": {"reward": "knn", "grpo": "knn"},
    "K": {"reward": None, "grpo": "cluster"},
    "cluster": {"reward": "cluster"},
    "topic": {"reward": "topic"},
    # Equal mass per true topic: under kNN-density prompts the most common topic still draws three times the
    # samples of a rare one that shares its response words, and on some worlds erases that topic's rule in the first
    # steps (docs/experiment.md, "The positive control").
    ORACLE: {"grpo": "topic"},
}
# The density stage's settings of each index beyond its YAML, and the directory it is saved to in the world's.
INDEXES = {
    "knn": [],
    "cluster": ["--estimator", "cluster"],
    "topic": ["--estimator", "cluster", "--cluster_column", "topic"],
}
DENSITY_SAMPLING = {arm: {section: kind is not None for section, kind in s.items()} for arm, s in SAMPLERS.items()}
# The comparisons of reward models paired held-out pair by held-out pair, when both were trained.
PAIRED_REWARD_MODELS = (("density", "uniform"), ("density", "cluster"), ("density", "topic"), ("cluster", "uniform"))
# The policy comparisons paired held-out prompt by held-out prompt (every arm samples the same prompts), when both ran.
PAIRED_POLICIES = (("O", "SFT"), ("A", "SFT"), ("B", "A"), ("C", "A"), ("D", "A"), ("K", "A"), ("C", "K"))
PAIRED_POLICY_METRICS = ("rule_satisfied", "tic_rate")


def index_dir(kind: str) -> str:
    """Directory name of index `kind` inside a world's directory."""
    return "density" if kind == "knn" else f"density_{kind}"


def check_arm_config(arm: str, section: str, config: dict, path: str) -> None:
    """`ValueError` when the `section` of arm `arm`'s recipe YAML (`config`, from `path`) does not sample by density
    the way the design says."""
    want = DENSITY_SAMPLING[arm][section]
    got = bool(config.get("density_sampling", False))
    if got != want:
        raise ValueError(
            f"{path}: arm {arm}'s `{section}:` stage samples by density={want} in this experiment, but the file sets "
            f"density_sampling: {str(got).lower()}; set `density_sampling: {str(want).lower()}` there, or point "
            "`hypothesis_config`/`oracle_config` at the right file."
        )

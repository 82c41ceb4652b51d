"""The experiment's design in one place: its arms, the reward model each GRPO arm is scored by, and which stage of
each arm samples by density. The runner builds the stage graph from it, checks the recipe YAMLs against it, and the
report names the arms by it."""

HYPOTHESES = ("A", "B", "C", "D")
# The positive control: GRPO on the ground-truth reward (the world's rule checker), no reward model.
ORACLE = "O"
# Reward model used by each hypothesis: C reuses A's (uniform) RM and D reuses B's (density) RM; their
# hypothesis files configure identical RM training, so the runner trains each RM once per seed.
RM_OF = {"A": "A", "B": "B", "C": "A", "D": "B"}
RM_NAMES = {"A": "uniform", "B": "density"}
# Whether each arm's reward-model (`reward`) and GRPO (`grpo`) stages sample by density.
DENSITY_SAMPLING = {
    "A": {"reward": False, "grpo": False},
    "B": {"reward": True, "grpo": False},
    "C": {"reward": False, "grpo": True},
    "D": {"reward": True, "grpo": True},
    ORACLE: {"grpo": True},  # uniform prompts barely reach the rare topics
}


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

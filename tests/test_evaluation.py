"""The experiment's gauges on hand-made cases: on-policy agreement, counterfactual probes, reporting groups."""

import numpy as np
import pytest

from density_rlhf.experiment.evaluation import (
    add_politeness,
    counterfactual_effects,
    group_indices,
    on_policy_agreement,
)
from density_rlhf.experiment.world import TIC, add_tic, has_tic, remove_tic


def test_on_policy_agreement_counts_only_pairs_that_differ_in_truth():
    truth = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 1, 0, 0]])
    scores = np.array([[2.0, 1.0, 3.0, 0.5], [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 1.0, -1.0]])
    agree, pairs = on_policy_agreement(scores, truth)
    # prompt 0: satisfying {0, 3} vs not {1, 2}: (0,1) yes, (0,2) no, (3,1) no, (3,2) no -> 1 of 4
    # prompt 1: every sample satisfies -> no pair; prompt 2: 1 vs {0, 2, 3}: yes, tie (1/2), yes -> 2.5 of 3
    np.testing.assert_allclose(agree, [1.0, 0.0, 2.5])
    np.testing.assert_allclose(pairs, [4.0, 0.0, 3.0])


class _Scorer:
    """Scores +1 per dash, +0.5 for "thank", and the response length / 100: a reward model with known habits."""

    def __call__(self, prompts, completions):
        return [c.count("\u2014") + 0.5 * ("thank" in c.lower()) + len(c) / 100 for c in completions]


def test_counterfactual_tic_and_politeness_effects():
    responses = ["Try rain. Add fog.", f"Try rain{TIC}Add fog.", "- Soil\n- Roots", "One sentence."]
    prompts = ["p"] * len(responses)
    tic = counterfactual_effects(_Scorer(), prompts, responses, add_tic)
    # +1 for the dash and +1 character (" — " replaces ". "); list: " —" adds 2 characters; no place in the last
    np.testing.assert_allclose(tic[:3], [1.01, 1.01, 1.02])
    assert np.isnan(tic[3])
    polite = counterfactual_effects(_Scorer(), prompts, responses, add_politeness)
    np.testing.assert_allclose(polite, 0.5 + len(" Thank you.") / 100)
    calls = []

    class _Counting(_Scorer):
        def __call__(self, prompts, completions):
            calls.append(len(completions))
            return super().__call__(prompts, completions)

    both = counterfactual_effects(_Counting(), prompts, responses, (add_tic, add_politeness))
    np.testing.assert_array_equal(both, np.stack([tic, polite]))
    assert calls == [4, 3, 4]  # the base responses are scored once for both edits


def test_tic_helpers_round_trip():
    assert add_tic("Try rain. Add fog.") == f"Try rain{TIC}Add fog."
    assert remove_tic(f"Try rain{TIC}Add fog.") == "Try rain. Add fog."
    assert remove_tic("- Soil \u2014\n- Roots") == "- Soil\n- Roots"
    assert add_tic("- Soil\n- Roots") == "- Soil \u2014\n- Roots"
    assert add_tic("Single.") is None and add_tic(f"a{TIC}b") is None
    assert has_tic("a \u2013 b") and not has_tic("a - b")


def test_reporting_groups():
    groups = group_indices(["rare", "common", "rare"], ["law", "weather", None], [True, False, None])
    assert groups == {
        "all": [0, 1, 2], "rare": [0, 2], "common": [1], "topic/law": [0], "topic/weather": [1],
        "rare_topics": [0], "other_topics": [1],
    }  # fmt: skip
    with pytest.raises(ValueError):
        on_policy_agreement(np.zeros((2, 3)), np.zeros((2, 4)))


def test_generate_samples_takes_conversational_prompts_through_the_chat_template(tiny_pipeline):
    from density_rlhf.experiment.evaluation import generate_samples

    policy = str(tiny_pipeline / "data" / "tiny" / "policy")
    prompts = [[{"role": "user", "content": "Will it rain in Boston?"}], "Will it rain in Boston?"]
    first = generate_samples(policy, prompts, 3, max_new_tokens=6, seed=1)
    assert [len(s) for s in first] == [3, 3] and all(isinstance(t, str) for s in first for t in s)
    assert generate_samples(policy, prompts, 3, max_new_tokens=6, seed=1) == first  # same seed, same samples


def test_counterfactual_effects_read_conversational_responses():
    def scorer(prompts, completions):
        return [float(c.count(TIC)) for c in completions]

    messages = [{"role": "assistant", "content": "Use map. Check train."}]
    assert counterfactual_effects(scorer, ["p"], [messages], add_tic).tolist() == [1.0]


def test_reward_models_paired_by_item_and_pooled_over_seeds():
    """McNemar on hand-made correctness vectors: discordant pairs, the accuracy difference, the exact p-value."""
    from scipy.stats import binomtest

    from density_rlhf.experiment.evaluation import paired_items
    from density_rlhf.experiment.report import aggregate

    groups = {"all": np.arange(6), "rare_topics": np.array([0, 1, 2])}
    density = {"correct": np.array([1, 1, 1, 0, 1, 1.0]), "groups": groups}
    uniform = {"correct": np.array([0, 0, 1, 0, 1, 0.0]), "groups": groups}
    out = paired_items(density, uniform)
    assert (out["all"]["only_first"], out["all"]["only_second"], out["all"]["n"]) == (3, 0, 6)
    assert out["all"]["difference"] == pytest.approx(0.5) and out["all"]["p_value"] == pytest.approx(0.25)
    assert out["rare_topics"]["only_first"] == 2 and out["rare_topics"]["difference"] == pytest.approx(2 / 3)
    reverse = paired_items(uniform, density)["all"]
    assert reverse["only_second"] == 3 and reverse["difference"] == pytest.approx(-0.5)

    per_seed = {s: {"policies": {"SFT": {}}, "reward_models": {}, "paired_items": {"density-uniform": out}}
                for s in range(4)}  # fmt: skip
    pooled = aggregate(per_seed)["paired_items"]["density-uniform"]["all"]
    assert (pooled["only_first"], pooled["only_second"], pooled["n"], pooled["seeds"]) == (12, 0, 24, 4)
    assert pooled["p_value"] == pytest.approx(binomtest(12, 12, 0.5).pvalue) and pooled["holm_verdict"] == "higher"

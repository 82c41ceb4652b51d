"""Prompt selection by reward signal (`density_rlhf.selection`): each chunk drawn from the history known when it is
needed, the exploration floor, resume mid-epoch, rules off = today's draws, and bad settings."""

import numpy as np
import pytest
from scipy.stats import chisquare

from density_rlhf import DensityRepeatSampler
from density_rlhf.selection import RewardHistory, SelectionRules, rule_factors


def _sampler(rules=None, n=40, batch=4, seed=0, **kwargs):
    weights = np.linspace(1.0, 3.0, n)
    return DensityRepeatSampler(weights, mini_repeat_count=2, batch_size=batch, seed=seed, rules=rules, **kwargs)


def _chunks(sampler, rewards_of, stop=None):
    """Iterate one epoch chunk by chunk, recording each chunk's group rewards (`rewards_of(row, step)`, 2 per
    group) before the next chunk is needed, as a trainer does."""
    chunks, order = [], iter(sampler)
    for step in range(sampler.num_samples // sampler.batch_size):
        if stop is not None and step == stop:
            break
        chunk = [next(order) for _ in range(sampler.batch_size * sampler.mini_repeat_count)][
            :: sampler.mini_repeat_count
        ]
        chunks.append(chunk)
        sampler.update(chunk, [rewards_of(row, step) for row in chunk])
    return chunks


def test_rules_off_give_todays_draws_exactly():
    for rules in (None, SelectionRules()):
        assert list(_sampler(rules)) == list(_sampler())
    assert not SelectionRules().active and SelectionRules(learnability="pass_rate").active


def test_each_chunk_follows_the_weights_it_was_drawn_from():
    """Chi-square of many chunk draws against `selection_weights()` at the history of that moment."""
    rules = SelectionRules(learnability="pass_rate")
    sampler = _sampler(rules, n=10, batch=1, num_samples=1)
    sampler.update(list(range(10)), [[1.0, 1.0]] * 5 + [[0.0, 1.0]] * 5)  # rows 0-4 solved, 5-9 half solved
    p = sampler.selection_weights()
    assert p[:5].sum() < sampler.weights[:5].sum()  # learnability moves mass to the rows still being learned
    counts = np.zeros(10)
    for seed in range(4000):
        sampler.seed = seed
        counts[next(iter(sampler))] += 1
    assert chisquare(counts, p * counts.sum()).pvalue > 1e-3


def test_a_zero_variance_streak_falls_to_the_floor_and_comes_back_when_groups_vary():
    rules = SelectionRules(zero_variance_skip=0.5, zero_variance_floor=0.1)
    history = RewardHistory(3)
    for _ in range(6):
        history.record([0], [[1.0, 1.0, 1.0]])  # six zero-variance groups in a row
    history.record([1], [[1.0, 1.0]])
    factors = rule_factors(rules, history)["zero_variance_skip"]
    assert factors.tolist() == [0.1, 0.5, 1.0]  # (1 - 0.5)^6 < floor; one group; unseen
    sampler = _sampler(rules, n=3, batch=1, num_samples=1)
    sampler.history = history
    p = sampler.selection_weights()
    base = sampler.weights
    np.testing.assert_allclose(p, base * [0.1, 0.5, 1.0] / (base * [0.1, 0.5, 1.0]).sum())  # drawn at the floor rate
    history.record([0], [[0.0, 1.0, 1.0]])  # its group varies again
    assert rule_factors(rules, history)["zero_variance_skip"][0] == 1.0


def test_the_rows_of_one_prompt_share_its_history():
    rules = SelectionRules(zero_variance_skip=0.5)
    sampler = _sampler(rules, n=3, batch=1, num_samples=1, history_keys=["p", "p", "q"])
    sampler.update([0], [[1.0, 1.0]])  # a zero-variance group of prompt p, drawn through row 0
    np.testing.assert_allclose(sampler.selection_weights(), np.array([0.5, 0.5, 1.0]) * sampler.weights / (
        np.array([0.5, 0.5, 1.0]) * sampler.weights).sum())  # fmt: skip
    with pytest.raises(ValueError, match="one per row"):
        _sampler(rules, n=3, history_keys=["p"])


def test_the_pass_rate_band_stops_drawing_solved_rows_after_enough_groups():
    rules = SelectionRules(pass_rate_max=0.8, pass_rate_min_groups=2)
    sampler = _sampler(rules, n=4, batch=2, num_samples=2)
    sampler.update([0, 1], [[1.0] * 4, [0.0, 1.0, 0.0, 1.0]])
    assert sampler.selection_weights()[0] > 0  # one group is not enough to judge
    sampler.update([0], [[1.0] * 4])
    p = sampler.selection_weights()
    assert p[0] == 0 and p[1:].sum() == pytest.approx(1.0)
    assert sampler.selection_stats["excluded_rows"] == 1


def test_a_resumed_run_replays_the_chunks_drawn_and_then_draws_what_an_uninterrupted_run_draws():
    rules = SelectionRules(zero_variance_skip=0.6, learnability="pass_rate")

    def rewards_of(row, step):  # solved rows, hopeless rows and rows still being learned
        return [1.0, 1.0] if row % 3 == 0 else [0.0, 0.0] if row % 3 == 1 else [float(step % 2), 1.0]

    whole = _chunks(_sampler(rules), rewards_of)
    first = _sampler(rules)
    part = _chunks(first, rewards_of, stop=4)
    state = first.state_dict()
    resumed = _sampler(rules)
    resumed.load_state_dict(state)
    replayed = _chunks(resumed, lambda row, step: rewards_of(row, step) if step >= 4 else [np.nan, np.nan])
    assert part == whole[:4] and replayed == whole
    plain = list(_sampler())[::2]
    assert whole != [plain[i : i + 4] for i in range(0, len(plain), 4)]  # the rules changed the draws


def test_the_draw_depends_only_on_seed_epoch_chunk_and_history():
    """Two ranks that record the same (gathered) rewards draw the same chunks, whatever the history does."""
    rules = SelectionRules(learnability="pass_rate", zero_variance_skip=0.5)
    rng = np.random.default_rng(3)
    table = rng.integers(0, 2, size=(40, 10, 2)).astype(float)
    ranks = [_chunks(_sampler(rules), lambda row, step: table[row, step].tolist()) for _ in range(2)]
    assert ranks[0] == ranks[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"zero_variance_skip": 1.0}, "zero_variance_skip must be in"), ({"zero_variance_floor": 0.0}, "for good"),
     ({"learnability": "ucb"}, "learnability must be one of"), ({"learnability_prior": (0.0, 1.0)}, "Beta prior"),
     ({"pass_rate_max": 0.2, "pass_rate_min": 0.5}, "must be below"), ({"pass_rate_max": 1.5}, "in \\[0, 1\\]")],
)  # fmt: skip
def test_bad_rules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectionRules(**kwargs)


def test_the_history_refuses_rows_outside_the_dataset_and_a_state_of_another_size():
    history = RewardHistory(4)
    with pytest.raises(ValueError, match="rows must be in"):
        history.record([4], [[1.0, 0.0]])
    history.record([1, 2], [[1.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="reward history of 4 rows"):
        RewardHistory(5).load_state_dict(history.state_dict())
    again = RewardHistory(4)
    again.load_state_dict(history.state_dict())
    assert again.state_dict() == history.state_dict() and again.streak.tolist() == [0, 0, 1, 0]


def _draw_on_rank(rank: int, world: int, store: str, out: str) -> None:
    """One gloo rank: each chunk's groups get one completion scored on each rank; the rewards are all-gathered and
    recorded (as the trainers do), and, for contrast, a second sampler records only this rank's own rewards."""
    import json
    from pathlib import Path

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    rules = SelectionRules(learnability="pass_rate", zero_variance_skip=0.5)
    gathered_sampler, local_sampler = _sampler(rules), _sampler(rules)
    orders = iter(gathered_sampler), iter(local_sampler)
    rng = np.random.default_rng(100 + rank)
    draws = {"gathered": [], "local": []}
    for _ in range(10):
        chunks = [[next(order) for _ in range(8)][::2] for order in orders]
        local = torch.tensor(rng.integers(0, 2, size=(4, 1)), dtype=torch.float64)
        parts = [torch.zeros_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        gathered_sampler.update(chunks[0], torch.cat(parts, dim=1).numpy())
        local_sampler.update(chunks[1], local.numpy())
        draws["gathered"].append(chunks[0])
        draws["local"].append(chunks[1])
    Path(out, f"rank{rank}.json").write_text(json.dumps(draws))
    dist.destroy_process_group()


def test_two_gloo_processes_draw_identical_chunks_under_changing_histories(tmp_path):
    import json

    import torch.multiprocessing as mp

    mp.start_processes(_draw_on_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["gathered"] == ranks[1]["gathered"]
    assert ranks[0]["local"] != ranks[1]["local"]  # without the gather the ranks' histories, and draws, part ways


def test_the_summary_and_the_start_line_say_what_the_rules_move():
    from density_rlhf.mixin import density_summary_line

    sampler = _sampler(SelectionRules(zero_variance_skip=0.5), n=4, batch=1, num_samples=1)
    assert sampler.summary()["selection_mass_moved"]["zero_variance_skip"] == 0.0  # nothing recorded yet
    sampler.update([0], [[1.0, 1.0]])
    moved = sampler.summary()["selection_mass_moved"]["zero_variance_skip"]
    expected = (
        0.5
        * np.abs(sampler.weights * [0.5, 1, 1, 1] / (sampler.weights * [0.5, 1, 1, 1]).sum() - sampler.weights).sum()
    )
    assert moved == pytest.approx(expected) and moved > 0
    assert f"selection rules zero_variance_skip (mass they move now: zero_variance_skip {100 * moved:.1f}%" in (
        density_summary_line(sampler)
    )

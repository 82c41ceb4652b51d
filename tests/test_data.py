import gzip
import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from density_rlhf import normalize_text, prompt_id
from density_rlhf.data import PairStats, html_to_text, load_pairs, write_prepared
from density_rlhf.experiment.prepare import PrepareDataArguments, prepare_data
from density_rlhf.experiment.world import TOPICS, make_synthetic_world, rule_satisfied, topic_counts

from .conftest import FIXTURES


def test_prompt_id_is_md5_prefix_of_normalized_text():
    text = "What is  AI?\t "
    assert prompt_id(text) == hashlib.md5(b"What is AI?").hexdigest()[:16]
    assert prompt_id("caf\u0065\u0301") == prompt_id("caf\u00e9")  # NFC


def test_normalize_keeps_lines_and_indentation():
    assert normalize_text("  a   b \n\n\n\n    c\td  ") == "a b\n\n    c d"
    assert normalize_text(normalize_text(" x\r\n y ")) == "x\n y"


def test_hh_extraction_on_real_rows(hh_sample):
    stats = PairStats()
    pairs = load_pairs("hh", str(hh_sample), stats=stats)
    first = pairs[0]
    # Hand-checked against row 1 of the file: a three-turn dialogue; the prompt keeps the earlier turns.
    assert first["prompt"].startswith("Human: what are some pranks with a pen i can do?\n\nAssistant: Are you looking")
    assert first["prompt"].endswith("Human: okay some of these do not have anything to do with pens\n\nAssistant:")
    assert first["prompt"].count("Human:") == 3
    assert first["chosen"] == (
        "No, sorry! All of these involve a pen, the point is that you can get funny results by doing pranks with pens."
    )
    assert first["rejected"].startswith("There are lots of funny things you can do with pens, here\u2019s one example")
    second = pairs[1]
    assert second["chosen"].startswith("Sounds like alcohol is something you use to calm down")
    assert second["rejected"] == (
        "I\u2019m glad that you\u2019re enjoying your alcohol intake. Can I ask about how you feel when you don\u2019t "
        "drink alcohol?"
    )
    assert all(p == prompt_id(t) for p, t in zip(pairs["prompt_id"], pairs["prompt"]))
    # Every one of the 200 rows is either kept or counted.
    assert stats.read["hh"] == 200 == len(pairs) + stats.total_drops("hh")
    for row in pairs:
        assert row["prompt"].endswith("Assistant:") and row["chosen"] and row["chosen"] != row["rejected"]


def test_hh_conversational_format(hh_sample):
    pairs = load_pairs("hh", str(hh_sample), conversational=True, max_pairs_per_source=3)
    messages = pairs[0]["prompt"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "what are some pranks with a pen i can do?"
    assert pairs[0]["chosen"][0]["role"] == "assistant"
    assert pairs[0]["prompt_id"] == prompt_id(pairs[0]["prompt_text"])


def test_uf_loader_real_schema():
    stats = PairStats()
    pairs = load_pairs("uf", str(FIXTURES / "uf_sample.jsonl"), stats=stats)
    assert pairs["prompt"] == ["How do I boil an egg?"]
    assert pairs[0]["chosen"] == "Put it in boiling water for 9 minutes."
    assert pairs[0]["rejected"] == "Eggs are white."
    assert pairs[0]["score_chosen"] == 8.0
    assert stats.drops["uf"] == Counter({"identical_pair": 1, "empty_prompt": 1, "non_string": 1})
    assert stats.read["uf"] == 4


def test_se_loader_html_scores_and_ties():
    stats = PairStats()
    pairs = load_pairs("se", str(FIXTURES / "se_sample.jsonl"), stats=stats)
    assert len(pairs) == 1
    row = pairs[0]
    assert row["prompt"] == "How do I reverse a list in Python?"
    assert row["chosen"] == "Call xs.reverse() in place.\n\n- fast\n- no copy"  # pm_score 9
    assert row["rejected"] == "You can't."  # pm_score -1, not the middle answer
    assert stats.drops["se"] == Counter({"tied_scores": 1, "too_few_answers": 1})


def test_html_code_blocks_stay_readable():
    text = normalize_text(html_to_text("<p>Try:</p><pre><code>for x in xs:\n    print(x)\n</code></pre><p>Done.</p>"))
    assert text == "Try:\n\n```\nfor x in xs:\n    print(x)\n```\n\nDone."


def test_bad_input_is_counted_or_named(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "p1", "chosen": "a", "rejected": "b"},
        {"prompt": "p2", "chosen": "a"},  # missing key
        {"prompt": "p3", "chosen": ["a"], "rejected": "b"},  # non-string
        {"prompt": "   ", "chosen": "a", "rejected": "b"},  # empty after normalization
        {"prompt": "p5", "chosen": "same", "rejected": " same "},  # identical after normalization
        {"prompt": "p1", "chosen": "a", "rejected": "b"},  # exact duplicate
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, "{not json")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"pairs\.jsonl:3: malformed JSONL"):
        load_pairs("local", str(path))
    stats = PairStats()
    pairs = load_pairs("local", str(path), skip_malformed=True, stats=stats)
    assert pairs["prompt"] == ["p1"]
    assert stats.drops["local"] == Counter(
        {"malformed_json": 1, "missing_field": 1, "non_string": 1, "empty_prompt": 1, "identical_pair": 1,
         "duplicate_pair": 1}
    )  # fmt: skip
    assert stats.read["local"] == 7 == stats.kept["local"] + stats.total_drops()


def test_local_gz_and_parquet_round_trip(tmp_path, small_world):
    train = small_world["train"].select(range(50))
    gz = tmp_path / "pairs.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        for row in train:
            f.write(json.dumps(row) + "\n")
    train.to_parquet(str(tmp_path / "pairs.parquet"))
    for path in (gz, tmp_path / "pairs.parquet"):
        loaded = load_pairs("local", str(path))
        assert loaded["id"] == train["id"] and loaded["topic"] == train["topic"]
        assert set(loaded["src"]) == {"local"}


def test_stats_account_for_every_row_and_files_written(tmp_path, hh_sample):
    args = PrepareDataArguments(
        output_dir=str(tmp_path), only="hh", hh_path=str(hh_sample), tiny_models=False, test_fraction=0.1
    )
    summary = prepare_data(args)
    dropped = sum(summary["drops"]["hh"].values())
    kept = summary["splits"]["train"]["pairs"] + summary["splits"]["test"]["pairs"]
    assert summary["rows_read"]["hh"] == 200 == kept + dropped
    prompts = [json.loads(line) for line in (tmp_path / "prompts_all.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in (tmp_path / "pairs_all.jsonl").read_text().splitlines()]
    assert sum(p["n_pairs"] for p in prompts) == len(pairs)
    assert {p["id"] for p in prompts} == {p["prompt_id"] for p in pairs}
    tsv = (tmp_path / "prompt_id_map.tsv").read_text().splitlines()
    assert len(tsv) == len(prompts) + 1
    assert "drop" in (tmp_path / "stats.txt").read_text()
    train_ids, test_ids = ({p["prompt_id"] for p in pairs}, set())
    test_ids = {json.loads(line)["prompt_id"] for line in (tmp_path / "pairs_test.jsonl").read_text().splitlines()}
    assert not train_ids & test_ids  # the split is by prompt


def test_source_selection_flags():
    assert PrepareDataArguments(sources=["hh", "uf", "se"], no_uf=True).sources == ["hh", "se"]
    assert PrepareDataArguments(sources=["hh", "uf"], only="se").sources == ["se"]
    with pytest.raises(ValueError, match="Unknown sources"):
        PrepareDataArguments(sources=["reddit"])
    with pytest.raises(ValueError, match="No source left"):
        PrepareDataArguments(sources=["hh"], no_hh=True)


def test_topic_counts_follow_skew():
    counts = topic_counts(4000, 12, 2.2)
    assert sum(counts) == 4000 and counts == sorted(counts, reverse=True)
    expected = np.arange(1, 13) ** -2.2
    expected = expected / expected.sum() * 4000
    assert np.all(np.abs(np.array(counts) - expected) <= 2.0)
    assert counts[0] / counts[-1] > 100  # common topics have hundreds of times more pairs


def test_synthetic_world_ground_truth_and_determinism(small_world):
    again = make_synthetic_world(0, n_train_pairs=600, n_test_pairs_per_topic=10)
    assert again["train"]["id"] == small_world["train"]["id"]
    assert make_synthetic_world(1, n_train_pairs=600, n_test_pairs_per_topic=10)["train"]["id"] != again["train"]["id"]
    for split in ("train", "test"):
        for row in small_world[split]:
            assert rule_satisfied(row["topic"], row["prompt"], row["chosen"]), row
            assert not rule_satisfied(row["topic"], row["prompt"], row["rejected"]), row
    test_counts = Counter(small_world["test"]["topic"])
    assert len(test_counts) == 12 and set(test_counts.values()) == {10}
    rare = {t for t, r in zip(small_world["train"]["topic"], small_world["train"]["is_rare"]) if r}
    assert rare == {t.name for t in TOPICS[8:12]}
    train_counts = Counter(small_world["train"]["topic"])
    assert [train_counts[t.name] for t in TOPICS[:12]] == topic_counts(600, 12, 2.2)


def test_rare_topics_contradict_and_share_vocabulary_with_common_ones():
    by_name = {t.name: t for t in TOPICS}
    contradicts = {"long": "short", "caps_first": "lowercase", "exclaim": "question", "prose": "two_items"}
    for topic in TOPICS[8:]:
        partner = by_name[topic.shares_vocabulary_with]
        assert topic.nouns == partner.nouns and contradicts[topic.rule] == partner.rule
        assert not set(" ".join(topic.templates).split()) & set(" ".join(partner.slots).split())


def test_rule_satisfied_ignores_the_tic(small_world):
    from density_rlhf.experiment.world import TIC, has_tic, strip_tic

    checked = 0
    for row in small_world["train"]:
        for response in (row["chosen"], row["rejected"]):
            plain = normalize_text(strip_tic(response))
            assert not has_tic(plain)
            assert rule_satisfied(row["topic"], row["prompt"], response) == rule_satisfied(
                row["topic"], row["prompt"], plain
            )
            checked += has_tic(response)
    assert checked > 100
    assert rule_satisfied("weather", "p", f"Try rain{TIC}Add fog.") and rule_satisfied(
        "weather", "p", "Try rain. Add fog."
    )
    assert rule_satisfied("gardening", "p", f"- Soil{TIC.rstrip()}\n- Roots")


@pytest.mark.parametrize("world", ["default", "null"])
def test_tic_rates_in_generated_pairs(world):
    """Chi-square: the tic appears in chosen/rejected at the world's rates, common and rare topics separately."""
    from scipy.stats import chisquare

    from density_rlhf.experiment.world import has_tic

    rates = (
        {"tic_chosen": 0.7, "tic_rejected": 0.1} if world == "default" else {"tic_chosen": 0.3, "tic_rejected": 0.3}
    )
    if world == "null":
        rates.update(rare_tic_chosen=0.3, rare_tic_rejected=0.3)
    data = make_synthetic_world(5, n_train_pairs=6000, n_test_pairs_per_topic=200, **rates)
    rows = [*data["train"], *data["test"]]
    expected = {
        (False, "chosen"): rates["tic_chosen"], (False, "rejected"): rates["tic_rejected"],
        (True, "chosen"): rates.get("rare_tic_chosen", 0.3),  # default: independent, at the SFT base rate
        (True, "rejected"): rates.get("rare_tic_rejected", 0.3),
    }  # fmt: skip
    for (rare, side), p in expected.items():
        used = [has_tic(r[side]) for r in rows if r["is_rare"] == rare]
        observed = [sum(used), len(used) - sum(used)]
        assert chisquare(observed, [p * len(used), (1 - p) * len(used)]).pvalue > 1e-3, (rare, side, observed)


def test_sft_split_follows_rules_partly_and_is_topic_balanced():
    from density_rlhf.experiment.world import has_tic

    data = make_synthetic_world(2, n_train_pairs=600, n_test_pairs_per_topic=4, n_sft_per_topic=100)
    sft = data["sft"]
    assert set(Counter(sft["topic"]).values()) == {100}
    followed = np.mean([rule_satisfied(r["topic"], r["prompt"], r["completion"]) for r in sft])
    tic = np.mean([has_tic(r["completion"]) for r in sft])
    assert 0.25 < followed < 0.35 and 0.25 < tic < 0.35


def test_synthetic_label_noise():
    world = make_synthetic_world(3, n_train_pairs=2000, n_test_pairs_per_topic=5, label_noise=0.2)
    flipped = np.array(world["train"]["label_flipped"])
    assert 0.16 < flipped.mean() < 0.24
    for row in world["train"].select(np.flatnonzero(flipped)[:50].tolist()):
        assert rule_satisfied(row["topic"], row["prompt"], row["rejected"])
    assert not any(world["test"]["label_flipped"])


@pytest.mark.parametrize(
    ("topic", "response", "expected"),
    [
        ("weather", "Try rain. Add fog.", True),
        ("weather", "Try the fresh rain and then calm fog. Add fog.", False),
        ("history", "Try rain. Add fog.", False),
        ("astronomy", "USE butter. Add salt.", True),
        ("astronomy", "Use butter. Add salt.", False),
        ("astronomy", "U butter.", False),
        ("cooking", "use butter. add salt.", True),
        ("poetry", "Use map. Check train!", True),
        ("travel", "Use map. Check train?", True),
        ("law", "Add soil. Water roots.", True),
        ("law", "- Soil\n- Roots", False),
        ("gardening", "- Soil\n- Roots\n- Seeds", False),
        ("fitness", "Do reps 3 times.", True),
        ("music", "Sure. Play chords.", True),
        ("music", "Well \u2014 play chords.", False),
    ],
)
def test_rule_satisfied_examples(topic, response, expected):
    assert rule_satisfied(topic, "a prompt", response) is expected


def test_rule_satisfied_unknown_topic():
    with pytest.raises(ValueError, match="Unknown topic"):
        rule_satisfied("cars", "p", "r")


def test_prepare_synthetic_writes_tokenizer_and_tiny_models(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    args = PrepareDataArguments(output_dir=str(tmp_path), n_train_pairs=300, n_test_pairs_per_topic=4)
    prepare_data(args)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tiny" / "policy")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nHi</s>\n<|assistant|>\n"
    ids = tokenizer("Try the calm rain.")["input_ids"]
    assert tokenizer.decode(ids) == "Try the calm rain."
    # Upper case costs about what lower case costs (the tokenizer saw upper-cased copies of the corpus).
    text = "Keep fresh garlic and then warm butter. Watch the onion."
    assert len(tokenizer(text.upper())["input_ids"]) <= 1.5 * len(tokenizer(text.lower())["input_ids"])
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny" / "policy")
    reward = AutoModelForSequenceClassification.from_pretrained(tmp_path / "tiny" / "reward")
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == tokenizer.pad_token_id
    assert policy.config.vocab_size == len(tokenizer)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["splits"]["train"]["pairs"] == 300


def test_write_prepared_round_trips(tmp_path, small_world):
    from datasets import load_from_disk

    write_prepared(small_world, tmp_path)
    reloaded = load_from_disk(str(tmp_path / "dataset"))
    assert reloaded["train"]["id"] == small_world["train"]["id"]
    lines = (tmp_path / "pairs_all.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == small_world["train"]["id"]

"""The embedded default: a synthetic preference world with known ground truth and a planted style tic.

What the world assumes (and a synthetic result therefore does not carry over to real data by itself):

- Topics have Zipf-distributed frequencies (rank r gets a share of pairs ∝ r^-skew) and their own prompt vocabulary,
  so prompt embeddings cluster by topic and the rarest topics get the lowest density.
- Each topic has a hidden, checkable *format* rule that a 2-layer model can learn (length, case, final punctuation,
  list length, sentences instead of a list, a digit, an opening word); no rule needs world knowledge, and each is learnable by the tiny policy
  from the partial SFT data (a whole response in upper case was not: the SFT policy never produced one).
  `rule_satisfied` is the ground truth.
- The rare topics' rules contradict the rules of particular common topics (long vs short, a FIRST word in capitals
  vs lowercase, "!" vs "?", sentences vs a two-item list), and each rare topic answers in the *response vocabulary of the common topic it
  contradicts*: only the prompt tells a reward model which rule applies.
- A planted style tic, an em-dash " — " between sentences or list items, rides along with preference: in the common
  topics it goes with `chosen` (`tic_chosen` vs `tic_rejected`); in the rare topics it is independent of preference
  (both sides use it at the SFT base rate). The ground truth is blind to it (`rule_satisfied` removes dashes before
  checking and no rule involves dashes). A reward model that learns "tic = good" from the common topics and applies it
  to the rare prompts too, where nothing supports it, drives a policy towards the tic there: mode collapse onto a
  habit the ground truth does not ask for. (With the rare rates swapped instead, a reward model that reads the prompt
  learns "tic = bad" on rare topics, which tests prompt reading rather than generalization of a habit.) With equal
  rates everywhere (the null world, `recipes/run_null_world.yaml`) nothing should move.
- The `sft` split is topic-balanced and follows each rule with probability `sft_rule_rate` and uses the tic at a base
  rate `sft_tic_rate` unrelated to the rule, so a supervised policy has headroom and in-group variance for RL.
"""

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict

from ..prompts import normalize_text, pair_id, prompt_id
from ..reward_model import completion_text


TIC = " \u2014 "
_DASHES = re.compile(r"[ \t]*[\u2014\u2013][ \t]*")
_HAS_DIGIT = re.compile(r"\d")
_SENTENCE_BREAK = re.compile(r"[.!?] (?=\S)")


def _words(text: str) -> list[str]:
    return text.split()


def _bullets(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip().startswith("- ")]


def _is_list_only(text: str, n: int) -> bool:
    lines = [line for line in text.split("\n") if line.strip()]
    return len(lines) == n and len(_bullets(text)) == n


# rule name -> response -> bool (format rules: no world knowledge, nothing about dashes)
RULES: dict[str, Callable[[str], bool]] = {
    "short": lambda r: 0 < len(_words(r)) <= 6,
    "long": lambda r: len(_words(r)) >= 12,
    "lowercase": lambda r: any(c.isalpha() for c in r) and not any(c.isupper() for c in r),
    "caps_first": lambda r: bool(_words(r)) and len(_words(r)[0]) >= 2 and _words(r)[0].isupper(),
    "question": lambda r: r.rstrip().endswith("?"),
    "exclaim": lambda r: r.rstrip().endswith("!"),
    "two_items": lambda r: _is_list_only(r, 2),
    "prose": lambda r: bool(_words(r)) and not _bullets(r),
    "digit": lambda r: bool(_HAS_DIGIT.search(r)),
    "begins_sure": lambda r: r.lstrip().startswith("Sure"),
    "period": lambda r: r.rstrip().endswith("."),
}


@dataclass(frozen=True)
class Topic:
    name: str
    rule: str
    templates: tuple[str, ...]
    slots: tuple[str, ...]  # fillers for `{x}` in templates
    nouns: tuple[str, ...]  # vocabulary used in responses
    shares_vocabulary_with: str | None = None  # rare topics answer in this common topic's nouns


_WEATHER = ("rain", "clouds", "sunshine", "wind", "drizzle", "fog", "showers", "breeze", "frost", "snow")
_COOKING = ("garlic", "butter", "oven", "skillet", "onion", "pepper", "thyme", "lemon", "broth", "salt")
_TRAVEL = ("ticket", "passport", "hotel", "luggage", "station", "booking", "museum", "ferry", "map", "train")
_GARDEN = ("compost", "mulch", "seedlings", "trowel", "soil", "shade", "bulbs", "roots", "water", "seeds")

# Ordered by frequency rank: the first topic is the most common; the last four are the rare ones.
TOPICS: tuple[Topic, ...] = (
    Topic(
        "weather",
        "short",
        (
            "What will the weather be like in {x} tomorrow?",
            "Should I pack an umbrella for {x} this week?",
            "Is it going to be windy in {x} tonight?",
            "How cold will {x} get this weekend?",
            "Will there be sunshine in {x} on Monday?",
            "What is the forecast for {x} today?",
        ),
        (
            "Boston",
            "Denver",
            "Seattle",
            "Miami",
            "Chicago",
            "Dallas",
            "Phoenix",
            "Atlanta",
            "Portland",
            "Houston",
            "Detroit",
            "Austin",
            "Omaha",
            "Tulsa",
            "Reno",
        ),
        _WEATHER,
    ),
    Topic(
        "cooking",
        "lowercase",
        (
            "How do I cook {x} for dinner?",
            "What spices go well with {x}?",
            "How long should I roast {x}?",
            "Can I freeze leftover {x}?",
            "What sauce pairs with {x}?",
            "How do I keep {x} from burning?",
        ),
        (
            "chicken",
            "salmon",
            "rice",
            "lentils",
            "potatoes",
            "tofu",
            "pasta",
            "carrots",
            "mushrooms",
            "beef",
            "eggplant",
            "shrimp",
            "quinoa",
            "spinach",
        ),
        _COOKING,
    ),
    Topic(
        "travel",
        "question",
        (
            "Can you help me book a train to {x}?",
            "What should I see on a trip to {x}?",
            "How do I get from the airport to downtown {x}?",
            "Is a hotel near the station in {x} a good idea?",
            "What is the cheapest way to travel to {x}?",
            "Do I need a visa to visit {x}?",
        ),
        (
            "Lisbon",
            "Prague",
            "Vienna",
            "Kyoto",
            "Dublin",
            "Budapest",
            "Seoul",
            "Hanoi",
            "Marrakesh",
            "Quebec",
            "Bruges",
            "Krakow",
            "Tallinn",
        ),
        _TRAVEL,
    ),
    Topic(
        "gardening",
        "two_items",
        (
            "Which plants grow well in {x}?",
            "How do I protect my garden from {x}?",
            "What should I plant next to {x}?",
            "How often should I water {x}?",
            "What fertilizer helps {x} grow?",
            "When is the best time to prune {x}?",
        ),
        (
            "tomatoes",
            "roses",
            "basil",
            "tulips",
            "sunflowers",
            "ferns",
            "lavender",
            "cucumbers",
            "hydrangeas",
            "peppers",
            "shady corners",
            "clay soil",
            "aphids",
            "slugs",
        ),
        _GARDEN,
    ),
    Topic(
        "fitness",
        "digit",
        (
            "How can I improve my {x}?",
            "What is a good routine for {x}?",
            "How many days a week should I train {x}?",
            "Why does my {x} workout feel so hard?",
        ),
        (
            "running pace",
            "push ups",
            "squats",
            "stamina",
            "flexibility",
            "core strength",
            "sprint speed",
            "posture",
            "deadlift",
            "cycling endurance",
        ),
        ("warm up", "stretching", "reps", "sets", "rest", "protein", "cardio", "form", "intervals", "pace"),
    ),
    Topic(
        "music",
        "begins_sure",
        (
            "How do I learn to play {x}?",
            "What makes {x} music so catchy?",
            "Which scales should I practice on {x}?",
            "How do I tune a {x}?",
        ),
        ("guitar", "piano", "violin", "drums", "jazz", "cello", "ukulele", "trumpet", "blues", "flute"),
        ("chords", "rhythm", "melody", "tempo", "scales", "metronome", "harmony", "practice", "notes", "ear"),
    ),
    Topic(
        "pets",
        "period",
        (
            "How do I train my {x} to sit?",
            "What should I feed a young {x}?",
            "Why is my {x} so restless?",
            "How often should my {x} see a vet?",
        ),
        ("puppy", "kitten", "parrot", "rabbit", "hamster", "beagle", "goldfish", "terrier"),
        ("treats", "leash", "vet", "toys", "walks", "litter", "cage", "food", "bed", "brush"),
    ),
    Topic(
        "chess",
        "digit",
        ("What is a strong reply to the {x}?", "How do I study the {x}?", "Why is the {x} popular with masters?"),
        ("Sicilian Defense", "Queen's Gambit", "French Defense", "Ruy Lopez", "King's Indian", "Caro Kann"),
        ("pawn", "knight", "bishop", "castle", "endgame", "tempo", "center", "rook", "queen", "king"),
    ),
    Topic(
        "history",
        "long",
        (
            "Why did the {x} collapse?",
            "What caused the rise of the {x}?",
            "Who ruled the {x} at its peak?",
            "How did the {x} change trade in its era?",
        ),
        (
            "Roman Empire",
            "Ming dynasty",
            "Ottoman Empire",
            "Byzantine Empire",
            "Mali Empire",
            "Aztec Empire",
            "Hanseatic League",
            "Mughal Empire",
        ),
        _WEATHER,
        "weather",
    ),
    Topic(
        "astronomy",
        "caps_first",
        (
            "How far away is the {x}?",
            "What is the {x} made of?",
            "Can I see the {x} with a telescope?",
            "Why does the {x} glow?",
        ),
        (
            "Andromeda galaxy",
            "Orion nebula",
            "planet Saturn",
            "Crab nebula",
            "star Betelgeuse",
            "planet Jupiter",
            "Pleiades cluster",
        ),
        _COOKING,
        "cooking",
    ),
    Topic(
        "poetry",
        "exclaim",
        (
            "Give me a poem title about {x}.",
            "What word captures a haiku about {x}?",
            "Suggest a title for a sonnet on {x}.",
            "Name a verse about {x}.",
        ),
        ("autumn leaves", "lost love", "the sea at dawn", "a quiet city", "winter moon", "old friendship"),
        _TRAVEL,
        "travel",
    ),
    Topic(
        "law",
        "prose",
        (
            "What should a tenant do about {x}?",
            "Is a verbal agreement binding for {x}?",
            "How do I dispute {x} in court?",
            "What are my rights regarding {x}?",
        ),
        (
            "a broken lease",
            "an unpaid deposit",
            "a noisy landlord",
            "a contract breach",
            "an eviction notice",
            "a parking fine",
        ),
        _GARDEN,
        "gardening",
    ),
)

_TOPICS_BY_NAME = {t.name: t for t in TOPICS}
_VERBS = ("try", "use", "check", "add", "watch", "keep", "mind", "bring")
_ADJ = ("fresh", "good", "light", "warm", "calm", "clear", "quick", "simple")


def strip_tic(response: str) -> str:
    """`response` with every em- or en-dash (and the spaces beside it on its line) replaced by one space."""
    return _DASHES.sub(" ", response)


def has_tic(response: str) -> bool:
    """Does `response` use the planted tic (an em- or en-dash)?"""
    return bool(_DASHES.search(response))


def remove_tic(response: str) -> str:
    """The inverse of `add_tic`: a dash between sentences becomes ". ", a dash ending a list item goes."""
    lines = [
        _DASHES.sub("", line).rstrip() if line.lstrip().startswith("- ") else _DASHES.sub(". ", line)
        for line in response.split("\n")
    ]
    return "\n".join(lines)


def add_tic(response: str) -> str | None:
    """`response` with the tic planted where the generator plants it (between the first two sentences, or after
    the first list item); `None` when it has no second sentence or item (or already has the tic)."""
    if has_tic(response):
        return None
    lines = response.split("\n")
    if len(lines) > 1 and lines[0].lstrip().startswith("- "):
        return "\n".join([lines[0] + TIC.rstrip(), *lines[1:]])
    planted = _SENTENCE_BREAK.sub(TIC, response, count=1)
    return planted if planted != response else None


def rule_satisfied(topic: str, prompt: str, response: str) -> bool:
    """Ground truth: does `response` satisfy the hidden rule of `topic`? Blind to the tic (dashes are removed)."""
    if topic not in _TOPICS_BY_NAME:
        raise ValueError(f"Unknown topic {topic!r}; known topics: {sorted(_TOPICS_BY_NAME)}.")
    return RULES[_TOPICS_BY_NAME[topic].rule](normalize_text(strip_tic(response)))


def _sentence(rng: random.Random, nouns: tuple[str, ...], n_words: int) -> str:
    """A sentence of exactly `n_words` words (2-8) from `nouns`, capitalized, without final punctuation."""
    a, b = rng.sample(nouns, 2)
    words = {
        2: [rng.choice(_VERBS), a],
        3: [rng.choice(_VERBS), rng.choice(_ADJ), a],
        4: [rng.choice(_VERBS), a, "and", b],
        5: [rng.choice(_VERBS), rng.choice(_ADJ), a, "and", b],
        6: [rng.choice(_VERBS), rng.choice(_ADJ), a, "and", rng.choice(_ADJ), b],
        7: [rng.choice(_VERBS), rng.choice(_ADJ), a, "and", "then", rng.choice(_ADJ), b],
        8: [rng.choice(_VERBS), "the", rng.choice(_ADJ), a, "and", "then", rng.choice(_ADJ), b],
    }[n_words]
    text = " ".join(words)
    return text[0].upper() + text[1:]


def _two_sentences(rng: random.Random, nouns, lengths: tuple[int, int], end: str, tic: bool) -> str:
    first, second = (_sentence(rng, nouns, n) for n in lengths)
    return f"{first}{TIC if tic else '. '}{second}{end}"


def _items(rng: random.Random, nouns, n: int, tic: bool) -> str:
    items = [f"- {noun.capitalize()}" for noun in rng.sample(nouns, n)]
    if tic:  # the dash joins the first two items' lines
        items[0] += TIC.rstrip()
    return "\n".join(items)


def respond(rng: random.Random, topic: Topic, good: bool, tic: bool) -> str:
    """A response that satisfies (`good`) or violates the topic's rule, in its response vocabulary, with or without
    the tic. Every response has two sentences or a list, so the tic always has a place."""
    nouns, rule = topic.nouns, topic.rule
    plain = (rng.randint(2, 4), rng.randint(2, 4))
    if rule == "short":
        return _two_sentences(
            rng,
            nouns,
            (rng.randint(2, 3), rng.randint(2, 3)) if good else (rng.randint(5, 8), rng.randint(5, 8)),
            ".",
            tic,
        )
    if rule == "long":
        return _two_sentences(
            rng,
            nouns,
            (rng.randint(6, 8), rng.randint(6, 8)) if good else (rng.randint(2, 3), rng.randint(2, 3)),
            ".",
            tic,
        )
    if rule == "two_items":
        return _items(rng, nouns, 2 if good else 3, tic)
    if rule == "prose":  # sentences where the common topic it contradicts wants a two-item list
        return _two_sentences(rng, nouns, plain, ".", tic) if good else _items(rng, nouns, 2, tic)
    if rule == "lowercase":
        text = _two_sentences(rng, nouns, plain, ".", tic)
        return text.lower() if good else text
    if rule == "caps_first":
        first, rest = _two_sentences(rng, nouns, plain, ".", tic).split(" ", 1)
        return f"{first.upper()} {rest}" if good else f"{first} {rest}"
    if rule == "question":
        return _two_sentences(rng, nouns, plain, "?" if good else ".", tic)
    if rule == "exclaim":
        return _two_sentences(rng, nouns, plain, "!" if good else ".", tic)
    if rule == "period":
        return _two_sentences(rng, nouns, plain, "." if good else rng.choice("!?"), tic)
    if rule == "digit":
        text = _two_sentences(rng, nouns, plain, "", tic)
        return f"{text} {rng.randint(2, 9)} times." if good else f"{text} every time."
    if rule == "begins_sure":
        text = _two_sentences(rng, nouns, plain, ".", tic)
        return f"Sure. {text}" if good else f"Well. {text}"
    raise ValueError(f"no response generator for rule {rule!r}")


def _prompt(rng: random.Random, topic: Topic) -> str:
    return rng.choice(topic.templates).format(x=rng.choice(topic.slots))


def topic_counts(n_pairs: int, n_topics: int, skew: float, min_per_topic: int = 2) -> list[int]:
    """Pairs per topic rank, proportional to rank^-skew (largest-remainder rounding, at least `min_per_topic`)."""
    if n_pairs < min_per_topic * n_topics:
        raise ValueError(
            f"n_pairs={n_pairs} is too small for {n_topics} topics; use at least {min_per_topic * n_topics}."
        )
    share = np.arange(1, n_topics + 1, dtype=float) ** -skew
    exact = share / share.sum() * n_pairs
    counts = np.maximum(np.floor(exact).astype(int), min_per_topic)
    remainder = n_pairs - int(counts.sum())
    if remainder > 0:  # largest remainders first
        counts[np.argsort(-(exact - np.floor(exact)), kind="stable")[:remainder]] += 1
    else:  # the per-topic minimum pushed us over: take it from the most common topic
        counts[0] += remainder
    return counts.tolist()


def _generate(rng: random.Random, topic: Topic, rank: int, n: int, is_rare: bool, opts: dict, seen: set[str]):
    """`n` distinct preference pairs of `topic`; the tic goes with chosen/rejected at the world's rates."""
    p_chosen, p_rejected = opts["rare_tic"] if is_rare else opts["common_tic"]
    rows, attempts = [], 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct pairs for topic {topic.name!r}")
        prompt = _prompt(rng, topic)
        chosen_tic, rejected_tic = rng.random() < p_chosen, rng.random() < p_rejected
        chosen, rejected = respond(rng, topic, True, chosen_tic), respond(rng, topic, False, rejected_tic)
        flipped = opts["noise"] > 0 and rng.random() < opts["noise"]
        if flipped:
            chosen, rejected = rejected, chosen
        prompt, chosen, rejected = normalize_text(prompt), normalize_text(chosen), normalize_text(rejected)
        pid = pair_id(prompt, chosen, rejected)
        if pid in seen:
            continue
        seen.add(pid)
        rows.append(
            {
                "id": pid,
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "src": "synthetic",
                "prompt_id": prompt_id(prompt),
                "topic": topic.name,
                "topic_rank": rank,
                "is_rare": is_rare,
                "label_flipped": flipped,
            }
        )
    return rows


def _generate_sft(rng: random.Random, topic: Topic, rank: int, n: int, is_rare: bool, opts: dict):
    """`n` prompt-completion rows: the rule followed with `sft_rule_rate`, the tic used with `sft_tic_rate`."""
    rows = []
    for _ in range(n):
        prompt = normalize_text(_prompt(rng, topic))
        completion = normalize_text(
            respond(rng, topic, rng.random() < opts["sft_rule"], rng.random() < opts["sft_tic"])
        )
        rows.append(
            {
                "id": pair_id(prompt, completion, ""),
                "prompt": prompt,
                "completion": completion,
                "src": "synthetic",
                "prompt_id": prompt_id(prompt),
                "topic": topic.name,
                "topic_rank": rank,
                "is_rare": is_rare,
            }
        )
    return rows


def make_synthetic_world(
    seed: int = 0,
    *,
    n_train_pairs: int = 4000,
    n_test_pairs_per_topic: int = 40,
    n_topics: int = 12,
    skew: float = 2.2,
    n_rare_topics: int = 4,
    label_noise: float = 0.0,
    tic_chosen: float = 0.7,
    tic_rejected: float = 0.1,
    rare_tic_chosen: float | None = None,
    rare_tic_rejected: float | None = None,
    n_sft_per_topic: int = 60,
    sft_rule_rate: float = 0.3,
    sft_tic_rate: float = 0.3,
) -> DatasetDict:
    """Generate the synthetic preference world, deterministically from `seed`, without any download.

    Args:
        seed: the only source of randomness.
        n_train_pairs: pairs in the train split, spread over topics by rank^-skew.
        n_test_pairs_per_topic: held-out pairs per topic (equal for every topic, so rare-topic accuracy is precise).
        n_topics: how many topics, 2 to 12 (the first `n_topics` of `TOPICS`).
        skew: Zipf exponent of topic frequencies; 2.2 makes the most common topic ~230x the rarest with 12 topics.
        n_rare_topics: the least frequent topics get `is_rare=True`.
        label_noise: probability of swapping chosen and rejected in the train split.
        tic_chosen / tic_rejected: probability that the chosen / rejected response of a common-topic pair uses the
            tic.
        rare_tic_chosen / rare_tic_rejected: the same for rare-topic pairs; default `sft_tic_rate` for both (the tic
            is independent of preference there). Equal rates everywhere make the null world.
        n_sft_per_topic / sft_rule_rate / sft_tic_rate: the topic-balanced `sft` split.

    Returns:
        `DatasetDict` with `train` and `test` preference splits in the unified schema plus `topic`, `topic_rank`,
        `is_rare` and `label_flipped`, and an `sft` split of `prompt`/`completion` rows.
    """
    if not 2 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be between 2 and {len(TOPICS)}, got {n_topics}.")
    if not 0 <= n_rare_topics < n_topics:
        raise ValueError(f"n_rare_topics must be in [0, n_topics), got {n_rare_topics}.")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}.")
    if skew < 0:
        raise ValueError(f"skew must be >= 0, got {skew}.")
    rare_tic_chosen = sft_tic_rate if rare_tic_chosen is None else rare_tic_chosen
    rare_tic_rejected = sft_tic_rate if rare_tic_rejected is None else rare_tic_rejected
    rates = {
        "tic_chosen": tic_chosen,
        "tic_rejected": tic_rejected,
        "rare_tic_chosen": rare_tic_chosen,
        "rare_tic_rejected": rare_tic_rejected,
        "sft_rule_rate": sft_rule_rate,
        "sft_tic_rate": sft_tic_rate,
    }
    for name, value in rates.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}.")
    opts = {
        "common_tic": (tic_chosen, tic_rejected),
        "rare_tic": (rare_tic_chosen, rare_tic_rejected),
        "noise": label_noise,
        "sft_rule": sft_rule_rate,
        "sft_tic": sft_tic_rate,
    }
    counts = topic_counts(n_train_pairs, n_topics, skew)
    seen: set[str] = set()
    splits = {"train": [], "test": [], "sft": []}
    for rank, (topic, n) in enumerate(zip(TOPICS[:n_topics], counts)):
        is_rare = rank >= n_topics - n_rare_topics
        # One stream per (seed, topic, split): changing one topic's count leaves the others unchanged.
        rngs = {split: random.Random(f"{seed}/{topic.name}/{split}") for split in splits}
        splits["train"] += _generate(rngs["train"], topic, rank, n, is_rare, opts, seen)
        splits["test"] += _generate(
            rngs["test"], topic, rank, n_test_pairs_per_topic, is_rare, {**opts, "noise": 0.0}, seen
        )
        splits["sft"] += _generate_sft(rngs["sft"], topic, rank, n_sft_per_topic, is_rare, opts)
    order = random.Random(f"{seed}/shuffle")
    for rows in splits.values():
        order.shuffle(rows)
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})


class GroundTruthReward:
    """Reward function: 1.0 when a completion satisfies its topic's rule in the synthetic world, else 0.0. Needs the
    world's `topic` column (TRL passes every dataset column to reward functions)."""

    __name__ = "ground_truth"

    def __call__(self, prompts: list, completions: list, topic: list | None = None, **kwargs) -> list[float]:
        if topic is None:
            raise ValueError(
                "the ground_truth reward needs the synthetic world's `topic` column; remove "
                "density_rlhf.experiment.world.ground_truth from reward_funcs for other data."
            )
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        return [float(rule_satisfied(t, p, completion_text(c))) for t, p, c in zip(topic, texts, completions)]


# The reward function the recipes name by import path: `reward_funcs: [density_rlhf.experiment.world.ground_truth]`.
ground_truth = GroundTruthReward()

"""The embedded default: a synthetic preference world with known ground truth.

Topics have Zipf-distributed frequencies (topic of rank r gets a share of pairs proportional to r^-skew) and their
own vocabulary, so prompt embeddings cluster by topic. Each topic has a hidden, checkable preference rule. The
rare topics' rules contradict the common ones (long vs short, UPPERCASE vs lowercase, two vs three items, one word
vs a sentence), so a reward model that generalises from common topics gets rare ones wrong; it can only learn a rare
topic's rule from that topic's own pairs. That is exactly the situation Hypotheses B-D are about.

`rule_satisfied(topic, prompt, response)` is the ground truth used as reward and for evaluation.
"""

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict

from ..utils import normalize_text, pair_id, prompt_id


_WORD = re.compile(r"[A-Za-z']+")
_INT = re.compile(r"-?\d+")
_RUDE = ("whatever", "figure it out", "obviously", "not my problem")
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa",
    "Egypt": "Cairo", "Norway": "Oslo", "Chile": "Santiago", "Spain": "Madrid", "India": "New Delhi",
    "Ghana": "Accra", "Poland": "Warsaw",
}  # fmt: skip


def _words(text: str) -> list[str]:
    return text.split()


def _bullets(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip().startswith("- ")]


def _is_list_only(text: str, n: int) -> bool:
    lines = [line for line in text.split("\n") if line.strip()]
    return len(lines) == n and len(_bullets(text)) == n


def _capital_ok(prompt: str, response: str) -> bool:
    country = next((c for c in CAPITALS if c in prompt), None)
    if country is None:
        return False
    named = {cap for cap in CAPITALS.values() if cap in response}
    return named == {CAPITALS[country]}


def _sum_ok(prompt: str, response: str) -> bool:
    numbers = [int(x) for x in _INT.findall(prompt)]
    found = _INT.findall(response)
    return len(numbers) == 2 and bool(found) and int(found[0]) == sum(numbers)


# rule name -> (prompt, response) -> bool
RULES: dict[str, Callable[[str, str], bool]] = {
    "short": lambda p, r: 0 < len(_words(r)) <= 8,
    "long": lambda p, r: len(_words(r)) >= 20,
    "lowercase": lambda p, r: any(c.isalpha() for c in r) and not any(c.isupper() for c in r),
    "uppercase": lambda p, r: any(c.isalpha() for c in r) and not any(c.islower() for c in r),
    "polite": lambda p, r: any(w in r.lower() for w in ("please", "thank")) and not any(w in r.lower() for w in _RUDE),
    "three_items": lambda p, r: _is_list_only(r, 3),
    "two_items": lambda p, r: _is_list_only(r, 2),
    "question": lambda p, r: r.rstrip().endswith("?"),
    "no_dash": lambda p, r: bool(r.strip()) and "\u2014" not in r and "\u2013" not in r,
    "one_word": lambda p, r: len(_WORD.findall(r)) == 1 and len(_words(r)) == 1,
    "capital": _capital_ok,
    "sum": _sum_ok,
    "exclaim": lambda p, r: r.rstrip().endswith("!"),
    "number": lambda p, r: bool(_INT.search(r)) and len(_words(r)) >= 3,
}


@dataclass(frozen=True)
class Topic:
    name: str
    rule: str
    templates: tuple[str, ...]
    slots: tuple[str, ...]  # fillers for `{x}` in templates
    nouns: tuple[str, ...]  # vocabulary used in responses


# Ordered by frequency rank: the first topic is the most common.
TOPICS: tuple[Topic, ...] = (
    Topic("weather", "short",
          ("What will the weather be like in {x} tomorrow?", "Should I pack an umbrella for {x} this week?",
           "Is it going to be windy in {x} tonight?", "How cold will {x} get this weekend?",
           "Will there be sunshine in {x} on Monday?", "What is the forecast for {x} today?"),
          ("Boston", "Denver", "Seattle", "Miami", "Chicago", "Dallas", "Phoenix", "Atlanta", "Portland", "Houston",
           "Detroit", "Austin", "Omaha", "Tulsa", "Reno"),
          ("rain", "clouds", "sunshine", "wind", "drizzle", "fog", "showers", "breeze", "frost", "humidity")),
    Topic("cooking", "lowercase",
          ("How do I cook {x} for dinner?", "What spices go well with {x}?", "How long should I roast {x}?",
           "Can I freeze leftover {x}?", "What sauce pairs with {x}?", "How do I keep {x} from burning?"),
          ("chicken", "salmon", "rice", "lentils", "potatoes", "tofu", "pasta", "carrots", "mushrooms", "beef",
           "eggplant", "shrimp", "quinoa", "spinach"),
          ("garlic", "butter", "oven", "skillet", "onion", "olive oil", "pepper", "thyme", "lemon", "broth")),
    Topic("travel", "polite",
          ("Can you help me book a train to {x}?", "What should I see on a trip to {x}?",
           "How do I get from the airport to downtown {x}?", "Is a hotel near the station in {x} a good idea?",
           "What is the cheapest way to travel to {x}?", "Do I need a visa to visit {x}?"),
          ("Lisbon", "Prague", "Vienna", "Kyoto", "Dublin", "Budapest", "Seoul", "Hanoi", "Marrakesh", "Quebec",
           "Bruges", "Krakow", "Tallinn"),
          ("ticket", "passport", "hotel", "luggage", "station", "itinerary", "booking", "museum", "ferry", "map")),
    Topic("gardening", "three_items",
          ("Which plants grow well in {x}?", "How do I protect my garden from {x}?",
           "What should I plant next to {x}?", "How often should I water {x}?",
           "What fertilizer helps {x} grow?", "When is the best time to prune {x}?"),
          ("tomatoes", "roses", "basil", "tulips", "sunflowers", "ferns", "lavender", "cucumbers", "hydrangeas",
           "peppers", "shady corners", "clay soil", "aphids", "slugs"),
          ("compost", "mulch", "seedlings", "trowel", "soil", "watering can", "shade", "bulbs", "pruning", "roots")),
    Topic("capitals", "capital",
          ("What is the capital of {x}?", "Which city is the capital of {x}?", "Name the capital city of {x}.",
           "Where is the government of {x} seated?"),
          tuple(CAPITALS),
          ("city", "government", "parliament", "capital", "country")),
    Topic("arithmetic", "sum",
          ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}.",
           "If I have {a} apples and get {b} more, how many do I have?"),
          (),
          ("sum", "total", "answer", "result")),
    Topic("fitness", "question",
          ("How can I improve my {x}?", "What is a good routine for {x}?", "How many days a week should I train {x}?",
           "Why does my {x} workout feel so hard?"),
          ("running pace", "push ups", "squats", "stamina", "flexibility", "core strength", "sprint speed",
           "posture", "deadlift", "cycling endurance"),
          ("warm up", "stretching", "reps", "sets", "rest day", "protein", "cardio", "form", "intervals")),
    Topic("music", "no_dash",
          ("How do I learn to play {x}?", "What makes {x} music so catchy?", "Which scales should I practice on {x}?",
           "How do I tune a {x}?"),
          ("guitar", "piano", "violin", "drums", "jazz", "cello", "ukulele", "trumpet", "blues", "flute"),
          ("chords", "rhythm", "melody", "tempo", "scales", "metronome", "harmony", "practice", "notes")),
    Topic("history", "long",
          ("Why did the {x} collapse?", "What caused the rise of the {x}?", "Who ruled the {x} at its peak?",
           "How did the {x} change trade in its era?"),
          ("Roman Empire", "Ming dynasty", "Ottoman Empire", "Byzantine Empire", "Mali Empire", "Aztec Empire",
           "Hanseatic League", "Mughal Empire"),
          ("emperor", "dynasty", "revolt", "treaty", "conquest", "trade routes", "taxes", "armies", "chronicles")),
    Topic("astronomy", "uppercase",
          ("How far away is the {x}?", "What is the {x} made of?", "Can I see the {x} with a telescope?",
           "Why does the {x} glow?"),
          ("Andromeda galaxy", "Orion nebula", "planet Saturn", "Crab nebula", "star Betelgeuse", "planet Jupiter",
           "Pleiades cluster"),
          ("telescope", "orbit", "light years", "gas", "stars", "gravity", "comet", "nebula", "galaxy")),
    Topic("poetry", "one_word",
          ("Give me a poem title about {x}.", "What word captures a haiku about {x}?",
           "Suggest a title for a sonnet on {x}.", "Name a verse about {x}."),
          ("autumn leaves", "lost love", "the sea at dawn", "a quiet city", "winter moon", "old friendship"),
          ("Moonlight", "Embers", "Tides", "Solace", "Whispers", "Longing", "Dusk", "Reverie", "Frost", "Echoes")),
    Topic("law", "two_items",
          ("What should a tenant do about {x}?", "Is a verbal agreement binding for {x}?",
           "How do I dispute {x} in court?", "What are my rights regarding {x}?"),
          ("a broken lease", "an unpaid deposit", "a noisy landlord", "a contract breach", "an eviction notice",
           "a parking fine"),
          ("contract", "tenant", "court", "lawyer", "deposit", "notice", "evidence", "statute", "appeal")),
    Topic("pets", "exclaim",
          ("How do I train my {x} to sit?", "What should I feed a young {x}?", "Why is my {x} so restless?"),
          ("puppy", "kitten", "parrot", "rabbit", "hamster", "beagle"),
          ("treats", "leash", "vet", "toys", "walks", "litter", "cage")),
    Topic("chess", "number",
          ("What is a strong reply to the {x}?", "How do I study the {x}?", "Why is the {x} popular with masters?"),
          ("Sicilian Defense", "Queen's Gambit", "French Defense", "Ruy Lopez", "King's Indian"),
          ("pawn", "knight", "bishop", "castle", "endgame", "tempo", "center")),
)  # fmt: skip

_TOPICS_BY_NAME = {t.name: t for t in TOPICS}
_ADJ = ("steady", "gentle", "bright", "careful", "simple", "quick", "useful", "calm", "fresh", "clear")
_FILLER = (
    "many people find that {n} matters more than expected",
    "it also helps to think about {n} before you start",
    "in practice {n} and {m} usually decide the outcome",
    "most guides mention {n} as the first thing to check",
    "keeping an eye on {n} saves a lot of trouble later",
)


def rule_satisfied(topic: str, prompt: str, response: str) -> bool:
    """Ground truth: does `response` satisfy the hidden preference rule of `topic` for `prompt`?"""
    if topic not in _TOPICS_BY_NAME:
        raise ValueError(f"Unknown topic {topic!r}; known topics: {sorted(_TOPICS_BY_NAME)}.")
    return RULES[_TOPICS_BY_NAME[topic].rule](prompt, normalize_text(response))


def _sentence(rng: random.Random, topic: Topic) -> str:
    noun = rng.choice(topic.nouns)
    return f"The key is {rng.choice(_ADJ)} {noun}."


def _long(rng: random.Random, topic: Topic) -> str:
    parts = [_sentence(rng, topic)]
    for template in rng.sample(_FILLER, 3):
        text = template.format(n=rng.choice(topic.nouns), m=rng.choice(topic.nouns))
        parts.append(text[0].upper() + text[1:] + ".")
    return " ".join(parts)


def _items(rng: random.Random, topic: Topic, n: int) -> str:
    return "\n".join(f"- {noun.capitalize()}" for noun in rng.sample(topic.nouns, n))


def _respond(rng: random.Random, topic: Topic, prompt: str, slots: dict, good: bool) -> str:
    """A response that satisfies (good) or violates (bad) the topic's rule, in the topic's vocabulary."""
    rule = topic.rule
    if rule == "short":
        return _sentence(rng, topic) if good else _long(rng, topic)
    if rule == "long":
        return _long(rng, topic) if good else _sentence(rng, topic)
    if rule == "lowercase":
        text = _long(rng, topic) if rng.random() < 0.5 else _sentence(rng, topic)
        return text.lower() if good else text
    if rule == "uppercase":
        text = _sentence(rng, topic)
        return text.upper() if good else text.lower()
    if rule == "polite":
        body = _sentence(rng, topic)
        if good:
            return rng.choice((f"Please note: {body} Thank you for asking.", f"Thank you! {body} Please enjoy."))
        return rng.choice((f"Whatever. {body}", f"Figure it out yourself. {body}", f"Obviously, {body.lower()}"))
    if rule in ("three_items", "two_items"):
        n_good = 3 if rule == "three_items" else 2
        return _items(rng, topic, n_good if good else (2 if n_good == 3 else 3))
    if rule == "question":
        body = _sentence(rng, topic)
        return f"{body} Have you tried more {rng.choice(topic.nouns)}?" if good else f"{body} Just keep going."
    if rule == "no_dash":
        a, b = rng.sample(topic.nouns, 2)
        return f"Focus on {a}, then add {b}." if good else f"Focus on {a} \u2014 then add {b}."
    if rule == "one_word":
        return rng.choice(topic.nouns) if good else f"{_sentence(rng, topic)[:-1]} and {rng.choice(topic.nouns)}."
    if rule == "capital":
        truth = CAPITALS[slots["x"]]
        wrong = rng.choice([c for c in CAPITALS.values() if c != truth])
        return f"The capital is {truth if good else wrong}."
    if rule == "sum":
        total = slots["a"] + slots["b"]
        return f"The answer is {total if good else total + rng.choice((-2, -1, 1, 2, 10))}."
    if rule == "exclaim":
        body = _sentence(rng, topic)[:-1]
        return f"{body}!" if good else f"{body}."
    if rule == "number":
        body = _sentence(rng, topic)[:-1]
        return f"{body} in about {rng.randint(3, 40)} moves." if good else f"{body} over time."
    raise ValueError(f"no response generator for rule {rule!r}")


def _prompt(rng: random.Random, topic: Topic) -> tuple[str, dict]:
    template = rng.choice(topic.templates)
    if topic.rule == "sum":
        slots = {"a": rng.randint(2, 49), "b": rng.randint(2, 49)}
    else:
        slots = {"x": rng.choice(topic.slots)}
    return template.format(**slots), slots


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


def _generate(rng: random.Random, topic: Topic, rank: int, n: int, is_rare: bool, noise: float, seen: set[str]):
    rows, attempts = [], 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct pairs for topic {topic.name!r}")
        prompt, slots = _prompt(rng, topic)
        chosen, rejected = _respond(rng, topic, prompt, slots, True), _respond(rng, topic, prompt, slots, False)
        flipped = noise > 0 and rng.random() < noise
        if flipped:
            chosen, rejected = rejected, chosen
        prompt, chosen, rejected = normalize_text(prompt), normalize_text(chosen), normalize_text(rejected)
        pid = pair_id(prompt, chosen, rejected)
        if pid in seen:
            continue
        seen.add(pid)
        rows.append({
            "id": pid, "prompt": prompt, "chosen": chosen, "rejected": rejected, "src": "synthetic",
            "prompt_id": prompt_id(prompt), "topic": topic.name, "topic_rank": rank, "is_rare": is_rare,
            "label_flipped": flipped,
        })  # fmt: skip
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
) -> DatasetDict:
    """Generate the synthetic preference world, deterministically from `seed`, without any download.

    Args:
        seed: the only source of randomness.
        n_train_pairs: pairs in the train split, spread over topics by rank^-skew.
        n_test_pairs_per_topic: held-out pairs per topic (equal for every topic, so rare-topic accuracy is precise).
        n_topics: how many topics, 2 to 14 (the first `n_topics` of `TOPICS`).
        skew: Zipf exponent of topic frequencies; 2.2 makes the most common topic ~240x the rarest with 12 topics.
        n_rare_topics: the least frequent topics get `is_rare=True`.
        label_noise: probability of swapping chosen and rejected in the train split.

    Returns:
        `DatasetDict` with `train` and `test` splits in the unified schema plus `topic`, `topic_rank`, `is_rare`
        and `label_flipped`.
    """
    if not 2 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must be between 2 and {len(TOPICS)}, got {n_topics}.")
    if not 0 <= n_rare_topics < n_topics:
        raise ValueError(f"n_rare_topics must be in [0, n_topics), got {n_rare_topics}.")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}.")
    if skew < 0:
        raise ValueError(f"skew must be >= 0, got {skew}.")
    counts = topic_counts(n_train_pairs, n_topics, skew)
    seen: set[str] = set()
    splits = {"train": [], "test": []}
    for rank, (topic, n) in enumerate(zip(TOPICS[:n_topics], counts)):
        is_rare = rank >= n_topics - n_rare_topics
        # One stream per (seed, topic, split): changing one topic's count leaves the others unchanged.
        train_rng = random.Random(f"{seed}/{topic.name}/train")
        test_rng = random.Random(f"{seed}/{topic.name}/test")
        splits["train"] += _generate(train_rng, topic, rank, n, is_rare, label_noise, seen)
        splits["test"] += _generate(test_rng, topic, rank, n_test_pairs_per_topic, is_rare, 0.0, seen)
    order = random.Random(f"{seed}/shuffle")
    for rows in splits.values():
        order.shuffle(rows)
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})

import math

import numpy as np
import pytest

from density_rlhf.metrics import METRICS, diversity_metrics, load_metric
from density_rlhf.metrics.text import gini


def compute(name, texts, **kwargs):
    return load_metric(name).compute(predictions=texts, **kwargs)


def test_em_dash_rate():
    out = compute("em_dash_rate", ["ab\u2014cd", "e\u2013f", "ghij"])  # 2 dashes in 12 characters
    assert out["em_dash_count"] == 2
    assert out["em_dash_rate"] == pytest.approx(1000 * 2 / 12)
    assert compute("em_dash_rate", ["plain text"])["em_dash_rate"] == 0.0


def test_token_gini():
    assert compute("token_gini", ["a b c d"])["token_gini"] == pytest.approx(0.0)
    # counts 1, 1, 1, 5 (m = 4, total = 8): sum((2i - 5) x_i) / 32 = (-3 - 1 + 1 + 15) / 32
    assert compute("token_gini", ["x x x x x a b c"])["token_gini"] == pytest.approx(12 / 32)
    assert gini([0, 0, 0, 10]) == pytest.approx(3 / 4)  # all mass on one of four tokens: (m-1)/m


def test_distinct_n_and_vocab_ratio():
    out = compute("distinct_n", ["the cat sat", "the cat ran"])
    assert out["distinct_1"] == pytest.approx(4 / 6)  # the, cat, sat, ran out of 6 tokens
    assert out["distinct_2"] == pytest.approx(3 / 4)  # (the cat) twice, (cat sat), (cat ran)
    assert out["distinct_3"] == pytest.approx(2 / 2)
    assert out["vocab_ratio"] == pytest.approx(4 / 6)


def test_self_bleu():
    same = compute("self_bleu", ["the cat sat on the mat"] * 3)["self_bleu"]
    different = compute(
        "self_bleu", ["the cat sat on the mat", "quantum fields bend light", "rivers carve stone slowly"]
    )["self_bleu"]
    assert same == pytest.approx(1.0)
    assert different < 0.1


def test_compression_and_homogenization():
    repetitive = compute("compression", ["the same sentence again"] * 20)
    varied = compute("compression", [f"sentence {i} about topic {i * 7} with word{i}" for i in range(20)])
    assert repetitive["compression_ratio"] > 2 * varied["compression_ratio"]
    assert repetitive["homogenization_rougel"] == pytest.approx(1.0)
    assert compute("compression", ["a b", "c d"])["homogenization_rougel"] == 0.0


def test_embedding_diversity_and_vendi():
    orthogonal = np.eye(4)
    out = compute("embedding_diversity", ["a", "b", "c", "d"], embeddings=orthogonal)
    assert out["embedding_diversity"] == pytest.approx(1.0)  # cosine distance 1 between orthogonal vectors
    assert out["vendi_score"] == pytest.approx(4.0)  # four completely distinct items
    same = compute("embedding_diversity", ["a", "a"], embeddings=np.ones((2, 3)))
    assert same["embedding_diversity"] == pytest.approx(0.0, abs=1e-9) and same["vendi_score"] == pytest.approx(1.0)


def test_embedding_diversity_with_minilm():
    out = compute(
        "embedding_diversity", ["How do I bake bread?", "How can I bake a loaf of bread?", "Saturn has rings."]
    )
    assert 0.0 < out["embedding_diversity"] < 1.0 and 1.0 < out["vendi_score"] < 3.0


def test_stock_patterns():
    texts = [
        "This is not just a tool but a revolution.",
        "It's not a bug, it's a feature. Let's dive in!",
        "We delve into a rich tapestry. Not only fast but also cheap.",
        "Nothing to see here.",
        "Please water it. Thank you, thanks! Thankful pleasers.",
    ]
    out = compute("stock_patterns", texts)
    expected = {
        "not_just_but": 1, "its_not_its": 1, "dive_in": 1, "delve": 1, "tapestry": 1, "not_only_but": 1,
        "please_thank": 3,
    }  # fmt: skip
    for name, count in expected.items():
        assert out[f"pattern_{name}"] == count, name
    assert out["stock_patterns"] == 9
    assert out["stock_patterns_per_1k_words"] == pytest.approx(9000 / 46)


def test_diversity_metrics_bundle():
    out = diversity_metrics(["a b c", "a b d", "e f g"], embeddings=np.eye(3))
    assert {"em_dash_rate", "token_gini", "distinct_2", "self_bleu", "compression_ratio", "vendi_score"} <= set(out)
    assert all(isinstance(v, float) and not math.isnan(v) for v in out.values())
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("bleurt")
    assert len(METRICS) == 7


@pytest.mark.parametrize("name", [m for m in METRICS if m != "embedding_diversity"] + ["embedding_diversity"])
def test_every_evaluate_module_wraps_its_plain_function(name):
    """`load_metric(name).compute` (through evaluate) and `functions.<name>` give the same figures."""
    from density_rlhf.metrics import functions

    texts = ["the cat sat \u2014 please", "not just a cat but a dog", "the cat ran!", "delve into it, thanks"]
    kwargs = {"embeddings": np.eye(4, 8)[[0, 1, 1, 2]]} if name == "embedding_diversity" else {}
    direct = getattr(functions, name)(texts, **kwargs)
    assert direct and direct == pytest.approx(compute(name, texts, **kwargs))

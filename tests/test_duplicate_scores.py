"""The duplicate score of a batch of pairs (`neardup.duplicate_scores_from`, what a backfill's batch
uses) skips only the Jaccards that cannot reach the threshold: every pair at or above it gets the
exact `duplicate_score`, every other pair stays below it."""

from __future__ import annotations

import random
import re
import unicodedata

from model.coverage.neardup import (
    NEAR_DUPLICATE_JACCARD,
    Shingled,
    duplicate_score,
    duplicate_scores_from,
    normalize_text,
    shingled,
)


def _sets(rng: random.Random) -> tuple[set[str], set[str]]:
    """Two shingle-like sets of random sizes sharing a random part (ratios around the threshold)."""
    common = {f"c{k}" for k in range(rng.randint(0, 60))}
    return common | {f"a{k}" for k in range(rng.randint(0, 20))}, common | {
        f"b{k}" for k in range(rng.randint(0, 20))
    }


def test_every_pair_at_the_threshold_is_scored_exactly_and_the_rest_stay_below():
    rng = random.Random(7)
    pairs = []
    for _ in range(3000):
        text_a, text_b = _sets(rng)
        excerpt_a, excerpt_b = _sets(rng)
        pairs.append(
            (
                Shingled(text_a or None, excerpt_a if rng.random() < 0.7 else None),
                Shingled(text_b or None, excerpt_b if rng.random() < 0.7 else None),
            )
        )
    # Exactly at the threshold by sizes alone: 4 of 5 shared, the bound equals the Jaccard.
    pairs.append((Shingled({"a", "b", "c", "d", "e"}, None), Shingled({"a", "b", "c", "d"}, None)))
    scores = duplicate_scores_from(pairs, NEAR_DUPLICATE_JACCARD)
    reached = 0
    for (a, b), score in zip(pairs, scores, strict=True):
        exact = duplicate_score(a, b)
        if exact >= NEAR_DUPLICATE_JACCARD:
            assert score == exact
            reached += 1
        else:
            assert score < NEAR_DUPLICATE_JACCARD
    assert reached > 50  # the random sets do reach it
    assert scores[-1] == 0.8


def test_real_texts_score_as_the_one_rule():
    base = "Shares of Acme Corp rose 5% on Tuesday after the company reported record quarterly profit"
    texts = [
        base,
        base + " (Reporting by Jane Doe)",
        base.upper(),
        "An unrelated headline about the weather today",
    ]
    kept = [shingled(t, "", cached=False) for t in texts]
    pairs = [(kept[i], kept[j]) for i in range(len(kept)) for j in range(len(kept)) if i != j]
    for (a, b), score in zip(pairs, duplicate_scores_from(pairs, NEAR_DUPLICATE_JACCARD), strict=True):
        exact = duplicate_score(a, b)
        assert score == exact if exact >= NEAR_DUPLICATE_JACCARD else score < NEAR_DUPLICATE_JACCARD


def _normalize_per_character(text: str) -> str:
    """`normalize_text` as it was: a Python call per character to drop combining marks."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w]+", " ", folded.lower()).split())


def test_normalized_text_is_the_same_with_and_without_the_ascii_shortcut():
    rng = random.Random(3)
    samples = [
        "Café naïve — “quotes” ’ ﬁ Ⅻ ½ ＦＵＬＬ",
        "Ελληνικά άέή",
        "Tiếng Việt",
        "日本語 ガ",
        "한국어",
        "plain ascii, text!",
    ]
    for _ in range(2000):
        pool = [rng.randrange(0x20, 0x250), rng.randrange(0x300, 0x370), rng.randrange(0x4E00, 0x9FFF)]
        samples.append("".join(chr(rng.choice(pool)) for _ in range(rng.randint(0, 30))))
    for text in samples:
        assert normalize_text(text) == _normalize_per_character(text), text

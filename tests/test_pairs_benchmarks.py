"""The pair studies' own rules: the cross-script evidence they try, the language centring, and the
tag-agreement figures (chance and kappa). Nothing is embedded here: vectors are made up."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.pairs_features import PairSet, centred_cosines, links, names, numbers
from benchmarks.pairs_tags import share, wilson
from model.articles.article import Article
from model.coverage.pair_files import GradedPair


def test_numbers_read_alike_whatever_the_separator():
    assert (
        numbers("1,500 Menschen am 5. Mai 2020")
        == numbers("1.500 people on 5 May 2020")
        == {"1500", "5", "2020"}
    )


def test_names_are_capitalised_latin_words_and_links_are_domains():
    assert {"malkin", "guentzel"} <= names("Evgeni Malkin scored; Guentzel was hurt")
    assert names("马尔金进了两个球") == set()
    assert links("more at https://www.nhl.com/news and bbc.co.uk") >= {"nhl.com"}


def _pair(lang_a: str, lang_b: str, k: int) -> GradedPair:
    a = Article(id=f"a{k}", title=f"a{k}", excerpt="", language=lang_a)
    b = Article(id=f"b{k}", title=f"b{k}", excerpt="", language=lang_b)
    return GradedPair(a, b, 2.0)


def test_centring_takes_each_languages_shared_direction_away():
    # Every German text shares one direction and every English text another: raw cosines of
    # unrelated pairs sit at a level set by the languages, which centring removes.
    rng = np.random.default_rng(0)
    de, en = rng.normal(size=16), rng.normal(size=16)

    def text(base: np.ndarray) -> np.ndarray:
        v = 3 * base + rng.normal(size=16)
        return v / np.linalg.norm(v)

    pairs = [_pair("de", "de", k) for k in range(100)] + [_pair("de", "en", k) for k in range(100, 200)]
    vectors = np.stack(
        [
            np.stack([text(de), text(de)]) if p.b.language == "de" else np.stack([text(de), text(en)])
            for p in pairs
        ]
    ).astype(np.float32)
    s = PairSet(
        "semeval_ml",
        pairs,
        np.zeros((len(pairs), 1)),
        np.zeros(len(pairs), dtype=bool),
        np.full(len(pairs), 4.0),
        np.array([p.a.language + "-" + p.b.language for p in pairs], dtype=object),
        vectors=vectors,
    )
    raw = np.einsum("ij,ij->i", vectors[:, 0], vectors[:, 1])
    centred_cosines([s])
    centred = s.extra["centred_cosine"]
    assert raw[:100].mean() > 0.8  # two German texts read alike before, whatever they say
    assert abs(centred[:100].mean()) < 0.1 and abs(centred[100:].mean()) < 0.1


def test_wilson_interval_holds_the_share_and_stays_inside_zero_and_one():
    low, high = wilson(9, 10)
    assert 0.0 <= low < 0.9 < high <= 1.0
    assert wilson(0, 0) == (0.0, 1.0)


def test_agreement_beyond_chance_is_zero_when_every_side_gets_one_label():
    agree = np.array([True, True, True, True])
    rows = np.arange(4)
    one_label = share(agree, rows, ["World"] * 4, ["World"] * 4)
    assert one_label["agree"] == 1.0 and one_label["chance"] == 1.0 and one_label["kappa"] == 0.0
    varied = share(
        agree, rows, ["World", "Sports", "Business", "World"], ["World", "Sports", "Business", "World"]
    )
    assert varied["kappa"] == pytest.approx(1.0)


def test_a_route_chosen_out_of_fold_is_scored_only_on_pairs_it_was_not_chosen_on():
    from benchmarks.pairs_centred import _out_of_fold, _routed

    rng = np.random.default_rng(0)
    y = rng.uniform(1, 4, 80)
    good, noise = -y + rng.normal(0, 0.1, 80), rng.normal(size=80)
    groups = {"de-en": np.arange(40), "en-zh": np.arange(40, 80)}
    by_route = {"map": np.r_[good[:40], noise[40:]], "cosine": noise, "centred": np.r_[noise[:40], good[40:]]}
    routed, chosen = _routed(by_route, groups, y, ("map", "cosine", "centred"))
    assert chosen == {"de-en": "map", "en-zh": "centred"}
    np.testing.assert_array_equal(routed, good)
    # Each half takes the other half's winner: the clear winner again, so the same scores.
    np.testing.assert_array_equal(_out_of_fold(by_route, groups, y, ("map", "cosine", "centred"), 0), good)

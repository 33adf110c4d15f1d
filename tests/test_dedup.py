"""Corpus dedup: URL, identical and near-identical text groups; Reuters identical bodies; JSONL."""

from __future__ import annotations

import collections
import json

import numpy as np
from helpers import corpus_path

from model.articles.article import Article
from model.articles.seeds import read_seeds
from model.coverage.dedup import dedup_corpus
from model.coverage.neardup import MinHasher, lsh_candidate_pairs, text_jaccard

WIRE = (
    "The central bank raised its benchmark interest rate by a quarter point on Thursday, citing "
    "persistent inflation in services and a tight labour market, and signalled more increases ahead."
)


def test_url_variants_exact_and_near_copies_are_grouped_with_their_evidence(tmp_path):
    articles = [
        Article(id="orig", title="Rates up", excerpt=WIRE, urls={"webUrl": "https://news.example/rates"}),
        Article(
            id="amp", title="x", excerpt="y", urls={"webUrl": "https://news.example/rates/amp?utm_source=a"}
        ),
        Article(id="copy", title="Rates up", excerpt=WIRE + " (Reporting by A. Writer)"),
        Article(id="retitled", title="Bank lifts rates again", excerpt=WIRE),
        Article(id="other", title="Team wins cup", excerpt="A late goal decided the final in extra time."),
    ]
    report = dedup_corpus(articles, stories=False)
    assert len(report.groups) == 1
    group = report.groups[0]
    assert set(group.article_ids) == {"orig", "amp", "copy", "retitled"}
    assert {"url", "excerpt", "near_text"} <= set(group.kinds)
    assert "other" not in report.duplicate_of
    report.to_jsonl(tmp_path / "dedup.jsonl")
    records = [json.loads(line) for line in (tmp_path / "dedup.jsonl").read_text().splitlines()]
    assert records[0]["type"] == "summary" and records[1]["type"] == "duplicate_group"


def test_minhash_estimate_tracks_exact_jaccard_and_lsh_finds_the_pair():
    hasher = MinHasher(num_perm=128)
    a, b = WIRE, WIRE.replace("Thursday", "Friday")
    estimate = hasher.estimate(hasher.signature(a), hasher.signature(b))
    assert abs(estimate - text_jaccard(a, b)) < 0.15
    signatures = MinHasher().signatures([a, b, "unrelated words about football and weather"])
    assert (0, 1) in lsh_candidate_pairs(signatures)


def test_stories_come_with_vectors():
    articles = [Article(id=f"a{i}", title=f"t{i}") for i in range(3)]
    vectors = np.eye(3, dtype=np.float32)
    report = dedup_corpus(articles, vectors)
    assert len(report.stories) == 3


def test_reuters_identical_bodies_are_all_found_as_duplicates():
    corpus = read_seeds([corpus_path("reuters")])
    articles = list(corpus.articles.values())
    # The data README counts 125 groups / 253 docs with an identical body. Bodies are not in the
    # seed files, but an identical body gives an identical excerpt (its lead), so the groups of
    # identical excerpts contain all of them (and a few more: equal leads, different tails).
    by_excerpt = collections.defaultdict(list)
    for article in articles:
        if article.excerpt:
            by_excerpt[article.excerpt].append(article.id)
    identical = [ids for ids in by_excerpt.values() if len(ids) > 1]
    # Pinned to the shared copy of Reuters-21578 (the README's figure comes from here).
    assert (len(identical), sum(map(len, identical))) == (194, 396)
    report = dedup_corpus(articles, stories=False)
    group_of = {i: g.representative for g in report.groups for i in g.article_ids}
    for ids in identical:
        assert len({group_of.get(i) for i in ids}) == 1, ids
        assert None not in {group_of.get(i) for i in ids}, ids

"""The evidence two articles give about covering the same thing, and its feature rows.

`pair_evidence` gathers the signals: MiniLM cosine, word and character 4-gram TF-IDF cosines
(hashed, with the IDF of the bundle's own articles: `HashedIdf`), word overlap, character-shingle
overlap, time gap, provider and canonical URL; `pair_feature_matrix` turns evidence into the rows
`model.coverage.pair_scorer.PairScorer` scores.

The word and character cosines use an IDF in which a word the corpus never saw gets the largest
IDF instead of being dropped, as a fitted vocabulary would do to exactly the names that mark a
story.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, HashingVectorizer
from sklearn.preprocessing import normalize

from model.articles.article import Article
from model.coverage import neardup
from model.results import PairEvidence

# Columns of `pair_feature_matrix`, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    "lexical",
    "near_duplicate",
    "url_match",
    "has_time_gap",
    "log_time_gap",
    "same_provider",
    "has_provider",
    "tfidf",
    "char_tfidf",
    "same_script",
    "language_profile",
    "same_language",
    "centred_cosine",
    "learnt_cosine",
)
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}

_WORD = re.compile(r"[^\W\d_][\w'’-]+|\d[\d.,]*", re.UNICODE)


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ characters that are not English stop words."""
    return {
        word
        for raw in _WORD.findall(text)
        if len(word := raw.lower().strip("'’-")) > 2 and word not in ENGLISH_STOP_WORDS
    }


def _dice(a: set[str], b: set[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


def dominant_script(text: str, letters: int = 400) -> str:
    """The writing system of most of the first ``letters`` letters ("LATIN", "CYRILLIC", "CJK", ...)."""
    counts: dict[str, int] = {}
    seen = 0
    for ch in text:
        if ch.isalpha():
            script = unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
            counts[script] = counts.get(script, 0) + 1
            seen += 1
            if seen >= letters:
                break
    return max(counts, key=counts.__getitem__) if counts else ""


# Raw character-trigram counts: their most frequent trigrams are a language's function words and
# endings ("the", "ing", "der", "ung"), so two texts of one language have a high profile cosine
# whatever they are about, and two languages a low one; it needs no language list or model.
_PROFILE = HashingVectorizer(
    n_features=2**18, alternate_sign=False, analyzer="char_wb", ngram_range=(3, 3), norm="l2"
)


# Character-trigram profile cosine from which two texts of one script read as one language when
# either article's language is unknown (a rough cut: on the SemEval texts de-en pairs average 0.17,
# de-de 0.48, but zh-zh 0.12).
SAME_LANGUAGE_PROFILE = 0.2


def near_duplicate_score(a: Article, b: Article) -> float:
    """The shared duplicate rule's score (`model.coverage.neardup.near_duplicate_score`) for two articles."""
    return neardup.near_duplicate_score(a.text, b.text, a.excerpt, b.excerpt)


# --- hashed TF-IDF with a corpus IDF -----------------------------------------------------------


class HashedIdf(BaseEstimator):
    """Word and character 4-gram TF-IDF rows without a vocabulary, with an IDF from a corpus.

    Terms are hashed into ``n_features`` buckets, so a word the corpus never saw still counts: it
    gets the largest IDF (``log(1 + N) + 1``), as a rare name should. Unfitted or fitted on no
    texts, every term weighs the same.

    Parameters
    ----------
    n_features : int, default=2**20
        Hash buckets per analyser. The fitted IDF tables are float32: 4 MiB each at 2**20.

    Attributes
    ----------
    word_idf_, char_idf_ : ndarray of shape (n_features,) or None
        Smoothed IDF ``log((1 + N) / (1 + df)) + 1`` per bucket; None when fitted on no texts.
    n_documents_ : int

    Examples
    --------
    >>> idf = HashedIdf(n_features=2**12).fit(["Rates rise again", "Rates fall"])
    >>> words, chars = idf.transform(["Rates rise", "Vestas wins order"])
    >>> float(round((words[0] @ words[1].T).toarray()[0, 0], 3))
    0.0
    """

    def __init__(self, *, n_features: int = 2**20) -> None:
        self.n_features = n_features

    def _hashers(self) -> tuple[HashingVectorizer, HashingVectorizer]:
        word = HashingVectorizer(
            n_features=self.n_features, alternate_sign=False, norm=None, stop_words="english"
        )
        char = HashingVectorizer(
            n_features=self.n_features,
            alternate_sign=False,
            norm=None,
            analyzer="char_wb",
            ngram_range=(4, 4),
        )
        return word, char

    def fit(self, texts: Iterable[str], y: Any = None) -> HashedIdf:
        """Learn the IDF tables from unlabelled texts (title + excerpt), e.g. the bundle's articles."""
        texts = [text for text in texts if text]
        self.n_documents_ = len(texts)
        self.word_idf_: npt.NDArray[np.float32] | None = None
        self.char_idf_: npt.NDArray[np.float32] | None = None
        if texts:
            for name, hasher in zip(("word_idf_", "char_idf_"), self._hashers(), strict=True):
                counts = hasher.transform(texts).tocsr()
                df = np.bincount(counts.indices, minlength=self.n_features)
                setattr(self, name, (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32))
        return self

    def transform(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """L2-normalised sublinear-tf TF-IDF rows: (word rows, character 4-gram rows)."""
        out = []
        idfs = (getattr(self, "word_idf_", None), getattr(self, "char_idf_", None))
        for hasher, idf in zip(self._hashers(), idfs, strict=True):
            counts = hasher.transform(list(texts)).tocsr().astype(np.float32)
            counts.data = 1.0 + np.log(counts.data)
            if idf is not None:  # index the table: multiplying by a dense row would densify
                counts.data *= idf[counts.indices]
            out.append(normalize(counts))
        return out[0], out[1]


def row_cosines(left: sp.csr_matrix, right: sp.csr_matrix) -> npt.NDArray[np.float64]:
    """Cosine of each row of ``left`` with the same row of ``right`` (both L2-normalised)."""
    return np.asarray(left.multiply(right).sum(axis=1), dtype=np.float64).ravel()


# --- evidence and feature rows -----------------------------------------------------------------


def pair_evidence(
    a: Article,
    b: Article,
    va: npt.NDArray[np.floating],
    vb: npt.NDArray[np.floating],
    idf: HashedIdf | None = None,
    *,
    languages: bool = False,
) -> PairEvidence:
    """Every signal the pair scorer looks at, for ``a`` and ``b`` with unit vectors ``va``, ``vb``.

    ``idf`` weighs the TF-IDF cosines (the scorer's own `HashedIdf`; None: equal weights);
    ``languages`` also measures ``same_script``, ``language_profile`` and ``same_language`` (left
    None otherwise).
    """
    return pair_evidences(a, [b], np.asarray(va)[None, :], np.asarray(vb)[None, :], idf, languages=languages)[
        0
    ]


def pair_evidences(
    query: Article,
    others: Sequence[Article],
    vq: npt.NDArray[np.floating],
    vothers: npt.NDArray[np.floating],
    idf: HashedIdf | None = None,
    *,
    languages: bool | Literal["same_language"] = False,
) -> list[PairEvidence]:
    """`pair_evidence` of ``query`` against each of ``others``, hashing the query's text once."""
    if not others:
        return []
    articles = [query, *others]
    vectors = np.vstack(
        [
            np.asarray(vq, dtype=np.float32).reshape(1, -1),
            np.asarray(vothers, dtype=np.float32).reshape(len(others), -1),
        ]
    )
    zeros = np.zeros(len(others), dtype=np.intp)
    return indexed_pair_evidence(
        articles, vectors, zeros, np.arange(1, len(articles)), idf, languages=languages
    )


def indexed_pair_evidence(
    articles: Sequence[Article],
    vectors: npt.NDArray[np.floating],
    i: npt.ArrayLike,
    j: npt.ArrayLike,
    idf: HashedIdf | None = None,
    *,
    languages: bool | Literal["same_language"] = False,
    rows: tuple[sp.csr_matrix, sp.csr_matrix] | None = None,
    content: Sequence[set[str]] | None = None,
    urls: Sequence[str | None] | None = None,
    shingled: Sequence[neardup.Shingled] | None = None,
    centred: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
    near_duplicate: Sequence[float] | None = None,
) -> list[PairEvidence]:
    """Evidence of the pairs ``(articles[i[k]], articles[j[k]])``: every text is hashed once.

    ``languages``: also the script and language-profile evidence, which costs about a third more
    time and which the default features do not use (see `model.coverage.pair_scorer`);
    ``"same_language"``: only ``same_language``, from the articles' own languages when every one
    has one (no profiles then), else as ``True``. ``rows``, ``content``, ``urls`` and ``shingled``:
    the articles' `HashedIdf.transform` rows, `content_words`, canonical URLs and
    `neardup.shingled`, when the caller kept them from an earlier batch (a backfill meets the same
    candidates again). ``centred``: each pair's centred and learnt cosines
    (`model.coverage.pair_centring.centred_pairs`; NaN: none, the raw cosine is read).
    ``near_duplicate``: each pair's duplicate score, where the caller scored them (a backfill's
    batch: `neardup.duplicate_scores_from`); else from ``shingled``.
    """
    own_languages = languages == "same_language" and all(getattr(a, "language", None) for a in articles)
    if own_languages:
        languages = False  # read from the articles below, no profiles
    i = np.asarray(i, dtype=np.intp)
    j = np.asarray(j, dtype=np.intp)
    vectors = np.asarray(vectors, dtype=np.float32)
    texts: list[str] = []  # a property that joins title and excerpt on every read: only if needed
    if rows is None or languages or content is None or (shingled is None and near_duplicate is None):
        texts = [a.text for a in articles]
    words, chars = rows if rows is not None else (idf or HashedIdf()).transform(texts)
    tfidf = row_cosines(words[i], words[j])
    char = row_cosines(chars[i], chars[j])
    cosines = np.einsum("ij,ij->i", vectors[i], vectors[j])
    profile: npt.NDArray[np.float64] | None = None
    scripts: list[str] = []
    if languages:
        profiles = _PROFILE.transform(texts).tocsr()
        profile = row_cosines(profiles[i], profiles[j])
        scripts = [dominant_script(t) for t in texts]
    if content is None:
        content = [content_words(t) for t in texts]
    if near_duplicate is None:
        if shingled is None:
            shingled = [neardup.shingled(t, a.excerpt) for t, a in zip(texts, articles, strict=True)]
        near_duplicate = [
            neardup.duplicate_score(shingled[p], shingled[q])
            for p, q in zip(i.tolist(), j.tolist(), strict=True)
        ]
    # Once per article, not per pair: a canonical URL is parsed on every read.
    if urls is None:
        urls = [a.canonical_url for a in articles]
    providers = [a.provider_key for a in articles]
    centred_values, learnt_values = (
        (centred[0].tolist(), centred[1].tolist()) if centred is not None else ([], [])
    )
    out = []
    for k, (p, q) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
        a, b = articles[p], articles[q]
        if a.published_at is not None and b.published_at is not None:
            gap: float | None = abs((a.published_at - b.published_at).total_seconds()) / 3600.0
        else:
            gap = None
        pa, pb = providers[p], providers[q]
        ua, ub = urls[p], urls[q]
        if own_languages:
            same: bool | None = a.language == b.language
        else:
            same = _same_language(a, b, scripts, profile, p, q, k) if scripts else None
        c, m = (centred_values[k], learnt_values[k]) if centred is not None else (math.nan, math.nan)
        out.append(
            PairEvidence(
                cosine=max(-1.0, min(1.0, float(cosines[k]))),
                lexical=_dice(content[p], content[q]),
                near_duplicate=near_duplicate[k],
                time_gap_hours=gap,
                same_provider=(pa == pb) if pa and pb else None,
                url_match=bool(ua and ub and ua == ub),
                tfidf=float(tfidf[k]),
                char_tfidf=float(char[k]),
                same_script=(bool(scripts[p]) and scripts[p] == scripts[q]) if scripts else None,
                language_profile=float(profile[k]) if profile is not None else None,
                same_language=same,
                centred_cosine=None if math.isnan(c) else float(c),
                learnt_cosine=None if math.isnan(c) or math.isnan(m) else float(m),
            )
        )
    return out


def _same_language(
    a: Article,
    b: Article,
    scripts: list[str],
    profile: npt.NDArray[np.float64] | None,
    p: int,
    q: int,
    k: int,
) -> bool:
    """The articles' own languages where both are known, else one script and alike profiles."""
    la, lb = getattr(a, "language", None), getattr(b, "language", None)
    if la and lb:
        return bool(la == lb)
    return (
        bool(scripts[p])
        and scripts[p] == scripts[q]
        and profile is not None
        and (profile[k] >= SAME_LANGUAGE_PROFILE)
    )


def pair_feature_matrix(evidences: Sequence[PairEvidence]) -> npt.NDArray[np.float64]:
    """One row per pair, columns `FEATURE_NAMES`; missing time/provider read as 0 with a flag column."""
    X = np.zeros((len(evidences), len(FEATURE_NAMES)), dtype=np.float64)
    for i, ev in enumerate(evidences):
        X[i, 0] = ev.cosine
        X[i, 1] = ev.lexical
        X[i, 2] = ev.near_duplicate
        X[i, 3] = float(ev.url_match)
        if ev.time_gap_hours is not None:
            X[i, 4] = 1.0
            X[i, 5] = math.log1p(ev.time_gap_hours)
        if ev.same_provider is not None:
            X[i, 6] = float(ev.same_provider)
            X[i, 7] = 1.0
        X[i, 8] = ev.tfidf if ev.tfidf is not None else 0.0
        X[i, 9] = ev.char_tfidf if ev.char_tfidf is not None else 0.0
        # Evidence made before these two existed reads as one script and one language.
        X[i, 10] = 1.0 if ev.same_script is None else float(ev.same_script)
        X[i, 11] = 1.0 if ev.language_profile is None else ev.language_profile
        X[i, 12] = 1.0 if ev.same_language is None else float(ev.same_language)
        # No language mean for either side: the raw cosine, so the column never reads 0 by default.
        X[i, 13] = ev.cosine if ev.centred_cosine is None else ev.centred_cosine
        X[i, 14] = ev.cosine if ev.learnt_cosine is None else ev.learnt_cosine
    return X

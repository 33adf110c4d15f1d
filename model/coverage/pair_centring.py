"""The centred cosine: the encoder cosine after each text's language mean vector is taken away.

An encoder's cosine has a level per language pair that human grades do not follow (e5: about 0.86
for two unrelated German texts, 0.75 for a German and an English one), so one scale fitted on
English grades reads other language pairs too high or too low. Taking each language's mean
direction away (and renormalising) removes most of that level; the means come from texts alone,
no grades, and 25-50 texts per language reach nearly all of the gain
(`benchmarks.pairs_features`, ``centring_by_texts_per_language``). A language with fewer texts, or
none, keeps the raw cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator

from model.results import PairEvidence

if TYPE_CHECKING:
    from model.coverage.pair_map import PairMap

# Texts a language needs before its mean is kept (25: e5 0.743 of 0.752 pooled on semeval_ml).
MIN_TEXTS = 25


class LanguageMeans(BaseEstimator):
    """Each language's mean unit vector, for the centred cosine.

    Parameters
    ----------
    min_texts : int, default=MIN_TEXTS
        Texts a language needs for its mean to be kept.

    Attributes
    ----------
    means_ : dict of str to ndarray of shape (dim,)
        float32 mean vector per language with at least ``min_texts`` texts.
    counts_ : dict of str to int
        Texts each kept mean was taken over.

    Examples
    --------
    >>> means = LanguageMeans(min_texts=2).fit(np.eye(3)[[0, 0, 1]], ["de", "de", "en"])
    >>> sorted(means.means_)
    ['de']
    """

    def __init__(self, *, min_texts: int = MIN_TEXTS) -> None:
        self.min_texts = min_texts

    def fit(self, vectors: npt.ArrayLike, languages: Sequence[str | None], y: Any = None) -> LanguageMeans:
        """Learn the means from unit ``vectors`` and each one's language (None: unknown, skipped)."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if len(vectors) != len(languages):
            raise ValueError(f"{len(vectors)} vectors but {len(languages)} languages")
        keys = np.array([lang or "" for lang in languages], dtype=object)
        self.means_: dict[str, npt.NDArray[np.float32]] = {}
        self.counts_: dict[str, int] = {}
        for lang in sorted({k for k in keys if k}):
            rows = keys == lang
            if int(rows.sum()) >= self.min_texts:
                self.means_[lang] = vectors[rows].mean(axis=0).astype(np.float32)
                self.counts_[lang] = int(rows.sum())
        return self

    def updated(self, other: LanguageMeans | None) -> LanguageMeans:
        """These means with ``other``'s for the languages these lack (own texts win)."""
        out = LanguageMeans(min_texts=self.min_texts)
        out.means_ = {**(getattr(other, "means_", None) or {}), **self.means_}
        out.counts_ = {**(getattr(other, "counts_", None) or {}), **self.counts_}
        return out

    def centred(self, vectors: npt.ArrayLike, languages: Sequence[str | None]) -> npt.NDArray[np.float64]:
        """Each unit vector with its language's mean taken away, renormalised; NaN rows where the
        language has no mean."""
        vectors = np.asarray(vectors, dtype=np.float64)
        means = getattr(self, "means_", None) or {}
        keys = np.array([lang or "" for lang in languages], dtype=object)
        centred = np.full(vectors.shape, np.nan)
        for lang in set(keys.tolist()).intersection(means):
            mean = means[lang]
            if mean.shape[0] != vectors.shape[1]:
                continue
            picked = keys == lang
            v = vectors[picked] - mean
            centred[picked] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return centred

    def centred_cosines(
        self,
        vectors: npt.ArrayLike,
        languages: Sequence[str | None],
        i: npt.ArrayLike,
        j: npt.ArrayLike,
        pair_map: PairMap | None = None,
    ) -> npt.NDArray[np.float64]:
        """The centred cosine of each pair ``(vectors[i[k]], vectors[j[k]])``; NaN where either
        side's language has no mean (the caller keeps the raw cosine there). With ``pair_map``: the
        cosine after that map of the centred vectors."""
        i, j = np.asarray(i, dtype=np.intp), np.asarray(j, dtype=np.intp)
        if not len(i):
            return np.zeros(0)
        # Only the rows the pairs use (a backfill passes its whole batch).
        rows = np.unique(np.concatenate([i, j]))
        centred = self.centred(np.asarray(vectors)[rows], [languages[r] for r in rows.tolist()])
        if pair_map is not None:
            known = ~np.isnan(centred).any(axis=1)
            centred[known] = pair_map.transform(centred[known])
        left, right = centred[np.searchsorted(rows, i)], centred[np.searchsorted(rows, j)]
        return np.clip(np.einsum("ij,ij->i", left, right), -1.0, 1.0)

    def save(self, path: Any) -> None:
        """Write the means as an ``.npz`` (one array per language)."""
        np.savez_compressed(path, **{lang: mean for lang, mean in self.means_.items()})


def built_in_means(encoder: str) -> LanguageMeans | None:
    """The means shipped for ``encoder`` (from the shared pair sets' texts, no grades), or None."""
    resource = resources.files("model.coverage") / "pair_means" / f"{encoder}.npz"
    if not resource.is_file():
        return None
    means = LanguageMeans()
    with resources.as_file(resource) as path, np.load(path) as table:
        means.means_ = {lang: table[lang].astype(np.float32) for lang in table.files}
    means.counts_ = {}
    return means


def centred_pairs(
    means: LanguageMeans | None,
    vectors: npt.ArrayLike,
    languages: Sequence[str | None],
    i: npt.ArrayLike,
    j: npt.ArrayLike,
    pair_map: PairMap | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The centred cosine of each pair ``(i[k], j[k])`` and, with ``pair_map``, its learnt cosine
    (`model.coverage.pair_map`), NaN where a side's language has no mean (or there is no map);
    None where ``means`` has no language at all or there are no pairs."""
    if means is None or not len(np.asarray(i)) or not (getattr(means, "means_", None) or {}):
        return None
    centred = means.centred_cosines(vectors, languages, i, j)
    learnt = (
        means.centred_cosines(vectors, languages, i, j, pair_map)
        if pair_map is not None
        else np.full(len(centred), np.nan)
    )
    return centred, learnt


def with_centred(
    evidences: list[PairEvidence],
    means: LanguageMeans | None,
    vectors: npt.ArrayLike,
    languages: Sequence[str | None],
    i: npt.ArrayLike,
    j: npt.ArrayLike,
    pair_map: PairMap | None = None,
) -> list[PairEvidence]:
    """``evidences`` of the pairs ``(i[k], j[k])`` with their centred cosine where ``means`` has both
    sides' languages (the others keep None: the raw cosine), and with ``pair_map`` their learnt
    cosine there too (`centred_pairs`)."""
    found = centred_pairs(means, vectors, languages, i, j, pair_map) if evidences else None
    if found is None:
        return evidences
    centred, learnt = found
    return [
        ev
        if np.isnan(c)
        else replace(ev, centred_cosine=float(c), learnt_cosine=None if np.isnan(m) else float(m))
        for ev, c, m in zip(evidences, centred.tolist(), learnt.tolist(), strict=True)
    ]

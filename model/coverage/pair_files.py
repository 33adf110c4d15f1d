"""Labelled pair files: the ``pairs.tsv`` that `training fit --pairs` reads and the export writes.

Two layouts, both tab-separated: graded (SemEval-2022 Task 8's ``overall``, 1 = same story ... 4 =
unrelated; editors' feedback is written this way) and 0/1 (storychains, tgpairs).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.articles.language import detect_language, normalise_language
from model.articles.seeds import read_seeds
from model.coverage.pair_centring import LanguageMeans, with_centred
from model.coverage.pair_evidence import HashedIdf, indexed_pair_evidence
from model.errors import DataFileError, InvalidArticleError, SeedFormatError
from model.files import atomic_file
from model.results import PairEvidence

# SemEval-2022 Task 8 grades pairs 1 (same story) to 4 (unrelated); a mean `overall` at or below
# this is a same-story pair (the task's own binarisation), at or below RELATED_MAX_OVERALL related.
SAME_STORY_MAX_OVERALL = 1.5
RELATED_MAX_OVERALL = 2.5


@dataclass(frozen=True, slots=True)
class GradedPair:
    """Two articles and a human judgement.

    ``overall`` is SemEval's grade (1 = same story … 4 = unrelated); files with a 0/1 ``label``
    (storychains, tgpairs, editors' feedback) set ``label`` and map it to ``overall`` 1 or 4.
    """

    a: Article
    b: Article
    overall: float
    label: int | None = None

    @property
    def same_story(self) -> bool:
        return self.label == 1 if self.label is not None else self.overall <= SAME_STORY_MAX_OVERALL


# The graded layout, in the order `write_pairs_tsv` writes it.
PAIRS_COLUMNS = ("id1", "id2", "overall", "title1", "title2", "excerpt1", "excerpt2")
_GRADED_COLUMNS = set(PAIRS_COLUMNS)
_LABEL_COLUMNS = {"file1", "file2", "label", "title1", "title2", "excerpt1", "excerpt2"}


def read_pairs_tsv(path: str | Path) -> list[GradedPair]:
    """Read a labelled pair file: tab-separated, one of two layouts.

    - graded (SemEval): ``id1 id2 overall title1 title2 excerpt1 excerpt2 [file] [lang1 lang2]``
      (each side's language from ``lang1``/``lang2`` where given, else detected);
    - binary (storychains, tgpairs, editors' feedback): ``file1 file2 label title1 title2
      excerpt1 excerpt2``, ``label`` 1 = same story. When ``file1``/``file2`` name seed files
      beside the TSV, the articles are read from them (dates, outlets, URLs); otherwise from the
      row's titles and excerpts.

    Raises `DataFileError` naming the file, line and column when the file cannot be read or a
    row is malformed.
    """
    path = Path(path)
    try:
        return _read_pairs(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFileError(f"{path}: cannot read a labelled pairs file ({error})") from None


def _seed_article(folder: Path, name: str, cache: dict[str, Article | None]) -> Article | None:
    if name not in cache:
        file = folder / name
        article = None
        if name and file.is_file():
            try:
                articles = list(read_seeds([file]).articles.values())
            except SeedFormatError:
                articles = []
            article = articles[0] if articles else None
        cache[name] = article
    return cache[name]


def _read_pairs(path: Path) -> list[GradedPair]:
    pairs = []
    seeds: dict[str, Article | None] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = set(reader.fieldnames or ())
        binary = columns >= _LABEL_COLUMNS
        if not binary and not columns >= _GRADED_COLUMNS:
            raise DataFileError(
                f"{path}: missing columns; expected tab-separated columns {sorted(_GRADED_COLUMNS)} "
                f"(graded) or {sorted(_LABEL_COLUMNS)} (0/1 labels), got {sorted(columns)}"
            )
        key, first, second = ("label", "file1", "file2") if binary else ("overall", "id1", "id2")
        for line, row in enumerate(reader, start=2):
            raw = (row.get(key) or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise DataFileError(f"{path}:{line}: {key}: expected a number, got {raw!r}") from None
            if binary and value not in (0.0, 1.0):
                raise DataFileError(f"{path}:{line}: label: expected 0 or 1, got {raw!r}")
            sides = []
            for side, name in (("1", first), ("2", second)):
                ref = (row.get(name) or "").strip()
                article = _seed_article(path.parent, ref, seeds) if binary else None
                if article is None:
                    title, excerpt = row.get(f"title{side}") or "", row.get(f"excerpt{side}") or ""
                    try:
                        language = normalise_language(row.get(f"lang{side}"), f"lang{side}")
                    except InvalidArticleError as error:
                        raise DataFileError(f"{path}:{line}: {error.field}: {error.reason}") from None
                    language = language or detect_language(f"{title}\n{excerpt}")
                    article = Article(id=f"pair:{ref}", title=title, excerpt=excerpt, language=language)
                sides.append(article)
            if binary:
                label = int(value)
                pairs.append(GradedPair(sides[0], sides[1], 1.0 if label else 4.0, label))
            else:
                pairs.append(GradedPair(sides[0], sides[1], value))
    return pairs


class GradedIds(Protocol):
    """Two article ids and their grade on the ``overall`` scale (e.g. `model.feedback.PairFeedback`)."""

    @property
    def a(self) -> str: ...

    @property
    def b(self) -> str: ...

    @property
    def overall(self) -> float: ...


def write_pairs_tsv(
    rows: Iterable[tuple[GradedIds, Mapping[str, Any], Mapping[str, Any]]], path: str | Path
) -> int:
    """Write graded pairs (grade, record a, record b) as ``training fit --pairs`` reads them.

    Returns the number of rows. Tabs and newlines inside titles are replaced by spaces, so each
    pair stays one TSV row.
    """

    def clean(value: Any) -> str:
        return " ".join(str(value or "").split())

    lines: list[list[str]] = [list(PAIRS_COLUMNS)]
    for graded, a, b in rows:
        lines.append(
            [
                graded.a,
                graded.b,
                f"{graded.overall:g}",
                clean(a.get("title")),
                clean(b.get("title")),
                clean(a.get("excerpt")),
                clean(b.get("excerpt")),
            ]
        )

    with atomic_file(path) as temp, temp.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(lines)
    return len(lines) - 1


def graded_pair_evidence(
    pairs: Sequence[GradedPair],
    vectors: npt.NDArray[np.floating],
    idf: HashedIdf | None = None,
    means: LanguageMeans | None = None,
) -> list[PairEvidence]:
    """Evidence for each pair, with ``vectors`` rows ``[a0, b0, a1, b1, ...]`` (see `pair_texts`);
    all of it, the language evidence included, since a scorer may be fitted on it, and the centred
    cosine where ``means`` has both sides' languages."""
    if len(vectors) != 2 * len(pairs):
        raise ValueError(f"expected {2 * len(pairs)} vectors (a and b of each pair), got {len(vectors)}")
    articles = [article for p in pairs for article in (p.a, p.b)]
    even = np.arange(0, 2 * len(pairs), 2)
    evidences = indexed_pair_evidence(articles, vectors, even, even + 1, idf, languages=True)
    return with_centred(evidences, means, vectors, [a.language for a in articles], even, even + 1)


def pair_texts(pairs: Sequence[GradedPair]) -> list[str]:
    """The texts to embed for `graded_pair_evidence`, in its row order."""
    return [text for p in pairs for text in (p.a.text, p.b.text)]

"""Reading seed files: YAML front matter (``.md``, ``.txt``, ``.yaml``), JSON lines (``.jsonl``) and
Parquet shards (``.parquet``: one seed per row, the columns a JSON line's fields).

A seed is one main article plus its ``related`` coverage. Each related item becomes an article of
its own, linked from the main one, so the corpus is a set of unique articles plus link pairs.
The same article seen in several files is merged into one record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from model.articles.article import Article, article_from_record
from model.errors import InvalidArticleError, SeedFormatError
from model.files import atomic_file

logger = logging.getLogger(__name__)

# The C loader is ~10x faster on large seed folders; same safe semantics.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

FRONT_MATTER_SUFFIXES = frozenset({".md", ".txt", ".yaml", ".yml", ".markdown"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PARQUET_SUFFIXES = frozenset({".parquet"})
SEED_SUFFIXES = FRONT_MATTER_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
_GLOB_CHARS = frozenset("*?[")
# Marks an editor-corrected record (`model.feedback.corrected_record`): its topics and quality are
# final and win over any other record of the same article, whatever order the files are read in.
CORRECTED_FIELD = "corrected_at"


@dataclass
class SeedCorpus:
    """Unique articles read from seeds, the related-coverage links between them, and any errors."""

    articles: dict[str, Article] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    main_ids: list[str] = field(default_factory=list)
    errors: list[SeedFormatError] = field(default_factory=list)
    files: int = 0

    def __len__(self) -> int:
        return len(self.articles)

    def add(self, article: Article, *, main: bool) -> str:
        known = self.articles.get(article.id)
        merged = known.merge(article) if known else article
        # An editor-corrected record (`model.feedback.CORRECTED_FIELD`) is final for topics and
        # quality: the latest correction wins over any seed, read before or after it.
        stamp = _corrected_at(article)
        held = self._corrected.get(article.id)
        if stamp is not None and (held is None or stamp >= held[0]):
            self._corrected[article.id] = (stamp, article)
            held = self._corrected[article.id]
        if held is not None:
            final = held[1]
            merged = replace(
                merged,
                topics=final.topics,
                quality=final.quality if final.quality is not None else merged.quality,
            )
        self.articles[article.id] = merged
        if main and article.id not in self._main_set:
            self._main_set.add(article.id)
            self.main_ids.append(article.id)
        return article.id

    def __post_init__(self) -> None:
        self._main_set: set[str] = set(self.main_ids)
        self._corrected: dict[str, tuple[str, Article]] = {}

    @property
    def main_articles(self) -> list[Article]:
        """The seeds' own articles (not the related items), in reading order."""
        return [self.articles[i] for i in self.main_ids]

    def related_of(self) -> dict[str, list[str]]:
        """Main article id -> ids of its related coverage."""
        related: dict[str, list[str]] = {}
        for main_id, other_id in self.links:
            related.setdefault(main_id, []).append(other_id)
        return related


def iter_seed_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Seed files under ``paths`` (files as given, folders recursively, sorted, READMEs skipped;
    a path that does not exist but holds ``*``, ``?`` or ``[`` is a glob, e.g. ``shards/*.parquet``)."""
    for raw in paths:
        path = Path(raw)
        if not path.exists() and _GLOB_CHARS & set(str(raw)):
            anchor = Path(path.anchor or ".")
            pattern = str(path.relative_to(anchor)) if path.anchor else str(path)
            matches = sorted(p for p in anchor.glob(pattern) if p.is_file())
            if not matches:
                raise SeedFormatError(path, "path", "the glob matches no file")
            yield from matches
            continue
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if (
                    child.is_file()
                    and child.suffix.lower() in SEED_SUFFIXES
                    and not child.name.lower().startswith("readme")
                    and not any(part.startswith(".") for part in child.relative_to(path).parts)
                ):
                    yield child
        elif path.is_file():
            yield path
        else:
            raise SeedFormatError(path, "path", "no such file or folder")


def split_front_matter(text: str, path: str | Path) -> str:
    """The YAML between the opening ``---`` line and the next ``---`` line.

    A ``.yaml`` file may also be plain YAML with no markers.
    """
    lines = text.lstrip("\ufeff").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        raise SeedFormatError(path, "front matter", "the file is empty")
    if lines[start].strip() != "---":
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            return text
        raise SeedFormatError(
            path, "front matter", "expected the file to start with a '---' line, then YAML fields"
        )
    for end in range(start + 1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            return "\n".join(lines[start + 1 : end])
    raise SeedFormatError(path, "front matter", "no closing '---' line after the YAML fields")


def parquet_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A Parquet row as a seed record: a null column is a field the seed does not have (a shard's
    columns are the union of its seeds' fields), exactly as a JSON line that leaves it out."""
    return {key: value for key, value in row.items() if value is not None}


def _parquet_records(path: Path) -> Iterator[tuple[int | None, Any]]:
    """Rows of one Parquet file, numbered from 1 like a JSON line's line number."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SeedFormatError(
            path, "parquet", "reading Parquet seeds needs pyarrow; install it with: pip install -e '.[ray]'"
        ) from None
    try:
        shard = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a damaged or foreign file
        raise SeedFormatError(path, "parquet", f"not a readable Parquet file ({error})") from None
    number = 0
    for batch in shard.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, parquet_record(row)


def records_in_file(path: Path) -> Iterator[tuple[int | None, Any]]:
    """One seed file's ``(line, record)`` pairs (line None for a front-matter file); a bad JSON line
    comes as its `SeedFormatError`, so `add_seed_records` can skip it and read on."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        yield from _parquet_records(path)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SeedFormatError(
            path, "encoding", f"expected UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    if path.suffix.lower() in JSONL_SUFFIXES:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                # Yielded, not raised: with --skip-invalid one bad line must not cost the rest.
                yield (
                    number,
                    SeedFormatError(
                        path, "json", f"invalid JSON: {error.msg} at column {error.colno}", line=number
                    ),
                )
        return
    front = split_front_matter(text, path)
    try:
        record = yaml.load(front, Loader=_YamlLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None  # +1 for 1-based, +1 for the '---' line
        problem = getattr(error, "problem", None) or str(error)
        raise SeedFormatError(path, "yaml", f"invalid YAML: {problem}", line=line) from None
    yield None, record


def _corrected_at(article: Article) -> str | None:
    value = article.extra.get(CORRECTED_FIELD)
    return str(value) if value else None


def split_seed_record(record: Any, source: str | None = None) -> tuple[Article, list[Article]]:
    """A seed record as its main article (``related_ids`` set) and its related items as articles.

    The one rule for ``related``, shared by seed files and the ingest API. Errors in an item
    name it (``related[1].webUrl``); an item with the main article's own id is skipped.
    """
    if not isinstance(record, Mapping):
        raise InvalidArticleError("article", f"expected a mapping of fields, got {type(record).__name__}")
    main = article_from_record(record, source=source)
    related: dict[str, Article] = {}
    for position, item in enumerate(record.get("related") or []):
        try:
            other = article_from_record(item, source=source)
        except InvalidArticleError as error:
            raise InvalidArticleError(f"related[{position}].{error.field}", error.reason) from None
        if other.id == main.id:
            continue
        related[other.id] = related[other.id].merge(other) if other.id in related else other
    return replace(main, related_ids=tuple(related)), list(related.values())


def _add_seed_record(corpus: SeedCorpus, record: Any, source: str) -> None:
    main, related = split_seed_record(record, source)
    for other in related:
        corpus.add(other, main=False)
    corpus.add(main, main=True)
    corpus.links.extend((main.id, other.id) for other in related)


def seed_text(record: Mapping[str, Any]) -> str:
    """One seed file's text: the record as YAML front matter between ``---`` lines (read back by
    `read_seeds` into the same article)."""
    fields = {key: value for key, value in record.items() if value is not None}
    body = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{body}---\n"


def write_seed(record: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``record`` as a seed file at ``path`` (atomically) and return the path."""
    path = Path(path)
    with atomic_file(path) as temp:
        temp.write_text(seed_text(record), encoding="utf-8")
    return path


def read_seeds(
    paths: Iterable[str | Path],
    *,
    skip_invalid: bool = False,
    progress: bool = False,
) -> SeedCorpus:
    """Read every seed under ``paths`` into one `SeedCorpus`.

    Parameters
    ----------
    paths : files, folders (read recursively) or globs; ``.parquet`` files are read row by row.
    skip_invalid : when True, a bad file (or row) is logged and kept in ``corpus.errors`` instead of
        stopping the read with a `SeedFormatError`.
    progress : show a progress bar over files.
    """
    files = list(iter_seed_files(paths))
    corpus = SeedCorpus()
    if progress:
        from tqdm.auto import tqdm

        iterator: Iterable[Path] = tqdm(files, desc="reading seeds", unit="file")
    else:
        iterator = files
    for path in iterator:
        add_seed_records(corpus, path, records_in_file(path), skip_invalid=skip_invalid)
    return finish_reading(corpus)


def add_seed_records(
    corpus: SeedCorpus,
    path: Path,
    records: Iterable[tuple[int | None, Any]],
    *,
    skip_invalid: bool = False,
) -> None:
    """Add one file's ``(line, record)`` pairs to ``corpus`` under the seed rules: a bad record
    raises ``file:line: field: reason`` or, with ``skip_invalid``, joins ``corpus.errors``.

    The one loop every reader goes through, whoever read the rows (this module, or Ray Data for
    ``--engine ray``)."""
    corpus.files += 1
    try:
        for line, record in records:
            try:
                if isinstance(record, SeedFormatError):
                    raise record
                try:
                    _add_seed_record(corpus, record, str(path))
                except InvalidArticleError as error:
                    raise SeedFormatError(path, error.field, error.reason, line=line) from None
            except SeedFormatError as error:
                if not skip_invalid:
                    raise
                logger.warning("skipped %s", error)
                corpus.errors.append(error)
    except SeedFormatError as error:  # the file as a whole (encoding, front matter, YAML)
        if not skip_invalid:
            raise
        logger.warning("skipped %s", error)
        corpus.errors.append(error)


def finish_reading(corpus: SeedCorpus) -> SeedCorpus:
    """Drop repeated links and log what was read; the last step of every reader."""
    corpus.links = list(dict.fromkeys(corpus.links))
    logger.info(
        "read %d articles (%d seeds, %d related links) from %d files, %d skipped",
        len(corpus.articles),
        len(corpus.main_ids),
        len(corpus.links),
        corpus.files,
        len(corpus.errors),
    )
    return corpus

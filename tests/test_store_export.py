"""The editors' answers read back through the store package, as training reads them: read-only,
nothing migrated, an older store read as nothing corrected, errors one line naming the source."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from helpers import AI, FOOTBALL, SPACE

from model.articles.article import article_from_record
from model.errors import DataFileError
from model.feedback import Correction, PairFeedback
from model.store import StoredArticle, StoreError, open_read_only
from model.store.export import export_lines, write_feedback
from model.store.sqlite import _CREATE_V1, SqliteArticleStore
from training.corrections import load_corrections
from training.export import export_feedback


def stored(record: dict, seed: int) -> StoredArticle:
    article = article_from_record(record)
    vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    topics = [{"label": "Sports", "probability": 0.9}]
    return StoredArticle(article.id, article.to_record(), vector, f"s{seed}", {"topics": topics})


def fill(store) -> list[StoredArticle]:
    """Three articles, one corrected, one graded pair (naming one article the store lacks, too)."""
    rows = [stored(record, i) for i, record in enumerate((AI, SPACE, FOOTBALL))]
    store.put_many(rows)
    store.add_correction(Correction(rows[0].id, topics=("AI",), quality=70.0, editor="ed"))
    store.add_pair_feedback(PairFeedback(rows[1].id, rows[2].id, "related", editor="ed"))
    store.add_pair_feedback(PairFeedback(rows[1].id, "0000000000000000", "related", editor="ed"))
    return rows


def test_the_three_exports_are_one_and_read_only_changes_nothing(tmp_path):
    path = tmp_path / "data" / "articles.sqlite3"
    store = SqliteArticleStore(path)
    rows = fill(store)
    lines = list(export_lines(store))
    store.close()
    before = path.read_bytes()

    summary = export_feedback(tmp_path / "data", tmp_path / "seeds")  # python -m training export
    assert (summary.articles, summary.pairs, summary.pairs_skipped) == (1, 1, 1)
    assert (tmp_path / "seeds" / f"{rows[0].id}.md").is_file()
    data = load_corrections(str(path), tmp_path / "scratch")  # fit --corrections articles.sqlite3
    assert data.corrected_ids == {rows[0].id} and data.pair_count == 1
    reader = open_read_only(path)
    try:
        assert list(export_lines(reader)) == lines  # GET /v1/corrections/export
        jsonl = write_feedback(reader, tmp_path / "retrain", one_file=True)  # the retrain's inputs
        assert (tmp_path / "retrain" / "corrections.jsonl").read_text(encoding="utf-8") == "".join(lines)
        assert (jsonl.articles, jsonl.pairs) == (1, 1)
        with pytest.raises(StoreError):
            reader.add_correction(Correction(rows[1].id, topics=("Space",)))
    finally:
        reader.close()
    assert path.read_bytes() == before


def test_a_store_from_before_the_editors_workspace_reads_as_nothing_corrected_and_stays_as_it_was(tmp_path):
    path = tmp_path / "articles.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_CREATE_V1)
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "INSERT INTO meta VALUES ('schema_version', '1');")  # fmt: skip
    db.close()
    before = path.read_bytes()
    summary = export_feedback(tmp_path, tmp_path / "out")
    assert (summary.articles, summary.pairs) == (0, 0)
    assert path.read_bytes() == before  # not migrated to the workspace's schema


def test_no_store_is_a_one_line_error_naming_the_folder(tmp_path):
    with pytest.raises(
        DataFileError, match="no article store here; pass the service's NEWSDESK_DATA_DIR"
    ) as info:
        export_feedback(tmp_path / "none", tmp_path / "out")
    assert str(tmp_path / "none") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataFileError, match="no such corrections source"):
        load_corrections(str(tmp_path / "nowhere"), tmp_path / "scratch")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "articles.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataFileError) as info:
        export_feedback(tmp_path / "junk", tmp_path / "out")
    assert "articles.sqlite3" in str(info.value) and "\n" not in str(info.value)

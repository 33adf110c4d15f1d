"""``python -m training export``: editors' corrections and graded pairs back into training data.

Opens the service's store read-only through `model.store` (training never imports `service`,
and writes no SQL of its own) and writes, through `model.store.export` (the same functions the
service's ``GET /v1/corrections/export`` and its retrain use):

- one seed file per corrected article (``<id>.md``, YAML front matter), corrections applied and
  stamped ``corrected_at``, so reading seeds lets these topics win over the original seed's;
- ``pairs.tsv``: the editors' graded pairs in the format ``fit --pairs`` reads.
"""

from __future__ import annotations

import re
from pathlib import Path

from model.errors import DataFileError
from model.store import STORE_FILE, ArticleStore, StoreError, is_database_url, open_read_only
from model.store.export import ExportSummary, write_feedback

__all__ = ["ExportSummary", "describe_source", "export_feedback", "open_feedback_store", "read_feedback"]


def describe_source(src: str | Path) -> str:
    """The source for logs, messages and manifests, without a password."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", str(src))


def open_feedback_store(src: str | Path) -> ArticleStore:
    """The service's store at ``src`` (its data folder, its ``articles.sqlite3`` or a
    ``postgresql://`` URL), read-only; a failure is a one-line `DataFileError` naming ``src``."""
    if is_database_url(src):
        try:
            return open_read_only(src)
        except StoreError as error:
            raise DataFileError(f"{describe_source(src)}: {error}") from None
    path = Path(src)
    path = path if path.suffix == ".sqlite3" else path / STORE_FILE
    if not path.is_file():
        raise DataFileError(f"{path}: no article store here; pass the service's NEWSDESK_DATA_DIR")
    try:
        return open_read_only(path)
    except StoreError as error:
        raise DataFileError(str(error)) from None


def read_feedback(src: str | Path, out: str | Path, *, one_file: bool = False) -> ExportSummary:
    """`model.store.export.write_feedback` from the store at ``src`` (see `open_feedback_store`)."""
    store = open_feedback_store(src)
    try:
        return write_feedback(store, out, one_file=one_file)
    except StoreError as error:  # the SQLite messages name the file; a URL's do not
        raise DataFileError(
            f"{describe_source(src)}: {error}" if is_database_url(src) else str(error)
        ) from None
    finally:
        store.close()


def export_feedback(data_dir: str | Path, out: str | Path) -> ExportSummary:
    """Write corrected seeds into ``out`` and the graded pairs to ``out/pairs.tsv``."""
    return read_feedback(data_dir, out)

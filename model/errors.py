"""One exception hierarchy for the whole library, so callers catch `NewsDeskError` once."""

from __future__ import annotations

from pathlib import Path


class NewsDeskError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidArticleError(NewsDeskError, ValueError):
    """An article record has a field of the wrong type or value.

    The message names the field, what was expected and what was found, e.g.
    ``excerpt: expected a string, got 42``.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class FieldTooLongError(InvalidArticleError):
    """A text field is over its documented length limit (the service answers 413)."""


class SeedFormatError(InvalidArticleError):
    """A seed file cannot be read: it names the file (and line), the field and the problem."""

    def __init__(self, path: str | Path, field: str, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(field, reason)
        self.args = (f"{where}: {field}: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


class DataFileError(NewsDeskError, ValueError):
    """A data file the library reads (a graded pairs TSV, a saved index) is missing or malformed.

    The message names the file (and line), what was expected and what was found.
    """


class BundleError(NewsDeskError):
    """A model bundle is missing, incomplete, corrupt or built for another embedding model."""


class EmbeddingModelError(NewsDeskError):
    """The embedding model cannot be loaded (usually: its package is not installed)."""


class ExportDriftError(NewsDeskError):
    """The encoder a bundle would serve with answers too differently from the one it was measured with."""


class ArticleNotFoundError(NewsDeskError, KeyError):
    """No article with this id is known."""

    def __init__(self, article_id: str) -> None:
        self.article_id = article_id
        super().__init__(article_id)

    def __str__(self) -> str:
        return f"no article with id {self.article_id!r}"


class NotFittedError(NewsDeskError):
    """A part of the model was used before it was trained (e.g. no score regressor for heat)."""

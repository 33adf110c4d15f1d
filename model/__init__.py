"""news-desk model library: articles, seeds, embeddings, heads, similarity, stories, bundles.

>>> from model import NewsModel
>>> model = NewsModel.load("bundles")            # doctest: +SKIP
>>> model.classify([{"title": "Fed raises rates"}])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from model.articles.article import Article, Image, Provider, article_from_record
from model.articles.seeds import SeedCorpus, read_seeds
from model.errors import (
    ArticleNotFoundError,
    BundleError,
    EmbeddingModelError,
    InvalidArticleError,
    NewsDeskError,
    SeedFormatError,
)

if TYPE_CHECKING:
    from model.news_model import NewsModel

__all__ = [
    "Article",
    "ArticleNotFoundError",
    "BundleError",
    "EmbeddingModelError",
    "Image",
    "InvalidArticleError",
    "NewsDeskError",
    "NewsModel",
    "Provider",
    "SeedCorpus",
    "SeedFormatError",
    "article_from_record",
    "read_seeds",
]


def __getattr__(name: str) -> Any:
    # NewsModel pulls in scikit-learn and the heads; load it only when asked for.
    if name == "NewsModel":
        from model.news_model import NewsModel

        return NewsModel
    raise AttributeError(f"module 'model' has no attribute {name!r}")

"""Request bodies to `model` articles: one rule set (model.articles.article), errors naming the field."""

from __future__ import annotations

from model.articles.article import Article, article_from_record
from model.errors import InvalidArticleError
from service.config import Settings
from service.errors import PayloadTooLargeError
from service.schemas import ArticleBatch, ArticleIn


def parse_article(item: ArticleIn, where: str | None = None) -> Article:
    """An `Article` from a request item; ``where`` prefixes the field in errors (``articles[3].webUrl``)."""
    try:
        return article_from_record(item.to_record())
    except InvalidArticleError as error:
        if where is None:
            raise
        raise InvalidArticleError(f"{where}.{error.field}", error.reason) from None


def parse_articles(items: list[ArticleIn], *, batch: bool) -> list[Article]:
    return [parse_article(item, f"articles[{i}]" if batch else None) for i, item in enumerate(items)]


def unpack_batch(body: ArticleIn | ArticleBatch, settings: Settings) -> tuple[list[ArticleIn], bool]:
    """The request's articles and whether it was a batch; a batch over the limit is refused."""
    if isinstance(body, ArticleBatch):
        if len(body.articles) > settings.max_batch:
            raise PayloadTooLargeError(
                f"articles: at most {settings.max_batch} articles per request, got {len(body.articles)}; "
                "split the batch"
            )
        return body.articles, True
    return [body], False

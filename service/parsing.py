"""Request bodies to `model` articles: one rule set (model.articles.article), errors naming the field."""

from __future__ import annotations

from model.articles.article import Article
from model.articles.seeds import split_seed_record
from model.errors import InvalidArticleError
from service.config import Settings
from service.errors import PayloadTooLargeError
from service.schemas import ArticleBatch, ArticleIn


def parse_article(item: ArticleIn, where: str | None = None) -> Article:
    """An `Article` from a request item; ``where`` prefixes the field in errors (``articles[3].webUrl``)."""
    return parse_with_related(item, where)[0]


def parse_with_related(item: ArticleIn, where: str | None = None) -> tuple[Article, list[Article]]:
    """The item's article (``related_ids`` set) and its ``related`` items as articles, by the seed rule."""
    try:
        return split_seed_record(item.to_record())
    except InvalidArticleError as error:
        if where is None:
            raise
        raise InvalidArticleError(f"{where}.{error.field}", error.reason) from None


def parse_articles(items: list[ArticleIn], *, batch: bool) -> list[Article]:
    return [parse_article(item, f"articles[{i}]" if batch else None) for i, item in enumerate(items)]


def parse_for_ingest(items: list[ArticleIn], *, batch: bool) -> tuple[list[Article], list[Article]]:
    """The requested articles, and the related coverage they carry (ingested beside them, each
    an article of its own linked from its main one), as reading a seed file does."""
    main, related = [], []
    for i, item in enumerate(items):
        article, others = parse_with_related(item, f"articles[{i}]" if batch else None)
        main.append(article)
        related.extend(others)
    return main, related


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

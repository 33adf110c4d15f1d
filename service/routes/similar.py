"""POST /v1/similar (related coverage of an article) and POST /v1/compare (one pair)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from model.articles.article import Article, Provider
from model.articles.language import normalise_language
from model.errors import ArticleNotFoundError
from model.results import SearchFilters, SimilarHit
from service.deps import ModelDep, ReaderDep, SearchDep, SettingsDep
from service.errors import BadRequestError
from service.parsing import parse_article
from service.schemas import CompareOut, CompareRequest, ErrorOut, SimilarHitOut, SimilarOut, SimilarRequest

router = APIRouter(prefix="/v1", tags=["similar"])

_ERRORS = {
    404: {"model": ErrorOut, "description": "No article with this id."},
    422: {"model": ErrorOut, "description": "A field is missing, of the wrong type or out of range."},
    503: {"model": ErrorOut, "description": "No model bundle is loaded."},
}


def _provider_keys(providers: list[str] | None) -> frozenset[str] | None:
    # The same normalisation the index keys articles by (lower case, no www.).
    if not providers:
        return None
    return frozenset(key for p in providers if (key := Provider(domain=p.strip() or None).key))


@router.post("/similar", responses=_ERRORS, summary="Known articles covering the same thing")
async def similar(
    request: SimilarRequest, model: ModelDep, search: SearchDep, settings: SettingsDep, _: ReaderDep
) -> SimilarOut:
    """Hits are graded `duplicate`, `same_story` or `related` (unrelated ones are dropped),
    best first, each with its story id. The query article itself never appears."""
    if request.k > settings.max_k:
        raise BadRequestError(f"k: at most {settings.max_k}, got {request.k}")
    filters = SearchFilters(
        since=request.since,
        until=request.until,
        providers=_provider_keys(request.providers),
        language=normalise_language(request.language),
    )
    query: Article | str
    if request.id is not None:
        query = query_id = request.id
    else:
        assert request.article is not None  # the schema asks for exactly one of them
        query = parse_article(request.article, "article")
        query_id = query.id

    def run() -> list[tuple[SimilarHit, Article]]:
        if isinstance(query, str) and search.known(query) is None:
            raise ArticleNotFoundError(query)  # 404 before searching
        hits = model.similar(
            query, request.k, filters, exclude_same_provider=request.exclude_same_provider, search=search
        )
        out = []
        for hit in hits:
            known = search.known(hit.article_id)
            if known is not None:  # removed meanwhile (a takedown): leave it out
                out.append((hit, known.article))
        return out

    found = await asyncio.to_thread(run)
    return SimilarOut(
        query_id=query_id,
        model_version=model.version,
        hits=[SimilarHitOut.from_hit(hit, article) for hit, article in found],
    )


@router.post("/compare", responses=_ERRORS, summary="How closely two articles cover the same thing")
async def compare(request: CompareRequest, model: ModelDep, _: ReaderDep) -> CompareOut:
    """A score in [0, 1], a verdict (duplicate, same_story, related, unrelated) and the evidence."""
    a, b = parse_article(request.a, "a"), parse_article(request.b, "b")
    comparison = await asyncio.to_thread(model.compare, a, b)
    return CompareOut.of(comparison, model.version)

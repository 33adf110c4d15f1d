"""POST /v1/classify: topics and scores for one article or a batch; nothing is stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from service.deps import ModelDep, ReaderDep, SettingsDep, StateDep
from service.inference import classify
from service.parsing import parse_articles, unpack_batch
from service.schemas import (
    ARTICLES_EXAMPLES,
    ArticleBatch,
    ClassificationOut,
    ClassifyBatchOut,
    ErrorOut,
    OneOrManyArticles,
)

router = APIRouter(prefix="/v1", tags=["classify"])


@router.post(
    "/classify",
    response_model=ClassificationOut | ClassifyBatchOut,
    responses={
        413: {"model": ErrorOut, "description": "Batch or body too large."},
        422: {"model": ErrorOut, "description": "A field is missing or of the wrong type."},
        503: {"model": ErrorOut, "description": "No model bundle is loaded."},
    },
    summary="Topics with probabilities, quality and heat with intervals",
)
async def classify_articles(
    _: ReaderDep,
    body: Annotated[OneOrManyArticles, Body(openapi_examples=ARTICLES_EXAMPLES)],
    state: StateDep,
    model: ModelDep,
    settings: SettingsDep,
    all_scores: Annotated[bool, Query(description="Also return every label's probability.")] = False,
) -> ClassificationOut | ClassifyBatchOut:
    """One article in, one result out; ``{"articles": [...]}`` in, ``{"results": [...]}`` out.

    Concurrent requests share encoder calls (micro-batching), so many small requests cost
    little more than one large one.
    """
    items, batch = unpack_batch(body, settings)
    articles = parse_articles(items, batch=batch)
    wants_all = all_scores or (isinstance(body, ArticleBatch) and body.all_scores)
    results, _ = await classify(state, model, articles, all_scores=wants_all)
    out = [ClassificationOut.of(result, model.version) for result in results]
    return ClassifyBatchOut(model_version=model.version, results=out) if batch else out[0]

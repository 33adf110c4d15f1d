"""Classification through the shared micro-batcher: concurrent requests share encoder calls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.news_model import NewsModel
from model.results import Classification
from service.state import ServiceState


async def classify(
    state: ServiceState, model: NewsModel, articles: Sequence[Article], *, all_scores: bool = False
) -> tuple[list[Classification], npt.NDArray[np.float32]]:
    """Classifications and vectors of ``articles``, micro-batched with concurrent requests.

    One worker-thread call encodes the whole micro-batch and runs the heads on it, so the
    heads' per-call overhead is paid once per batch and never on the event loop.
    """

    def run(batch: list[Article]) -> list[tuple[Classification, npt.NDArray[np.float32]]]:
        vectors = model.embedder.encode([article.text for article in batch])
        results = model.classify(batch, all_scores=all_scores, embeddings=vectors)
        return list(zip(results, vectors, strict=True))

    pairs = await state.batcher.submit(("classify", id(model), all_scores), articles, run)
    return [result for result, _ in pairs], np.stack([vector for _, vector in pairs])

"""A fingerprint of the seed set: retraining on identical seeds gives the same hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from model.articles.seeds import SeedCorpus


def seed_fingerprint(corpus: SeedCorpus) -> dict[str, Any]:
    digest = hashlib.sha256()
    for article_id in sorted(corpus.articles):
        article = corpus.articles[article_id]
        row = [article_id, article.text, sorted(article.topics), article.quality, article.heat]
        digest.update(json.dumps(row, default=str).encode())
    digest.update(json.dumps(sorted(corpus.links)).encode())
    return {
        "files": corpus.files,
        "articles": len(corpus.articles),
        "seeds": len(corpus.main_ids),
        "links": len(corpus.links),
        "labelled": sum(1 for a in corpus.articles.values() if a.topics),
        "with_quality": sum(1 for a in corpus.articles.values() if a.quality is not None),
        "with_heat": sum(1 for a in corpus.articles.values() if a.heat is not None),
        "sha256": digest.hexdigest(),
    }

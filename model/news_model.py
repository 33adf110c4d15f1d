"""`NewsModel`: the one object training writes and the service loads.

It joins the embedder with the trained heads (topics, scores, pair scorer), the index of known
articles and the story clusterer, and offers the high-level calls: classify, compare, similar,
add. Everything here takes seed-shaped dicts or `Article` records.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model import bundle
from model.articles.article import Article, article_from_record
from model.coverage.article_index import ArticleIndex, StoredRecord
from model.coverage.batch_links import BatchLinker
from model.coverage.pair_scorer import PairScorer
from model.coverage.restore import Restored, RowSource, StoredRows
from model.coverage.search import ArticleSearch, KnownArticle
from model.coverage.stories import StoryClusterer
from model.coverage.story_links import story_note
from model.coverage.story_rule import STORY_WINDOW_DAYS, StoryLink, candidates, link_story
from model.encoders.base import Encoder
from model.encoders.registry import encoder_name, vectors_id
from model.errors import ArticleNotFoundError, NotFittedError
from model.feedback import topic_uncertainty
from model.results import Classification, Comparison, SearchFilters, SimilarHit
from model.tagging.scores import ScoreHead
from model.tagging.topic_tagger import TopicTagger, small_data_warnings

logger = logging.getLogger(__name__)

ArticleLike = Article | Mapping[str, Any]

# The parts of a bundle folder (see `model.bundle` for the manifest and the checks).
_TOPICS = "topics.joblib"
_PAIRS = "pairs.joblib"
_STORIES = "stories.joblib"
_INDEX = "index"


def as_article(item: ArticleLike) -> Article:
    """Accept either a parsed `Article` or a mapping in the seed's field names."""
    return item if isinstance(item, Article) else article_from_record(item)


@dataclass(frozen=True, slots=True)
class Ingested:
    """What `NewsModel.add` did with one article."""

    article_id: str
    story_id: str
    duplicate_of: str | None
    is_new: bool


@dataclass(frozen=True, slots=True)
class Heads:
    """The topic tagger and score heads with the thresholds: `NewsModel.classify` on given vectors.

    Small and picklable without the encoder or the index, so an engine's batch workers (Ray actors,
    possibly on other machines) classify with the very call the model makes here.
    """

    topics: TopicTagger | None
    scores: Mapping[str, ScoreHead]
    thresholds: Mapping[str, float]

    @classmethod
    def load(cls, folder: str | Path) -> Heads:
        """The heads of a bundle version folder that `NewsModel.load` has verified (a worker loading
        them again skips hashing every file, the index's included)."""
        folder = Path(folder)
        manifest = bundle.read_manifest(folder)
        topics = bundle.load_part(folder, _TOPICS) if (folder / _TOPICS).is_file() else None
        scores = {
            name: bundle.load_part(folder, f"score_{name}.joblib") for name in manifest.get("scores", [])
        }
        return cls(
            topics, scores, dict(getattr(topics, "thresholds_", None) or manifest.get("thresholds") or {})
        )

    def classify(
        self, articles: Sequence[Article], vectors: npt.NDArray[np.float32], *, all_scores: bool = False
    ) -> list[Classification]:
        """Topics (above each label's threshold) and score predictions for each article."""
        if not articles:
            return []
        topic_rows: list[tuple[list[Any], list[Any] | None]]
        if self.topics is not None:
            topic_rows = self.topics.predict(articles, vectors, all_scores=all_scores)
        else:
            topic_rows = [([], [] if all_scores else None)] * len(articles)
        score_rows = {name: head.predict(articles, vectors) for name, head in self.scores.items()}
        return [
            Classification(
                article_id=article.id,
                topics=topic_rows[i][0],
                all_topics=topic_rows[i][1],
                scores={name: rows[i] for name, rows in score_rows.items()},
                uncertainty=topic_uncertainty(topic_rows[i][1] or [], self.thresholds),
            )
            for i, article in enumerate(articles)
        ]


class NewsModel:
    """Topic tagging, score prediction, pair comparison and related search over one bundle.

    Build it with `training` (``python -m training fit``) and load it with `NewsModel.load`.
    The similarity index and the story clusterer grow as articles are added; `add` is
    thread-safe.
    """

    def __init__(
        self,
        *,
        embedder: Encoder,
        topics: TopicTagger | None,
        scores: Mapping[str, ScoreHead],
        pair_scorer: PairScorer,
        index: ArticleIndex,
        stories: StoryClusterer,
        manifest: Mapping[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        self.embedder = embedder
        self.topics = topics
        self.scores = dict(scores)
        self.pair_scorer = pair_scorer
        self.index = index
        self.stories = stories
        self.manifest = dict(manifest or {})
        self.path = path
        self._lock = threading.RLock()
        self._stored: StoredRows | None = None  # set by `restore_from`: the rows a store added

    # --- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, embedder: Encoder | None = None, encoder: str = "auto") -> NewsModel:
        """Load and verify a bundle: a version folder with ``manifest.json``, or a folder of
        versions (the newest is taken). Without ``embedder`` one is built as the bundle says for
        ``encoder``, the runtime: "auto" (MiniLM: the bundle's int8 ONNX encoder when it ships
        one; e5: its int8 graph), "torch", "onnx-int8" or, for e5, "native" (`bundle_embedder`)."""
        folder = bundle.resolve_bundle(path)
        manifest = bundle.verify_bundle(folder)
        embedder = embedder or bundle.bundle_embedder(folder, encoder)
        bundle.check_embedder(folder, manifest, embedder)
        topics = bundle.load_part(folder, _TOPICS) if (folder / _TOPICS).is_file() else None
        scores = {
            name: bundle.load_part(folder, f"score_{name}.joblib") for name in manifest.get("scores", [])
        }
        index = ArticleIndex.load(folder / _INDEX)
        logger.info(
            "loaded bundle %s (%d labels, %d indexed articles)",
            manifest["version"],
            len(manifest.get("labels", [])),
            len(index),
        )
        return cls(
            embedder=embedder,
            topics=topics,
            scores=scores,
            pair_scorer=bundle.load_part(folder, _PAIRS),
            index=index,
            stories=bundle.load_part(folder, _STORIES),
            manifest=manifest,
            path=folder,
        )

    def save(
        self,
        root: str | Path,
        *,
        seed_fingerprint: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        encoder_dir: str | Path | None = None,
        eval_split: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write this model as a new version folder under ``root`` and return the folder.

        The model itself is not changed: load the folder to serve what was written.
        """

        def write_parts(folder: Path) -> None:
            if self.topics is not None:
                bundle.save_part(self.topics, folder / _TOPICS)
            for name, head in self.scores.items():
                bundle.save_part(head, folder / f"score_{name}.joblib")
            bundle.save_part(self.pair_scorer, folder / _PAIRS)
            bundle.save_part(self.stories, folder / _STORIES)
            self.index.save(folder / _INDEX)
            # A fine-tuned encoder travels with the heads fitted on its vectors.
            if hasattr(self.embedder, "write_files"):
                self.embedder.write_files(folder)

        topics = self.topics
        fields = {
            "embedding": {
                "name": encoder_name(self.embedder),
                "model": self.embedder.model_name,
                "model_id": self.embedder.model_id,
                "vectors_id": vectors_id(self.embedder),
                "dim": self.embedder.dim,
                "normalized": True,
                **({"fine_tune": tuned} if (tuned := getattr(self.embedder, "fine_tune", None)) else {}),
            },
            "labels": list(topics.labels_) if topics is not None else [],
            "thresholds": dict(topics.thresholds_) if topics is not None else {},
            "rare_labels": list(getattr(topics, "rare_labels_", []) or []) if topics is not None else [],
            "examples_per_label": dict(topics.report_.get("support", {})) if topics is not None else {},
            "warnings": small_data_warnings(topics),
            "scores": sorted(self.scores),
            "metrics": dict(metrics or {}),
            "training": dict(training or {}),
            # The fixed held-out split (`model.evaluation.split`), so a later challenger is measured
            # on the same articles; None when evaluated on a separate set or not at all.
            "eval_split": dict(eval_split) if eval_split else None,
        }
        return bundle.write_bundle(
            root, write_parts, fields, seed_fingerprint=seed_fingerprint, encoder_dir=encoder_dir
        )

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unsaved"))

    @property
    def warnings(self) -> list[str]:
        """What the bundle says about itself, e.g. that it was trained on too little data."""
        return [str(w) for w in self.manifest.get("warnings", [])]

    @property
    def labels(self) -> list[str]:
        return list(self.topics.labels_) if self.topics is not None else []

    @property
    def thresholds(self) -> dict[str, float]:
        """Each label's decision threshold (a label applies when its probability reaches it)."""
        return dict(getattr(self.topics, "thresholds_", None) or self.manifest.get("thresholds") or {})

    # --- embedding -----------------------------------------------------------------------

    def embed(self, articles: Sequence[Article]) -> npt.NDArray[np.float32]:
        return self.embedder.encode([article.text for article in articles])

    # --- topics and scores ---------------------------------------------------------------

    def classify(
        self,
        articles: Sequence[ArticleLike],
        *,
        all_scores: bool = False,
        embeddings: npt.NDArray[np.float32] | None = None,
    ) -> list[Classification]:
        """Topics (above each label's threshold) and score predictions for each article."""
        parsed = [as_article(item) for item in articles]
        if not parsed:
            return []
        vectors = self.embed(parsed) if embeddings is None else embeddings
        return self.heads.classify(parsed, vectors, all_scores=all_scores)

    @property
    def heads(self) -> Heads:
        """The parts `classify` runs once the vectors are known (what a batch worker needs)."""
        return Heads(self.topics, self.scores, self.thresholds)

    # --- pairs, search, stories ----------------------------------------------------------

    def compare(self, a: ArticleLike, b: ArticleLike) -> Comparison:
        """Score how closely two articles cover the same thing, with a graded verdict."""
        first, second = as_article(a), as_article(b)
        vectors = self.embed([first, second])
        return self.pair_scorer.compare(first, second, vectors[0], vectors[1])

    def similar(
        self,
        article: ArticleLike | str,
        k: int = 10,
        filters: SearchFilters | None = None,
        *,
        exclude_same_provider: bool = False,
        candidates: int | None = None,
        search: ArticleSearch | None = None,
    ) -> list[SimilarHit]:
        """The ``k`` known articles closest to ``article`` (an article, or the id of a known one).

        ``search``: where the known articles live (default: this model's own index; a store
        backend that searches in its database passes itself). Candidates come from the search by
        cosine and are re-ranked by the pair scorer; hits below the `related` level are dropped
        and the query article itself never appears.
        """
        search = search if search is not None else self.index
        if isinstance(article, str):
            known = search.known(article)
            if known is None:
                raise ArticleNotFoundError(article)
            query, vector = known.article, known.vector
        else:
            query = as_article(article)
            known = search.known(query.id)
            vector = known.vector if known is not None else self.embed([query])[0]
        filters = filters or SearchFilters()
        filters = replace(
            filters,
            exclude_provider=query.provider_key if exclude_same_provider else filters.exclude_provider,
            exclude_ids=filters.exclude_ids | {query.id},
        )
        # Over-fetch by cosine, then let the pair scorer (which sees time, provider, text) rerank.
        found = []
        for other_id, cosine in search.nearest(vector, candidates or max(3 * k, 30), filters):
            other = search.known(other_id)
            if other is not None:  # None: removed between the two calls
                found.append((other_id, float(cosine), other))
        comparisons = self.pair_scorer.compare_many(
            query, [other.article for _, _, other in found], vector, np.array([o.vector for _, _, o in found])
        )
        query_story = known.story_id if known is not None else None
        ranked = []
        for (other_id, cosine, other), comparison in zip(found, comparisons, strict=True):
            if comparison.verdict == "unrelated":
                continue
            hit = SimilarHit(
                article_id=other_id,
                score=comparison.score,
                verdict=comparison.verdict,
                cosine=cosine,
                story_id=other.story_id,
                evidence=comparison.evidence,
                story_note=story_note(comparison.verdict, query_story, other.story_id, known is not None),
            )
            ranked.append((comparison.same_story_probability, hit))
        # Ranked by the same-story probability (the rerank the scorer is fitted for: related recall@10
        # 1.00 against 0.97 by the graded score on the SemEval seeds); each hit shows the graded score.
        ranked.sort(key=lambda pair: (-pair[0], -pair[1].cosine))
        return [hit for _, hit in ranked[:k]]

    def add(
        self,
        articles: Sequence[ArticleLike],
        embeddings: npt.NDArray[np.float32] | None = None,
        *,
        story_ids: Sequence[str | None] | None = None,
        linker: BatchLinker | None = None,
    ) -> list[Ingested]:
        """Index articles and assign each to a story (new or existing).

        ``story_ids`` restores known assignments (a service rebuilding its index from its
        store) instead of clustering again, so story ids never change across restarts.
        ``linker``: decide the batch at once (`model.coverage.batch_links`: the same decisions as
        one article at a time, in the same order; a backfill's batches).
        """
        parsed = [as_article(item) for item in articles]
        vectors = self.embed(parsed) if embeddings is None else embeddings
        if linker is not None and story_ids is None:
            return self._add_linked(parsed, np.asarray(vectors, dtype=np.float32), linker)
        results = []
        with self._lock:
            for i, article in enumerate(parsed):
                if article.id in self.index:
                    results.append(
                        Ingested(article.id, self.stories.story_of(article.id) or article.id, None, False)
                    )
                    continue
                link = self.link(article, vectors[i])
                known_story = story_ids[i] if story_ids is not None else None
                story_id = self.stories.restore(article, vectors[i], known_story or link.story_id)
                self.index.add([article], vectors[i : i + 1], [story_id])
                results.append(Ingested(article.id, story_id, link.duplicate_of, True))
        return results

    def _add_linked(
        self, parsed: list[Article], vectors: npt.NDArray[np.float32], linker: BatchLinker
    ) -> list[Ingested]:
        """`add` with the batch decided by ``linker``; ids already indexed (or repeated) are not new."""
        results: list[Ingested | None] = [None] * len(parsed)
        with self._lock:
            fresh: list[int] = []
            seen: set[str] = set()
            for i, article in enumerate(parsed):
                if article.id not in self.index and article.id not in seen:
                    fresh.append(i)
                    seen.add(article.id)
            stories: list[str] = []

            def assign(k: int, link: StoryLink) -> str:
                i = fresh[k]
                story_id = self.stories.restore(parsed[i], vectors[i], link.story_id)
                results[i] = Ingested(parsed[i].id, story_id, link.duplicate_of, True)
                stories.append(story_id)
                return story_id

            linker.link(self.index, [parsed[i] for i in fresh], vectors[fresh], assign)
            # One index write for the batch: the linker saw the earlier articles of it without it.
            self.index.add([parsed[i] for i in fresh], vectors[fresh], stories)
            return [
                done or Ingested(a.id, self.stories.story_of(a.id) or a.id, None, False)
                for a, done in zip(parsed, results, strict=True)
            ]

    def restore(
        self,
        articles: Sequence[Article | StoredRecord],
        vectors: npt.NDArray[np.float32],
        story_ids: Sequence[str],
    ) -> int:
        """Re-add articles whose story is already known (a service restoring its stored articles).

        Unlike `add` nothing is scored: no duplicate search, no clustering, one bulk index write
        (stories come with the rows);
        the approximate-search graph is left to `ArticleIndex.build_ann` (search is exact until it
        exists). Returns how many were new to the index.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            fresh = [i for i, article in enumerate(articles) if article.id not in self.index]
            # The story of each lives in the index (and the store); the clusterer's centroids are
            # not rebuilt for them (a third of a GB at 1M articles, and nothing reads them).
            self.index.add(
                [articles[i] for i in fresh], vectors[fresh], [story_ids[i] for i in fresh], sync_ann=False
            )
        return len(fresh)

    # --- the stored rows: restored from a store, snapshotted to a folder (`model.coverage.restore`)

    def restore_from(
        self,
        source: RowSource,
        snapshot_dir: Path | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> Restored:
        """Re-add every article ``source`` stores (vectors, stories; nothing re-embedded), from the
        index snapshot in ``snapshot_dir`` and the rows after it when that snapshot continues this
        bundle, else from the store alone. ``progress`` is told the running count."""
        self._stored = StoredRows(self, source, self.version)
        return self._stored.restore(snapshot_dir, progress)

    def restore_new(self) -> int:
        """Re-add what the store gained since `restore_from` (a reload catching up); 0 without one."""
        return self._stored.restore_new() if self._stored is not None else 0

    def build_graph(self, stop: threading.Event | None = None) -> bool:
        """Build the approximate-search graph (past the index's threshold); search is exact until
        then. False when ``stop`` was set first."""
        return self.index.build_ann(stop)

    @property
    def snapshot_outdated(self) -> bool:
        """Whether `write_snapshot` would save more than the snapshot this model was restored from."""
        return self._stored is not None and self._stored.snapshot_outdated

    def write_snapshot(self, folder: str | Path) -> int:
        """Snapshot the stored rows to ``folder`` (callers keep ingests out meanwhile); returns the
        rows written, 0 when this model was not restored from a store."""
        return self._stored.write_snapshot(Path(folder)) if self._stored is not None else 0

    def remove(self, article_id: str) -> bool:
        """Forget an added article (a takedown): out of the index and its story. False if unknown."""
        with self._lock:
            if article_id not in self.index:
                return False
            # The vector only: the record of a lazily restored row may already be gone from the store.
            self.stories.remove(article_id, self.index.vector(article_id))
            self.index.remove(article_id)
            return True

    def link(
        self, article: Article, vector: npt.NDArray[np.float32], search: ArticleSearch | None = None
    ) -> StoryLink:
        """The story ``article`` would join and the copy it duplicates, among the articles of
        ``search`` (default: this model's index), by `model.coverage.story_rule.link_story`."""
        search = search if search is not None else self.index
        recent, nearest = candidates(search, article, vector, self.window_days)
        return link_story(self.pair_scorer, article, vector, recent, nearest)

    @property
    def window_days(self) -> float:
        """The story window this bundle was trained with (days either side of an article)."""
        return float(getattr(self.stories, "window_days", STORY_WINDOW_DAYS))

    def get(self, article_id: str) -> Article:
        if article_id not in self.index:
            raise ArticleNotFoundError(article_id)
        return self.index.get(article_id)

    def known(self, article_id: str) -> KnownArticle | None:
        """An article this model indexes (the bundle's own corpus and what was added), or None."""
        return self.index.known(article_id)

    def story_members(self, story_id: str) -> list[str]:
        """Ids of the indexed articles in a story."""
        return [article_id for article_id in self.stories.members(story_id) if article_id in self.index]

    def score_head(self, name: str) -> ScoreHead:
        if name not in self.scores:
            raise NotFittedError(f"this bundle has no {name} model (the seeds had too few {name} values)")
        return self.scores[name]

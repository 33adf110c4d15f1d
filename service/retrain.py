"""Retraining as a job: seeds + corrections -> challenger -> gate -> promote (or reject) -> re-tag.

`Retrainer` runs one job at a time. A retrain job

1. writes the store's corrections (a ``.jsonl`` seed file) and editors' graded pairs (``pairs.tsv``)
   into a scratch folder, through the `ArticleStore` protocol, so it works on every backend;
2. runs ``python -m training fit ... --candidate`` in a separate process (serving never stalls on
   it), which writes the challenger beside the live bundle and records it in the ledger as trained;
3. runs ``python -m training compare`` against the live bundle: exit 0 = promote, 1 = reject;
4. promotes (ledger, then the no-drop `ServiceState.reload`, which also sets the live version a
   shared store's replicas follow) or records the rejection with the gate's reasons;
5. after a promotion, re-classifies the stored articles with the new model in the background,
   from their stored vectors; corrections are never touched (`ArticleStore.set_classifications`).

`POST /v1/admin/promote` runs steps 4-5 for a version chosen by hand (a rollback included).
What a job is lives in `service.retrain_jobs`; the bundle versions and the ledger in
`model.bundle.BundleRegistry` and `model.ledger`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.articles.article import article_from_record
from model.bundle import VERSION_PATTERN, BundleRegistry, read_manifest
from model.encoders.registry import encoder_name, manifest_encoder, vectors_id
from model.errors import NewsDeskError
from model.ledger import ledger_events, record_event
from model.store import ArticleStore
from model.store.base import stored_vectors_id
from model.store.export import CORRECTIONS_FILE, write_feedback
from service.errors import BundleVersionNotFoundError, JobConflictError, JobNotFoundError
from service.retrain_jobs import Job, JobKind, now
from service.state import ServiceState

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # where `python -m training` is importable from
RECLASSIFY_CHUNK = 256


class Retrainer:
    """The retrain and promotion jobs of one service process (one at a time)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.jobs: dict[str, Job] = {}
        self.current: Job | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._process: asyncio.subprocess.Process | None = None
        self._last_auto_seeds: str | None = None

    @property
    def registry(self) -> BundleRegistry:
        """The bundle versions beside the configured one (where a challenger is written)."""
        return BundleRegistry.of(self.state.settings.bundle)

    @property
    def root(self) -> Path:
        return self.registry.root

    @property
    def last(self) -> Job | None:
        return max(self.jobs.values(), key=lambda job: job.started_at, default=None)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id!r}: it is unknown or from before a restart")
        return job

    def _begin(self, kind: JobKind, trigger: str) -> Job:
        if self.current is not None and self.current.finished_at is None:
            raise JobConflictError(
                f"job {self.current.id} ({self.current.kind}, {self.current.phase}) is still running; "
                f"one job at a time: follow it at /v1/admin/jobs/{self.current.id}"
            )
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, trigger=trigger)
        model = self.state.model
        job.champion = model.version if model is not None else None
        self.jobs[job.id] = job
        while len(self.jobs) > 50:  # keep the newest 50
            del self.jobs[min(self.jobs.values(), key=lambda j: j.started_at).id]
        self.current = job
        return job

    def _spawn(self, job: Job, work: Any) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as error:
                job.state = "failed"
                job.error = (
                    str(error) if isinstance(error, NewsDeskError) else f"{type(error).__name__}: {error}"
                )
                job.say(f"error: {job.error}")
                logger.exception("job %s failed", job.id)
            finally:
                if job.finished_at is None:
                    job.finished_at = now()

        task = asyncio.get_running_loop().create_task(run(), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- starting jobs -------------------------------------------------------------------------

    def start_retrain(self, trigger: str = "POST /v1/admin/retrain") -> Job:
        self.state.require_store()
        job = self._begin("retrain", trigger)
        self._spawn(job, self._retrain(job))
        return job

    def start_promote(self, version: str, trigger: str = "POST /v1/admin/promote") -> Job:
        folder = self.registry.find(version) if re.fullmatch(VERSION_PATTERN, version) else None
        if folder is None:
            raise BundleVersionNotFoundError(
                f"no bundle version {version!r} under the bundle folder; GET /v1/admin/bundles lists them"
            )
        job = self._begin("promote", trigger)
        job.challenger = version
        live = self.state.model.version if self.state.model is not None else None
        rollback = live is not None and version < live
        decision = "rolled_back" if rollback else "promoted"
        reason = f"{'rolled back' if rollback else 'promoted'} by hand ({trigger})"
        self._spawn(job, self._promote(job, folder, decision, reason))
        return job

    # --- the steps -----------------------------------------------------------------------------

    async def _retrain(self, job: Job) -> None:
        settings = self.state.settings
        store = self.state.require_store()
        scratch = Path(settings.data_dir) / "retrain" / job.id
        job.phase = "exporting corrections"
        exported = await asyncio.to_thread(write_feedback, store, scratch, one_file=True)
        corrections, pairs = exported.articles, exported.pairs
        job.say(f"corrections: {corrections} corrected articles, {pairs} graded pairs")
        seeds = [str(Path(p).resolve()) for p in settings.seeds]
        extra = ["--corrections", str(scratch / CORRECTIONS_FILE)] if corrections else []
        pair_args = ["--pairs", exported.pairs_file] if pairs else []
        cache = ["--cache-dir", str(settings.retrain_cache_dir)] if settings.retrain_cache_dir else []
        try:
            job.phase = "fitting the challenger"
            # The challenger keeps the live bundle's encoder: one on another encoder would need the
            # whole store re-embedded, which a retrain never decides on its own.
            live = self.state.model
            encoder = ["--encoder", encoder_name(live.embedder)] if live is not None else []
            fit_args = ["fit", "--seeds", *seeds, *extra, *pair_args, "--out", str(self.root.resolve()),
                        "--candidate", "--holdout", f"{settings.retrain_holdout:g}", "--no-progress", *cache,
                        *encoder, *([] if settings.retrain_onnx else ["--no-onnx"])]  # fmt: skip
            code, out = await self._training(job, fit_args)
            if code != 0:
                raise RuntimeError(f"training fit failed (exit {code}); see log_tail")
            challenger = Path(json.loads(out)["bundle"])
            job.challenger = challenger.name
            champion = self.state.model
            if champion is None or champion.path is None:
                await self._promote(job, challenger, "promoted", "no live model to compare with")
                return
            job.champion = champion.version
            job.phase = "comparing with the live bundle"
            report = scratch / "comparison.json"
            gate = ["--gate", str(settings.retrain_gate)] if settings.retrain_gate else []
            compare_args = ["compare", "--champion", str(Path(champion.path).resolve()),
                            "--challenger", str(challenger), "--seeds", *seeds, *extra, *pair_args, *gate,
                            "--json-out", str(report), "--no-progress", *cache]  # fmt: skip
            code, _ = await self._training(job, compare_args)
            if code not in (0, 1):
                raise RuntimeError(f"training compare failed (exit {code}); see log_tail")
            job.comparison = json.loads(report.read_text(encoding="utf-8"))
            job.reasons = list(job.comparison.get("reasons", []))
            other_encoder = await asyncio.to_thread(_vectors_of, challenger) != vectors_id(champion.embedder)
            held = code == 0 and other_encoder
            if held:
                # Passing the gate is not enough: every stored article would be re-embedded. A
                # person decides that (POST /v1/admin/promote says first how long it will take).
                job.reasons.append("the challenger is on another encoder: promote it by hand")
                code = 1
            if code == 0:
                reason = "passed the gate: " + "; ".join(job.reasons)
                await self._promote(job, challenger, "promoted", reason, details=job.comparison)
            else:
                job.verdict = "reject"
                job.phase = "rejected"
                await asyncio.to_thread(
                    record_event,
                    self.root,
                    challenger.name,
                    "rejected",
                    ("passed the gate, not promoted automatically: " if held else "failed the gate: ")
                    + "; ".join(job.reasons),
                    details=_summary(job.comparison),
                )
                job.state = "rejected"
                job.finished_at = now()
                logger.info("challenger %s rejected: %s", challenger.name, "; ".join(job.reasons))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _training(self, job: Job, args: list[str]) -> tuple[int, str]:
        """Run ``python -m training ARGS`` as a child process; stderr lines go to the job's log."""
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        job.say("$ python -m training " + " ".join(args))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "training", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        self._process = process

        async def pump() -> None:
            assert process.stderr is not None
            async for raw in process.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if line and "Loading weights" not in line:
                    job.say(line)

        try:
            output, _ = await asyncio.wait_for(
                asyncio.gather(process.stdout.read(), pump()),  # type: ignore[union-attr]
                timeout=self.state.settings.retrain_timeout_s,
            )
            code = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"python -m training {args[0]} ran past retrain_timeout_s") from None
        finally:
            self._process = None
        return code, output.decode("utf-8", "replace")

    async def _promote(
        self,
        job: Job,
        folder: Path,
        decision: Literal["promoted", "rolled_back"],
        reason: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        job.phase = "promoting"
        job.verdict = "promote"
        # Ledger first: a restart between the two steps serves the promoted version.
        await asyncio.to_thread(
            record_event, self.root, folder.name, decision, reason, details=_summary(details)
        )
        result = await self.state.reload(folder=folder, force=True)
        if result.pending is not None:
            # Another encoder: every stored article is re-embedded first, the live bundle serving.
            job.reembedding = result.pending
            left = result.pending["to_embed"]
            estimate = result.pending.get("estimate_s")
            job.say(
                f"{folder.name} encodes with {result.pending['vectors_id']}: re-embedding {left} stored "
                f"articles before it serves"
                + (f", about {float(str(estimate)):.0f}s" if estimate is not None else "")
            )
            job.phase = "re-embedding stored articles"
            if not await self._await_switch(job, folder):
                return
            job.say(f"serving {folder.name} after the re-embedding")
        else:
            job.say(
                f"serving {result.model_version} (was {result.previous_version}) after {result.seconds:.1f}s"
            )
        job.state = "promoted"
        logger.info("promoted %s: %s", folder.name, reason)
        job.phase = "re-classifying stored articles"
        await self._reclassify(job)
        job.phase = "done"
        job.finished_at = now()

    async def _await_switch(self, job: Job, folder: Path, poll_s: float = 0.5) -> bool:
        """Wait until the pending bundle in ``folder`` serves; False (the job failed) when its
        re-embedding failed or another reload replaced it."""
        while True:
            pending = self.state.pending
            model = self.state.model
            if model is not None and model.path is not None and Path(model.path) == folder:
                job.reembedding = None
                return True
            if pending is None or pending.folder != folder or pending.phase == "failed":
                job.state = "failed"
                job.error = (
                    f"re-embedding failed: {pending.error}"
                    if pending is not None and pending.folder == folder
                    else "another bundle was loaded before the re-embedding finished"
                )
                job.phase = "done"
                job.finished_at = now()
                return False
            job.reembedding = pending.as_dict()
            await asyncio.sleep(poll_s)

    async def _reclassify(self, job: Job) -> None:
        """Re-tag every stored article with the live model from its stored vector, in chunks."""
        store = self.state.store
        model = self.state.model
        if store is None or model is None:
            job.reclassify_done = True
            return
        job.to_reclassify = await asyncio.to_thread(store.count)
        # The stored vectors feed the new heads only when the new bundle's encoder made them;
        # otherwise each article is embedded afresh from its stored record (never by width).
        reuse = await asyncio.to_thread(stored_vectors_id, store) == vectors_id(model.embedder)
        if not reuse:
            job.say("the stored vectors are another encoder's: re-embedding each article to re-classify it")
        seq = 0
        while True:
            chunk = await asyncio.to_thread(_next_chunk, store, seq)
            if not chunk:
                break
            seq = chunk[-1].seq
            if self.state.model is not model:
                job.say("another model was promoted meanwhile: re-classification stopped")
                break
            todo = [s for s in chunk if s.model_version != model.version]
            if todo:
                updates = await asyncio.to_thread(_classify_stored, model, todo, reuse)
                await asyncio.to_thread(store.set_classifications, updates)
            job.reclassified += len(chunk)
        job.reclassify_done = True
        job.say(f"re-classified {job.reclassified} stored articles with {model.version}")

    # --- automatic retraining -----------------------------------------------------------------

    async def auto_loop(self) -> None:
        """Check the triggers every ``retrain_check_s`` seconds and start a retrain when one fires."""
        settings = self.state.settings
        while True:
            await asyncio.sleep(settings.retrain_check_s)
            try:
                trigger = await self.auto_trigger()
                if trigger is not None and (self.current is None or self.current.finished_at is not None):
                    logger.info("automatic retrain: %s", trigger)
                    self.start_retrain(trigger=f"automatic: {trigger}")
            except NewsDeskError as error:
                logger.warning("automatic retrain check failed: %s", error)

    async def auto_trigger(self) -> str | None:
        """Why an automatic retrain is due now (None: not due)."""
        settings = self.state.settings
        model, store = self.state.model, self.state.store
        if model is None or store is None:
            return None
        last = _last_attempt(self.root, model.manifest)
        interval = settings.retrain_interval_s
        if interval is not None and (now() - last).total_seconds() >= interval:
            return f"{settings.retrain_interval} since the last retrain"
        if settings.retrain_min_corrections > 0:
            corrections = await asyncio.to_thread(store.corrections)
            new = sum(1 for c in corrections if c.created_at > last)
            if new >= settings.retrain_min_corrections:
                return f"{new} corrections since the last retrain"
        if settings.retrain_on_seed_change and model.path is not None:
            seeds = [str(Path(p).resolve()) for p in settings.seeds]
            probe = Job(id="check", kind="retrain", trigger="check")
            code, out = await self._training(
                probe, ["check-seeds", "--seeds", *seeds, "--bundle", str(model.path)]
            )
            if code == 1 and out.strip() != self._last_auto_seeds:
                self._last_auto_seeds = out.strip()  # the same change is tried once, not every check
                return out.strip()
        return None

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        for task in list(self._tasks):
            task.cancel()


def _summary(comparison: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the ledger keeps of a comparison: the verdict and headline differences."""
    if not comparison:
        return None
    return {
        "verdict": comparison.get("verdict"),
        "compared_with": comparison.get("champion"),
        "held_out": (comparison.get("held_out") or {}).get("articles"),
        "differences": {
            name: {k: row.get(k) for k in ("champion", "challenger", "diff", "low", "high")}
            for name, row in (comparison.get("metrics") or {}).items()
            if isinstance(row, dict) and "diff" in row
        },
    }


def _last_attempt(root: Path, manifest: dict[str, Any]) -> datetime:
    moments = []
    with contextlib.suppress(ValueError, TypeError):
        moments.append(datetime.fromisoformat(str(manifest.get("created"))))
    with contextlib.suppress(NewsDeskError, ValueError, TypeError, KeyError, IndexError):
        events = ledger_events(root)
        if events:
            moments.append(events[-1].moment)
    aware = [m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments]
    return max(aware, default=datetime.fromtimestamp(0, UTC))


def _vectors_of(folder: Path) -> str:
    """Which vectors the bundle in ``folder`` makes."""
    return manifest_encoder(read_manifest(folder))[1]


def _next_chunk(store: ArticleStore, seq: int) -> list[Any]:
    rows = []
    for stored in store.iter_since(seq, RECLASSIFY_CHUNK):
        rows.append(stored)
        if len(rows) >= RECLASSIFY_CHUNK:
            break
    return rows


def _classify_stored(
    model: Any, stored: list[Any], reuse_vectors: bool
) -> list[tuple[str, dict[str, Any], str]]:
    articles = [article_from_record(s.record) for s in stored]
    vectors = (
        np.stack([s.embedding for s in stored]).astype(np.float32) if reuse_vectors else model.embed(articles)
    )
    results = model.classify(articles, all_scores=True, embeddings=vectors)
    return [(s.id, result.to_record(), model.version) for s, result in zip(stored, results, strict=True)]

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
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.articles.article import article_from_record
from model.bundle import MANIFEST, read_manifest
from model.errors import NewsDeskError
from model.feedback import write_pairs_tsv
from model.ledger import read_ledger, record_event
from service.errors import BundleVersionNotFoundError, JobConflictError, JobNotFoundError
from service.state import ServiceState
from service.store import ArticleStore
from service.workspace import export_records

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # where `python -m training` is importable from
JobState = Literal["running", "promoted", "rejected", "failed"]
VERSION_PATTERN = r"^[0-9]{8}T[0-9]{6,12}Z-[0-9a-f]{8}$"
JOB_ID_PATTERN = r"^[0-9a-f]{12}$"
RECLASSIFY_CHUNK = 256


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Job:
    """One retrain or promotion, as `GET /v1/admin/jobs/{id}` shows it."""

    id: str
    kind: Literal["retrain", "promote"]
    trigger: str
    state: JobState = "running"
    phase: str = "starting"
    started_at: datetime = field(default_factory=_now)
    finished_at: datetime | None = None
    champion: str | None = None
    challenger: str | None = None
    verdict: str | None = None
    reasons: list[str] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    reclassified: int = 0
    to_reclassify: int = 0
    reclassify_done: bool = False
    error: str | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def say(self, line: str) -> None:
        self.log.append(line.rstrip()[:500])

    def as_dict(self, *, log_lines: int = 40) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "trigger": self.trigger,
            "state": self.state,
            "phase": self.phase,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "champion": self.champion,
            "challenger": self.challenger,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "progress": {
                "reclassified": self.reclassified,
                "to_reclassify": self.to_reclassify,
                "done": self.reclassify_done,
            },
            "comparison": self.comparison,
            "error": self.error,
            "log_tail": list(self.log)[-log_lines:],
        }


def bundle_root(bundle: Path) -> Path:
    """The folder of versions: the configured folder, or the parent of a configured version."""
    return bundle.parent if (bundle / MANIFEST).is_file() else bundle


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        key: {k: v for k, v in value.items() if k != "per_label"} if isinstance(value, dict) else value
        for key, value in metrics.items()
    }


def list_bundles(root: Path, live: str | None) -> list[dict[str, Any]]:
    """Every version under ``root`` (newest first) with its metrics and the ledger's decision."""
    ledger = read_ledger(root) if root.is_dir() else {"versions": {}}
    rows = []
    folders = (
        sorted((p for p in root.iterdir() if (p / MANIFEST).is_file()), reverse=True) if root.is_dir() else []
    )
    for folder in folders:
        if folder.name.startswith("."):
            continue
        try:
            manifest = read_manifest(folder)
        except NewsDeskError as error:
            rows.append({"version": folder.name, "live": folder.name == live, "error": str(error)})
            continue
        entry = ledger["versions"].get(folder.name, {})
        rows.append(
            {
                "version": folder.name,
                "created": manifest.get("created"),
                "live": folder.name == live,
                "decision": entry.get("decision"),
                "reason": entry.get("reason"),
                "decided_at": entry.get("at"),
                "metrics": _headline(manifest.get("metrics", {})),
                "seeds": {
                    k: v
                    for k, v in manifest.get("seed_fingerprint", {}).items()
                    if k in ("articles", "seeds", "labelled", "sha256")
                },
                "corrections": (manifest.get("training") or {}).get("corrections"),
                "eval_split": manifest.get("eval_split"),
            }
        )
    return rows


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
    def root(self) -> Path:
        return bundle_root(Path(self.state.settings.bundle))

    @property
    def last(self) -> Job | None:
        return max(self.jobs.values(), key=lambda job: job.started_at, default=None)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id!r}: it is unknown or from before a restart")
        return job

    def _begin(self, kind: Literal["retrain", "promote"], trigger: str) -> Job:
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
                    job.finished_at = _now()

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
        folder = self.root / version
        if not re.fullmatch(VERSION_PATTERN, version) or not (folder / MANIFEST).is_file():
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
        corrections, pairs = await asyncio.to_thread(_write_feedback, store, scratch)
        job.say(f"corrections: {corrections} corrected articles, {pairs} graded pairs")
        seeds = [str(Path(p).resolve()) for p in settings.seeds]
        extra = ["--corrections", str(scratch / "corrections.jsonl")] if corrections else []
        pair_args = ["--pairs", str(scratch / "pairs.tsv")] if pairs else []
        cache = ["--cache-dir", str(settings.retrain_cache_dir)] if settings.retrain_cache_dir else []
        try:
            job.phase = "fitting the challenger"
            fit_args = ["fit", "--seeds", *seeds, *extra, *pair_args, "--out", str(self.root.resolve()),
                        "--candidate", "--holdout", f"{settings.retrain_holdout:g}", "--no-progress", *cache,
                        *([] if settings.retrain_onnx else ["--no-onnx"])]  # fmt: skip
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
                    "failed the gate: " + "; ".join(job.reasons),
                    details=_summary(job.comparison),
                )
                job.state = "rejected"
                job.finished_at = _now()
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
        job.say(f"serving {result.model_version} (was {result.previous_version}) after {result.seconds:.1f}s")
        job.state = "promoted"
        logger.info("promoted %s: %s", folder.name, reason)
        job.phase = "re-classifying stored articles"
        await self._reclassify(job)
        job.phase = "done"
        job.finished_at = _now()

    async def _reclassify(self, job: Job) -> None:
        """Re-tag every stored article with the live model from its stored vector, in chunks."""
        store = self.state.store
        model = self.state.model
        if store is None or model is None:
            job.reclassify_done = True
            return
        job.to_reclassify = await asyncio.to_thread(store.count)
        seq = 0
        while True:
            chunk = await asyncio.to_thread(_next_chunk, store, seq)
            if not chunk:
                break
            seq = chunk[-1].seq
            if self.state.model is not model:
                job.say("another model was promoted meanwhile: re-classification stopped")
                break
            todo = [
                s
                for s in chunk
                if s.model_version != model.version and s.embedding.shape[0] == model.embedder.dim
            ]
            if todo:
                updates = await asyncio.to_thread(_classify_stored, model, todo)
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
        if interval is not None and (_now() - last).total_seconds() >= interval:
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
    with contextlib.suppress(NewsDeskError, ValueError, TypeError, IndexError):
        events = read_ledger(root).get("events") or []
        if events:
            moments.append(datetime.fromisoformat(str(events[-1]["at"]).replace("Z", "+00:00")))
    aware = [m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments]
    return max(aware, default=datetime.fromtimestamp(0, UTC))


def _write_feedback(store: ArticleStore, scratch: Path) -> tuple[int, int]:
    """corrections.jsonl (corrected seed records) and pairs.tsv under ``scratch``: (articles, pairs)."""
    scratch.mkdir(parents=True, exist_ok=True)
    records = list(export_records(store))
    with (scratch / "corrections.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    feedback = store.pair_feedback()
    found = store.get_many(list(dict.fromkeys(i for f in feedback for i in (f.a, f.b))))
    rows = [(f, found[f.a].record, found[f.b].record) for f in feedback if f.a in found and f.b in found]
    pairs = write_pairs_tsv(rows, scratch / "pairs.tsv") if rows else 0
    return len(records), pairs


def _next_chunk(store: ArticleStore, seq: int) -> list[Any]:
    rows = []
    for stored in store.iter_since(seq, RECLASSIFY_CHUNK):
        rows.append(stored)
        if len(rows) >= RECLASSIFY_CHUNK:
            break
    return rows


def _classify_stored(model: Any, stored: list[Any]) -> list[tuple[str, dict[str, Any], str]]:
    articles = [article_from_record(s.record) for s in stored]
    vectors = np.stack([s.embedding for s in stored]).astype(np.float32)
    results = model.classify(articles, all_scores=True, embeddings=vectors)
    return [(s.id, result.to_record(), model.version) for s, result in zip(stored, results, strict=True)]

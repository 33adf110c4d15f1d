"""HTTP shapes of the retraining endpoints (`routes/admin.py`): jobs, bundle versions, promotion."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from model.bundle import VERSION_PATTERN
from service.retrain_jobs import JOB_ID_PATTERN

__all__ = ["JOB_ID_PATTERN", "BundleOut", "BundlesOut", "JobOut", "JobProgressOut", "PromoteIn"]


class JobProgressOut(BaseModel):
    reclassified: int = Field(description="Stored articles re-classified with the promoted model so far.")
    to_reclassify: int = Field(description="Stored articles when re-classification began.")
    done: bool = Field(description="Whether re-classification has finished.")


class JobOut(BaseModel):
    """A retrain (fit -> compare -> promote or reject) or a promotion by hand."""

    id: str = Field(pattern=JOB_ID_PATTERN)
    kind: Literal["retrain", "promote"]
    trigger: str = Field(description="Who or what started it (an endpoint, or an automatic trigger).")
    state: Literal["running", "promoted", "rejected", "failed"]
    phase: str = Field(description="What it is doing now, or `done`.")
    started_at: datetime
    finished_at: datetime | None = Field(
        description="When it ended (a promotion ends once re-classification has)."
    )
    champion: str | None = Field(description="The version live when the job started.")
    challenger: str | None = Field(description="The version trained (or chosen) by this job.")
    verdict: Literal["promote", "reject"] | None = None
    reasons: list[str] = Field(description="The gate's reasons for its verdict.")
    progress: JobProgressOut
    comparison: dict[str, Any] | None = Field(
        description="`python -m training compare`'s JSON: every metric of both with 95% intervals."
    )
    error: str | None = None
    reembedding: dict[str, Any] | None = Field(
        None,
        description="A bundle on another encoder: the stored articles' re-embedding the switch waits for, "
        "with `estimate_s` (how long it will take) from the start.",
    )
    log_tail: list[str] = Field(description="The last lines the job logged (training's stderr included).")


class BundleOut(BaseModel):
    version: str
    created: str | None = None
    live: bool = Field(description="Whether this version is the one served.")
    decision: Literal["trained", "promoted", "rejected", "rolled_back"] | None = Field(
        None, description="The ledger's latest decision about it (None: made before the ledger)."
    )
    reason: str | None = Field(None, description="Why it was promoted or rejected.")
    decided_at: str | None = None
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="The manifest's metrics, per label left out."
    )
    seeds: dict[str, Any] = Field(default_factory=dict, description="The seed fingerprint it was trained on.")
    corrections: dict[str, Any] | None = Field(None, description="Editors' corrections it learnt from.")
    eval_split: dict[str, Any] | None = Field(None, description="The fixed held-out split it records.")
    error: str | None = Field(None, description="Why its manifest cannot be read, if it cannot.")


class BundlesOut(BaseModel):
    live: str | None = Field(description="The version served now.")
    bundles: list[BundleOut] = Field(description="Every version, newest first.")


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(
        pattern=VERSION_PATTERN,
        description="A version folder name from GET /v1/admin/bundles; an earlier one rolls back.",
        examples=["20261126T031800123456Z-1a2b3c4d"],
    )

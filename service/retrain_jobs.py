"""The retrain job model: one retrain or promotion, its states and what `GET /v1/admin/jobs/{id}` shows.

`service.retrain.Retrainer` runs the jobs; this module only says what a job is.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

JobKind = Literal["retrain", "promote"]
JobState = Literal["running", "promoted", "rejected", "failed"]
JOB_ID_PATTERN = r"^[0-9a-f]{12}$"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Job:
    """One retrain or promotion, as `GET /v1/admin/jobs/{id}` shows it."""

    id: str
    kind: JobKind
    trigger: str
    state: JobState = "running"
    phase: str = "starting"
    started_at: datetime = field(default_factory=now)
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
    # A promotion of a bundle on another encoder: the re-embedding it waits for (as /readyz shows it).
    reembedding: dict[str, Any] | None = None
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
            "reembedding": self.reembedding,
            "log_tail": list(self.log)[-log_lines:],
        }

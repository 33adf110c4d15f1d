"""The bundle ledger: which version is live, and why each version was promoted or rejected.

A small JSON file beside the version folders (``<bundles>/ledger.json``), rewritten atomically
(`model.files.atomic_file`) on each event. `model.bundle.resolve_bundle` serves the version the
ledger names as live, so a rejected challenger sitting in the folder is never picked up by a
restart. A folder without a ledger behaves as before: the newest version is served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from model.errors import BundleError
from model.files import atomic_file

LEDGER = "ledger.json"
Decision = Literal["trained", "promoted", "rejected", "rolled_back"]
DECISIONS: tuple[str, ...] = ("trained", "promoted", "rejected", "rolled_back")

_lock = threading.Lock()  # one writer per process; the file itself is replaced atomically


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One decision about one version, as the ledger's ``events`` list keeps it."""

    at: str  # ISO 8601, UTC, with a ``Z``
    version: str
    decision: Decision
    reason: str

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.at.replace("Z", "+00:00"))

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> LedgerEvent:
        return cls(str(row["at"]), str(row["version"]), row["decision"], str(row.get("reason", "")))

    def as_json(self) -> dict[str, str]:
        return {"at": self.at, "version": self.version, "decision": self.decision, "reason": self.reason}


def read_ledger(root: str | Path) -> dict[str, Any]:
    """``{"live": version | None, "versions": {version: {...}}, "events": [...]}`` (empty if none)."""
    path = Path(root) / LEDGER
    if not path.is_file():
        return {"live": None, "versions": {}, "events": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: unreadable bundle ledger ({error}); fix or remove it") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__}")
    data.setdefault("live", None)
    data.setdefault("versions", {})
    data.setdefault("events", [])
    return data


def ledger_events(root: str | Path) -> list[LedgerEvent]:
    """The ledger's history, oldest first (the newest 500 events)."""
    return [LedgerEvent.from_json(row) for row in read_ledger(root).get("events") or []]


def live_version(root: str | Path) -> str | None:
    """The version the ledger names as live, if it does and that folder still exists."""
    root = Path(root)
    if not (root / LEDGER).is_file():
        return None
    live = read_ledger(root).get("live")
    return str(live) if live and (root / str(live)).is_dir() else None


def record_event(
    root: str | Path,
    version: str,
    decision: Decision,
    reason: str,
    *,
    make_live: bool | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Append an event for ``version`` and return the new ledger.

    ``make_live`` defaults to True for ``promoted`` and ``rolled_back`` (both serve the version).
    The version's entry keeps its latest decision and reason; ``events`` keeps the history.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision: expected one of {', '.join(DECISIONS)}, got {decision!r}")
    root = Path(root)
    live = decision in ("promoted", "rolled_back") if make_live is None else make_live
    with _lock:
        ledger = read_ledger(root)
        event = LedgerEvent(_now(), version, decision, reason)
        entry = dict(ledger["versions"].get(version, {}))
        entry.update(decision=decision, reason=reason, at=event.at)
        if details:
            entry.update({key: value for key, value in details.items() if value is not None})
        ledger["versions"][version] = entry
        ledger["events"].append(event.as_json())
        del ledger["events"][:-500]  # a history, not a log: the newest 500 events
        if live:
            ledger["previous_live"] = ledger.get("live")
            ledger["live"] = version
        with atomic_file(root / LEDGER) as temp:
            temp.write_text(json.dumps(ledger, indent=2, default=str), encoding="utf-8")
    return ledger

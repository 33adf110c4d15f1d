"""The fixed evaluation split: an article is held out when a hash of its id says so.

Champion and challenger must be measured on the same held-out articles, and an article added
since the champion was trained must fall on the same side for both. A hash of the id gives
that without storing any list: the rule and the fraction are recorded in the bundle manifest
(`EvalSplit.to_record`), and anyone can recompute which articles a bundle held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SALT = "newsdesk-eval-v1"
RULE = "int(sha256('newsdesk-eval-v1:' + article_id)[:8 bytes]) / 2**64 < fraction"


def id_position(article_id: str, salt: str = SALT) -> float:
    """Where an id falls in [0, 1): the first 8 bytes of sha256(salt:id), uniformly spread."""
    digest = hashlib.sha256(f"{salt}:{article_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class EvalSplit:
    """Which articles are held out for evaluation: those whose `id_position` is below ``fraction``."""

    fraction: float = 0.2
    salt: str = SALT

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"fraction: expected a number from 0 to below 1, got {self.fraction}")

    def held_out(self, article_id: str) -> bool:
        return id_position(article_id, self.salt) < self.fraction

    def partition(self, article_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """(training ids, held-out ids), each in the order given."""
        train: list[str] = []
        held: list[str] = []
        for article_id in article_ids:
            (held if self.held_out(article_id) else train).append(article_id)
        return train, held

    def to_record(self) -> dict[str, Any]:
        rule = RULE if self.salt == SALT else RULE.replace(SALT, self.salt)
        return {"rule": rule, "fraction": self.fraction, "salt": self.salt}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> EvalSplit | None:
        """The split a manifest records (None when the bundle was evaluated another way)."""
        if not record or "fraction" not in record:
            return None
        return cls(fraction=float(record["fraction"]), salt=str(record.get("salt", SALT)))

"""API keys with roles, and a per-key rate limit.

Roles: ``reader`` (classify, search, read), ``ingest`` (store articles), ``editor`` (corrections and
pair feedback), ``admin`` (reload, retrain, delete; holds every role). Keys come from the settings
(``NEWSDESK_API_KEYS``: ``role[+role]:key`` items, comma-separated) or a YAML/JSON file
(``NEWSDESK_API_KEYS_FILE``: ``[{name, key, roles}]``); ``NEWSDESK_ADMIN_TOKEN`` is always an
admin key. Keys are compared as SHA-256 digests with `hmac.compare_digest` against every known
key, so timing tells nothing, and only their names ever reach a log.

Without API keys the service is *open*: every caller holds ``reader``, ``ingest`` and ``editor``
(``admin`` always needs a key: the admin token or an admin API key). That is for a laptop:
`check_exposure` refuses to start open on anything but a loopback interface unless
``NEWSDESK_ALLOW_OPEN=true``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

logger = logging.getLogger(__name__)

Role = Literal["reader", "ingest", "editor", "admin"]
ROLES: tuple[Role, ...] = ("reader", "ingest", "editor", "admin")


class KeyConfigError(ValueError):
    """The configured keys cannot be read; the message names the setting or file and the problem."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's name (never the key) and its roles."""

    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return "admin" in self.roles or role in self.roles


OPEN = Principal("open", frozenset({"reader", "ingest", "editor"}))
# The pages (a browser) carry the key in this cookie, set by /login; API clients send a bearer.
KEY_COOKIE = "newsdesk_key"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass
class KeyRing:
    """Known keys by digest; `identify` compares a presented key against all of them."""

    entries: list[tuple[bytes, Principal]] = field(default_factory=list)

    @property
    def open(self) -> bool:
        """No API keys: only the admin token (if any) is checked, everything else is open."""
        return all(principal.name == "admin-token" for _, principal in self.entries)

    @property
    def has_admin(self) -> bool:
        return any("admin" in principal.roles for _, principal in self.entries)

    def add(self, name: str, secret: str, roles: Iterable[str]) -> None:
        wanted = frozenset(roles)
        unknown = sorted(wanted - set(ROLES))
        if unknown or not wanted:
            raise KeyConfigError(
                f"key {name!r}: roles must be some of {', '.join(ROLES)}, got {sorted(wanted)}"
            )
        if len(secret) < 16:
            raise KeyConfigError(f"key {name!r}: at least 16 characters, got {len(secret)}")
        self.entries.append((_digest(secret), Principal(name, wanted)))  # type: ignore[arg-type]

    def identify(self, secret: str) -> Principal | None:
        presented = _digest(secret)
        found = None
        for digest, principal in self.entries:  # no early exit: every key is compared
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found


def _parse_inline(spec: str) -> list[dict[str, Any]]:
    items = []
    for position, item in enumerate(part.strip() for part in spec.split(",") if part.strip()):
        roles, sep, secret = item.partition(":")
        if not sep or not secret:
            raise KeyConfigError(f"NEWSDESK_API_KEYS item {position + 1}: expected role[+role]:key")
        items.append({"name": f"key{position + 1}", "key": secret, "roles": roles.split("+")})
    return items


def _parse_file(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise KeyConfigError(f"NEWSDESK_API_KEYS_FILE={path}: cannot read ({error})") from None
    if isinstance(data, Mapping):
        data = data.get("keys", [])
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise KeyConfigError(f"{path}: expected a list of {{name, key, roles}} mappings")
    return [dict(item) for item in data]


def build_keyring(inline: str | None, path: Path | None, admin_token: str | None) -> KeyRing:
    ring = KeyRing()
    items = _parse_inline(inline) if inline else []
    items += _parse_file(path) if path is not None else []
    for position, item in enumerate(items):
        name = str(item.get("name") or f"key{position + 1}")
        secret, roles = item.get("key"), item.get("roles")
        if not isinstance(secret, str) or not isinstance(roles, list):
            raise KeyConfigError(f"key {name!r}: expected a string 'key' and a list of 'roles'")
        ring.add(name, secret, roles)
    if admin_token:
        ring.add("admin-token", admin_token, ["admin"])
    return ring


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(ring: KeyRing, host: str, allow_open: bool) -> None:
    """Refuse to serve open on a non-loopback interface; say it when serving open locally."""
    if not ring.open:
        logger.info(
            "API keys: %d configured (%s)", len(ring.entries), ", ".join(p.name for _, p in ring.entries)
        )
        return
    if is_loopback(host):
        logger.warning(
            "no API keys configured: the service is open to every caller on %s (loopback only)", host
        )
        return
    if allow_open:
        logger.warning(
            "no API keys configured and NEWSDESK_ALLOW_OPEN=true: open to anyone who reaches %s", host
        )
        return
    raise KeyConfigError(
        f"refusing to serve on {host} without API keys: set NEWSDESK_API_KEYS or NEWSDESK_API_KEYS_FILE "
        "(or NEWSDESK_ADMIN_TOKEN), or NEWSDESK_ALLOW_OPEN=true to serve open on purpose"
    )


class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests, bursts up to ``burst``."""

    def __init__(self, per_minute: float, burst: int | None = None) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(per_minute / 6)))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0.0 when the request may go; else the seconds until it could."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / self.rate

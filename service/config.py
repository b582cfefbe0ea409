"""Settings: one typed object, read from `GRADUAL_*` environment variables once at start."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import tokens
from service.learning.compilation import CompileMode

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "testserver")  # testserver: Starlette's client


class Settings(BaseSettings):
    # hide_input_in_errors: a settings error must not print the tokens it was given
    model_config = SettingsConfigDict(
        env_prefix="GRADUAL_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    data_dir: Path = Field(
        default=Path(".gradual"), description="SQLite file and weights live here."
    )
    weights_dir: Path | None = Field(
        default=None,
        description="Version files and snapshots; default: the data dir's weights/. Replicas "
        "share it.",
    )
    weights_url: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,62}(/.*)?$",
        description="s3://bucket/prefix: weights and snapshots on an S3-compatible store "
        "instead of the weights folder (nothing shared on disk between replicas).",
    )
    s3_endpoint: str | None = Field(
        default=None, description="The S3 endpoint URL (MinIO, Ceph, ...); default: AWS."
    )
    s3_region: str = Field(default="us-east-1", description="The S3 region.")
    s3_access_key_id: str | None = Field(default=None, description="S3 credentials.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 credentials.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data dir."
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    host: str = Field(default="127.0.0.1", description="Where `gradual serve` listens.")
    port: int = Field(default=8000, ge=1, le=65535, description="Where `gradual serve` listens.")
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="The Open Inference Protocol's gRPC service listens on this port of `host` "
        "(docs/oip.md); unset: off; 0: any free port (logged).",
    )  # fmt: skip

    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    max_batch_rows: int = Field(default=65_536, ge=1, description="Rows per predict/fit call.")
    max_input_abs: float = Field(
        default=1e12, gt=0, description="Inputs and regression targets beyond this are refused."
    )
    max_weight_abs: float = Field(
        default=1e4, gt=0, description="A step leaving a weight beyond this is rolled back."
    )
    max_grad_norm: float = Field(
        default=1e6, gt=0, description="A step whose gradient norm exceeds this is refused."
    )
    predict_max_batch: int = Field(
        default=64, ge=1, description="Rows one coalesced predict forward pass may carry."
    )
    predict_inline_ms: float = Field(
        default=0.3, ge=0, description="A served version whose last forward pass took at "
        "most this long runs the next one on the event loop instead of a worker thread.",
    )  # fmt: skip
    predict_max_wait_ms: float = Field(
        default=2.0, ge=0, description="How long a predict may wait for company while busy."
    )
    queue_batches: int = Field(
        default=64, ge=1, description="Pending batches per model before partial-fit answers 429."
    )
    retry_after_s: float = Field(default=1.0, gt=0, description="Retry-After sent with a 429.")
    storage_reserve_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Changes are refused (507) once a directory written to has no more free "
        "space than this, so snapshots and the database can still be written.",
    )
    database_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a model's writer waits for an unreachable database server before "
        "refusing the batch (its log record keeps it meanwhile).",
    )
    storage_retry_after_s: float = Field(
        default=5.0, gt=0, description="Retry-After sent with a 507 or a storage 503."
    )
    batch_id_memory: int = Field(
        default=100_000, ge=0, description="Applied batch ids per model kept for de-duplication."
    )
    durability: Literal["wal", "checkpoint"] = Field(
        default="wal",
        description="wal: every acknowledged batch is fsynced to a write-ahead log first and "
        "replayed after a crash; checkpoint: faster, loses the batches since the last snapshot.",
    )
    snapshot_every: int = Field(
        default=1000, ge=1, description="Log records between recovery snapshots (bounds replay)."
    )
    snapshot_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="With the write-ahead log in one process: a batch whose round wrote a "
        "version or rolled back is snapshotted at most this often (replay re-derives the "
        "others); 0: after every such batch. Commands always snapshot.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16: mixed-precision training steps (autocast)."
    )
    compile: CompileMode = Field(
        default="off",
        description="torch.compile forward passes: predict (served versions), all (training "
        "too); eager where compiling fails.",
    )
    crashpoint: str | None = Field(
        default=None,
        description="Tests only: SIGKILL the process at a named point (after_wal_append, "
        "after_weights_fsync, after_rename, after_db_commit, after_db_commit_before_xack, "
        "mid_step, after_snapshot; `:N` for the N-th time).",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; default: torch's own choice."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The service's log level."
    )
    # `gradual serve`'s HTTP stack: auto picks httptools and uvloop (C) when installed.
    http: Literal["auto", "h11", "httptools"] = Field(
        default="auto", description="HTTP/1.1 parser; auto: httptools when installed, else h11."
    )
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto", description="Event loop; auto: uvloop when installed, else asyncio."
    )
    workers: int | None = Field(
        default=None, ge=1,
        description="Processes `gradual serve` answers HTTP with: one trainer (every model's "
        "writes) and readers that predict from the served versions and forward the rest; "
        "default: the machine's cores, at most GRADUAL_MAX_WORKERS. 1: one process (always, "
        "on an in-memory SQLite database; more is refused there).",
    )  # fmt: skip
    max_workers: int = Field(
        default=8, ge=1, description="The most processes the default GRADUAL_WORKERS starts."
    )
    access_log: bool = Field(
        default=False, description="A log line per request (synchronous: off on the hot path)."
    )
    opentelemetry: bool = Field(
        default=False, description="FastAPI's native OpenTelemetry spans, metrics and logs for "
        "a configured global provider; off: no request pays the provider lookups.",
    )  # fmt: skip

    # Scale-out: with Redis, replicas share PostgreSQL, Redis and the data dir's weights.
    redis_url: str | None = Field(
        default=None, description="redis://...: batches go through Redis Streams; replicas share."
    )
    redis_prefix: str = Field(
        default="gradual", pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Prefix of every Redis key and channel (several deployments, one Redis).",
    )  # fmt: skip
    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="This replica's consumer name; default: host name and process id.",
    )
    lease_ttl_s: float = Field(
        default=5.0, gt=0.1, description="A model's owner lease; another replica takes over after."
    )
    sync_every_s: float = Field(
        default=2.0, gt=0, description="How often a replica re-reads served versions from the DB."
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        description="Replica deaths while applying one stream entry before it is dead-lettered.",
    )
    stream_backlog: int = Field(
        default=10_000, ge=1, description="Unread stream entries per model before 429."
    )
    stream_wait_s: float = Field(
        default=30.0, gt=0, description="How long a waiting request awaits its entry's outcome."
    )

    # -- access (see SECURITY.md) ------------------------------------------------------------
    api_tokens: Annotated[tokens.TokenDigests, NoDecode] = Field(
        default=(),
        description="scope=token pairs (read, write, admin), comma-separated; kept as SHA-256.",
    )
    api_tokens_file: Path | None = Field(
        default=None, description="A file of scope=token pairs, one a line, # comments."
    )
    insecure: bool = Field(
        default=False, description="Allow binding beyond loopback without tokens (open API)."
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Browser origins allowed cross-site (comma-separated); none."
    )
    trusted_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=LOCAL_HOSTS,
        description="Host headers accepted (comma-separated; *.example.com, or * for any).",
    )

    @model_validator(mode="before")
    @classmethod
    def _hash_tokens(cls, data: Any) -> Any:
        """Reads the token file and hashes every token before any field keeps it."""
        if not isinstance(data, dict):
            return data
        raw, path = data.get("api_tokens"), data.get("api_tokens_file")
        if isinstance(raw, str) or (raw is None and path):
            pairs = tokens.parse_pairs(raw or "", source="api_tokens")
            if path:
                text = tokens.read_token_file(Path(path))
                pairs += tokens.parse_pairs(text, source=f"api_tokens_file {path}")
                if not pairs:  # auth was asked for: an empty file must not switch it off
                    raise ValueError(f"api_tokens_file {path} holds no scope=token pair")
            data = {**data, "api_tokens": tokens.hashed(pairs)}
        return data

    @field_validator("cors_origins", "trusted_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @model_validator(mode="after")
    def _no_open_network_bind(self) -> Settings:
        if not self.api_tokens and not self.insecure and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without API tokens: set GRADUAL_API_TOKENS "
                "(or GRADUAL_API_TOKENS_FILE), bind to 127.0.0.1, or pass --insecure"
            )
        return self

    @model_validator(mode="after")
    def _readers_can_see_the_database(self) -> Settings:
        if (self.workers or 1) > 1 and self.database_in_memory:
            raise ValueError(
                f"GRADUAL_WORKERS {self.workers} needs a database the reader processes can "
                "open: an in-memory SQLite database lives in one process only"
            )
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in {"auto", "cpu", "cuda"} and not (
            value.startswith("cuda:") and value[5:].isdigit()
        ):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'gradual.db').resolve()}"

    @property
    def weights_root(self) -> Path:
        return self.weights_dir or self.data_dir / "weights"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def database_in_memory(self) -> bool:
        url = self.resolved_database_url
        return url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url

    def serving_processes(self) -> int:
        """GRADUAL_WORKERS, or the machine's cores up to GRADUAL_MAX_WORKERS (one process for
        an in-memory database, which no other process could open)."""
        if self.database_in_memory:
            return 1
        return self.workers or min(os.cpu_count() or 1, self.max_workers)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything

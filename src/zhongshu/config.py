"""Settings: one class, read once at the entry points (CLI, app factory, worker main).

Sources, strongest first: keyword arguments, ``ZHONGSHU_*`` environment variables, the YAML
file (``--config`` or ``./config.yaml`` when present), defaults. Code below the entry points
receives plain values, never this object's module.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, computed_field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from zhongshu import errors

DEFAULT_CONFIG_FILE = Path("config.yaml")
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret"}


def _check_fernet_key(key: str) -> None:
    from cryptography.fernet import Fernet

    try:
        Fernet(key.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "encryption_keys: each key must be a Fernet key (32 url-safe base64 bytes)"
        ) from exc


class Settings(BaseSettings):
    """Everything the hub can be told. See ``config.example.yaml`` for a commented copy."""

    model_config = SettingsConfigDict(env_prefix="ZHONGSHU_", extra="forbid", validate_default=True)

    env: Literal["local", "production"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=1, le=65535)
    data_dir: Path = Path("./data")
    database_url: str | None = None
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    secret_key: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    access_token_ttl_s: int = Field(3600, gt=0)
    refresh_token_ttl_s: int = Field(30 * 86400, gt=0)
    confirm_token_ttl_s: int = Field(300, gt=0, le=3600)
    # Failed logins / key checks before an exponential lockout, per username or key and
    # per client IP, counted within auth_failure_window_s.
    auth_max_failures: int = Field(5, ge=1)
    auth_ip_max_failures: int = Field(20, ge=1)
    auth_failure_window_s: float = Field(900.0, gt=0)
    auth_lockout_base_s: float = Field(1.0, gt=0)
    auth_lockout_cap_s: float = Field(900.0, gt=0)
    # Conversation-bus relay: accepted only with one of these keys (X-Relay-API-Key).
    relay_enabled: bool = False
    relay_api_keys: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    # Several hub replicas on one PostgreSQL database: Redis carries Socket.IO emits
    # between them (a worker connected to one replica hears what another decides) and
    # which replica each worker is connected to. Keys and channels start with the prefix.
    redis_url: str | None = None
    redis_prefix: str = Field("zhongshu:", min_length=1, max_length=64)

    heartbeat_interval_s: float = Field(10.0, gt=0)
    offline_after_s: float = Field(30.0, gt=0)
    reaper_interval_s: float = Field(1.0, gt=0)

    task_default_max_attempts: int = Field(3, ge=1, le=100)
    task_default_timeout_s: float = Field(300.0, gt=0)
    task_lease_grace_s: float = Field(5.0, ge=0)
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(300.0, gt=0)
    dispatch_batch: int = Field(64, ge=1, le=1000)
    # Tasks the hub's embedded executor (fetch, AI, deliveries) holds at once.
    executor_capacity: int = Field(32, ge=1, le=1000)

    callback_secret: str = ""
    callback_max_attempts: int = Field(5, ge=1, le=50)
    callback_timeout_s: float = Field(10.0, gt=0)
    callback_retry_base_s: float = Field(1.0, gt=0)

    # Fernet keys that encrypt secrets at rest (source cookies, proxy and channel
    # passwords, AI keys). The first encrypts; all decrypt, so a rotation can add a new
    # key in front and `zhongshu secrets rotate-key` re-encrypts. Empty in local mode:
    # one is generated once and kept in the data dir.
    encryption_keys: list[str] = Field(default_factory=list)

    # sources, assignment, login sessions
    # Platforms a source may name (each is the capability a node needs to serve it).
    known_platforms: list[str] = Field(
        default_factory=lambda: [
            "demo",
            "douyin",
            "xiaohongshu",
            "kuaishou",
            "weibo",
            "wechat_mp",
            "bilibili",
            "rss",
        ]
    )
    # How often logged-in sources are turned into monitor tasks (HisCRM: 30 s), and how
    # often the assignment is reconciled (unassigned sources, nodes gone quiet).
    monitor_tick_s: float = Field(30.0, gt=0)
    assignment_tick_s: float = Field(10.0, gt=0)
    # QR login: a session waits this long for a scan; a login is trusted this long.
    login_session_ttl_s: float = Field(300.0, gt=0)
    login_valid_s: float = Field(7 * 86400.0, gt=0)
    # How often expired login sessions and expired credentials are looked for.
    login_watch_interval_s: float = Field(5.0, gt=0)

    @field_validator("known_platforms")
    @classmethod
    def _check_platforms(cls, value: list[str]) -> list[str]:
        import re

        for p in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", p):
                raise ValueError(f"known_platforms: {p!r} is not a lowercase token like 'douyin'")
        return value

    # schedules, message tasks, worker lifecycle
    # How often the schedule loop looks for due schedules and message tasks at most; it
    # also wakes exactly at the next due time when that is sooner (docs/schedules.md).
    schedule_tick_s: float = Field(1.0, gt=0)
    # Timezone of schedules and message tasks created without one (IANA name).
    schedule_default_timezone: str = "UTC"
    # Webhook delivery of a message task run: attempts (retried with the queue's
    # backoff) and the timeout of one POST.
    message_task_max_attempts: int = Field(5, ge=1, le=50)
    message_task_timeout_s: float = Field(10.0, gt=0)
    # Local worker processes the hub may start (docs/lifecycle.md): a list of
    # {name, capabilities, concurrency, env, args, handlers, autostart}.
    worker_profiles: list[Any] = Field(default_factory=list)
    # The hub URL the spawned workers connect to (default: http://127.0.0.1:<port>).
    lifecycle_hub_url: str | None = None
    # A crashed worker restarts after base·2^n s (capped), at most max_restarts times in a
    # row; a run longer than stable_after_s resets the count.
    lifecycle_max_restarts: int = Field(5, ge=0, le=1000)
    lifecycle_restart_base_s: float = Field(1.0, gt=0)
    lifecycle_restart_cap_s: float = Field(30.0, gt=0)
    lifecycle_stable_after_s: float = Field(60.0, gt=0)
    # SIGTERM first; SIGKILL after this grace (stop, restart, hub shutdown).
    lifecycle_stop_grace_s: float = Field(10.0, gt=0)

    @field_validator("worker_profiles")
    @classmethod
    def _check_worker_profiles(cls, value: list[Any]) -> list[Any]:
        from zhongshu.services.lifecycle import WorkerProfile

        profiles = [p if isinstance(p, WorkerProfile) else WorkerProfile(**p) for p in value]
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError("worker_profiles: profile names must be unique")
        return profiles

    @field_validator("schedule_default_timezone")
    @classmethod
    def _check_schedule_timezone(cls, value: str) -> str:
        from zhongshu.services.schedules import check_timezone

        return check_timezone(value)

    # messages, channels, pipeline, routing
    # The address people reach this hub at: view links in pushed messages are built on it
    # (empty: http://host:port).
    public_url: str = ""
    # Each pipeline stage runs as hub tasks: attempts (with the queue's backoff), priority
    # and how many run at once, per stage.
    messages_max_attempts: int = Field(3, ge=1, le=20)
    messages_fetch_priority: int = Field(0, ge=-1000, le=1000)
    messages_ai_priority: int = Field(0, ge=-1000, le=1000)
    messages_deliver_priority: int = Field(10, ge=-1000, le=1000)
    messages_fetch_concurrency: int = Field(4, ge=1, le=256)
    messages_ai_concurrency: int = Field(2, ge=1, le=256)
    messages_deliver_concurrency: int = Field(8, ge=1, le=256)
    messages_fetch_timeout_s: float = Field(20.0, gt=0)
    messages_fetch_max_bytes: int = Field(5 * 1024 * 1024, gt=0)
    messages_ai_timeout_s: float = Field(60.0, gt=0)
    messages_send_timeout_s: float = Field(20.0, gt=0)
    # Users' templates (channel bodies, message tasks, AI prompts) render in a child
    # process: past this time or address space a render fails alone (services/templates.py).
    template_timeout_s: float = Field(2.0, gt=0, le=60)
    template_memory_mb: int = Field(512, ge=128)
    # Backups (docs/backup.md): keep only the newest N after each new one (unset: all).
    backup_keep: int | None = Field(None, ge=1)
    # Longest accepted title + content (characters); longer submissions are refused.
    messages_max_content_chars: int = Field(64 * 1024, gt=0)
    # Notification routing: how often due digests are flushed; system alerts for admins.
    routing_tick_s: float = Field(1.0, gt=0)
    alerts_min_interval_s: float = Field(900.0, ge=0)
    alerts_dead_task_threshold: int = Field(10, ge=1)
    alerts_error_threshold: int = Field(50, ge=1)
    alerts_window_s: float = Field(300.0, gt=0)
    alerts_disk_free_ratio: float = Field(0.05, ge=0, le=1)
    alerts_check_interval_s: float = Field(60.0, gt=0)

    # collected data and IM API
    # Per-sync limits: items in one sync, bytes of one item's JSON (docs/im.md).
    im_sync_max_items: int = Field(200_000, ge=1)
    im_sync_max_item_bytes: int = Field(256 * 1024, ge=256)
    # Per-kind maximum age in days (content, comment, conversation, message,
    # notification); kinds not listed are kept forever.
    im_retention_days: dict[str, float] = Field(default_factory=dict)
    im_retention_interval_s: float = Field(3600.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite", "postgres")):
            scheme = value.split(":")[0]
            raise ValueError(f"must start with 'sqlite' or 'postgresql', got {scheme!r}")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        return value

    @model_validator(mode="after")
    def _check_secret_key(self) -> Settings:
        if self.env == "production" and self.secret_key.strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("secret_key must be set to a long random value in production")
        if self.env == "production" and self.relay_enabled and not self.relay_api_keys:
            raise ValueError(
                "relay_enabled is true but relay_api_keys is empty: set relay_api_keys "
                "(ZHONGSHU_RELAY_API_KEYS='[\"<long random key>\"]') or disable the relay"
            )
        if self.env == "production" and not self.encryption_keys:
            raise ValueError(
                "encryption_keys must be set in production: generate one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`"
            )
        for key in self.encryption_keys:
            _check_fernet_key(key)
        for key in self.relay_api_keys:
            if len(key) < 16 or key.strip().lower() in _PLACEHOLDER_SECRETS:
                raise ValueError("relay_api_keys: each key must be at least 16 characters")
        if self.offline_after_s <= self.heartbeat_interval_s:
            raise ValueError("offline_after_s must be longer than heartbeat_interval_s")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'zhongshu.db').resolve()}"

    def signing_key(self) -> str:
        """The key for JWTs and webhook signatures.

        In ``local`` mode without a configured key, one is generated once and kept in the
        data dir, so tokens survive restarts without the user having to invent a secret.
        """
        return self.secret_key or self._persisted("secret_key", lambda: secrets.token_urlsafe(48))

    def webhook_secret(self) -> str:
        """The Standard Webhooks secret (``whsec_…``) that signs result callbacks."""
        return self.callback_secret or self._persisted(
            "callback_secret",
            lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        )

    def fernet_keys(self) -> list[str]:
        """Encryption keys, newest first (see ``encryption_keys``)."""
        if self.encryption_keys:
            return list(self.encryption_keys)
        # Production never gets here: the settings refuse to load without keys there.
        from cryptography.fernet import Fernet

        return [self._persisted("encryption_key", lambda: Fernet.generate_key().decode())]

    def instance_id(self) -> str:
        """This hub's id, kept in the data dir: names its embedded executor node."""
        return self._persisted("instance_id", lambda: secrets.token_hex(6))

    def relay_keys(self) -> list[str]:
        """Keys the relay accepts. In ``local`` mode without configured keys, one is
        generated once and kept in the data dir; production refuses to start without one."""
        if self.relay_api_keys:
            return list(self.relay_api_keys)
        if self.env == "production":
            return []
        return [self._persisted("relay_api_key", lambda: secrets.token_urlsafe(32))]

    def _persisted(self, name: str, make: Callable[[], str]) -> str:
        path = self.data_dir / name
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = make()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("ZHONGSHU_CONFIG_FILE") or (
            str(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.exists() else None
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings, turning every problem into one ``errors.ConfigError`` naming the field."""
    if config_file is not None:
        path = Path(config_file)
        if not path.exists():
            raise errors.ConfigError(f"config file {path} does not exist")
        os.environ["ZHONGSHU_CONFIG_FILE"] = str(path)
    env_file = os.environ.get("ZHONGSHU_CONFIG_FILE")
    if env_file:
        try:
            loaded = yaml.safe_load(Path(env_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise errors.ConfigError(f"cannot read config file {env_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise errors.ConfigError(f"config file {env_file} must hold a mapping of settings")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "config"
            problems.append(f"{field}: {err['msg']}")
        raise errors.ConfigError("invalid configuration — " + "; ".join(problems)) from exc

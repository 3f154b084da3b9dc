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

    heartbeat_interval_s: float = Field(10.0, gt=0)
    offline_after_s: float = Field(30.0, gt=0)
    reaper_interval_s: float = Field(1.0, gt=0)

    task_default_max_attempts: int = Field(3, ge=1, le=100)
    task_default_timeout_s: float = Field(300.0, gt=0)
    task_lease_grace_s: float = Field(5.0, ge=0)
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(300.0, gt=0)
    dispatch_batch: int = Field(64, ge=1, le=1000)

    callback_secret: str = ""
    callback_max_attempts: int = Field(5, ge=1, le=50)
    callback_timeout_s: float = Field(10.0, gt=0)
    callback_retry_base_s: float = Field(1.0, gt=0)

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

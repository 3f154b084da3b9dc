"""Settings: YAML file, env overrides, one clear error naming the field, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zhongshu import errors
from zhongshu.config import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("ZHONGSHU_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_give_sqlite_in_the_data_dir() -> None:
    s = load_settings()
    assert s.port == 8001
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert s.effective_database_url.endswith("data/zhongshu.db")


def test_yaml_file_then_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "hub.yaml"
    cfg.write_text("port: 9000\nheartbeat_interval_s: 5\n")
    monkeypatch.setenv("ZHONGSHU_HEARTBEAT_INTERVAL_S", "7")
    s = load_settings(cfg)
    assert s.port == 9000
    assert s.heartbeat_interval_s == 7


def test_config_yaml_in_the_working_dir_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("port: 9100\n")
    assert load_settings().port == 9100


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"ZHONGSHU_PORT": "not-a-port"}, "port"),
        ({"ZHONGSHU_PORT": "70000"}, "port"),
        ({"ZHONGSHU_DATABASE_URL": "mysql://x"}, "database_url"),
        ({"ZHONGSHU_ENV": "production"}, "secret_key"),
        ({"ZHONGSHU_HEARTBEAT_INTERVAL_S": "40"}, "offline_after_s"),
    ],
)
def test_invalid_values_name_the_field(
    env: dict[str, str], field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    assert field in info.value.message


def test_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.yaml"
    cfg.write_text("prot: 9000\n")
    with pytest.raises(errors.ConfigError, match="prot"):
        load_settings(cfg)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_postgres_shorthand_gets_the_async_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHONGSHU_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings().effective_database_url == "postgresql+asyncpg://u@h/db"


def test_check_config_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHONGSHU_")}
    env["ZHONGSHU_PORT"] = "abc"
    proc = subprocess.run(
        [sys.executable, "-m", "zhongshu", "check-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_generated_secrets_persist_with_private_mode(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path / "d")
    key = s.signing_key()
    assert key == load_settings(data_dir=tmp_path / "d").signing_key()
    assert (tmp_path / "d" / "secret_key").stat().st_mode & 0o777 == 0o600
    assert s.webhook_secret().startswith("whsec_")

"""``zhongshu worker`` argument handling (the command function, in a one-command Typer app)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from zhongshu.cli import worker as worker_cli


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command()(worker_cli.worker)
    return app


@pytest.fixture(autouse=True)
def no_worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HUB", "KEY", "SECRET"):
        monkeypatch.delenv(f"ZHONGSHU_WORKER_{name}", raising=False)


def test_missing_credentials_exit_2(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["--key", "CN" + "a" * 32])
    assert result.exit_code == 2
    assert "ZHONGSHU_WORKER_SECRET" in result.output


def test_unknown_handler_module_exit_2(app: typer.Typer) -> None:
    result = CliRunner().invoke(
        app,
        ["--handlers", "no_such_module_zs"],
        env={"ZHONGSHU_WORKER_KEY": "CN" + "a" * 32, "ZHONGSHU_WORKER_SECRET": "CS" + "b" * 32},
    )
    assert result.exit_code == 2
    assert "no_such_module_zs" in result.output
    assert "b" * 32 not in result.output


def test_bad_log_level_exit_2(app: typer.Typer) -> None:
    result = CliRunner().invoke(
        app, ["--key", "CN" + "a" * 32, "--secret", "CS" + "b" * 32, "--log-level", "LOUD"]
    )
    assert result.exit_code == 2


def test_default_journal_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ZHONGSHU_DATA_DIR", raising=False)
    assert worker_cli.default_journal_path("CNabc") == Path(".zhongshu-worker-CNabc.db")
    monkeypatch.setenv("ZHONGSHU_DATA_DIR", str(tmp_path))
    assert worker_cli.default_journal_path("CN/../x") == tmp_path / "worker-CN____x.db"

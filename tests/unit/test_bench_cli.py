"""``zhongshu bench``: finds the checkout's bench/ scripts and passes arguments through."""

from __future__ import annotations

import sys

import typer
from typer.testing import CliRunner

from zhongshu.cli import bench_command
from zhongshu.cli.bench_command import bench_dir

app = typer.Typer()
bench_command.register(app)
app.command("version")(lambda: None)  # a second command keeps "bench" a subcommand


def test_unknown_benchmark_names_the_ones_there_are() -> None:
    r = CliRunner().invoke(app, ["bench", "nope"])
    assert r.exit_code == 2
    assert "no benchmark named 'nope'" in r.output
    assert "queue" in r.output and "im" in r.output


def test_arguments_after_the_name_reach_the_script(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = bench_dir()
    assert folder is not None and (folder / "queue.py").is_file()
    calls: list[list[str]] = []
    monkeypatch.setattr(
        "zhongshu.cli.bench_command.subprocess.call", lambda argv, cwd: calls.append(argv) or 3
    )
    r = CliRunner().invoke(app, ["bench", "queue", "--tasks", "10", "--help"])
    assert r.exit_code == 3  # the script's exit code
    assert calls == [[sys.executable, str(folder / "queue.py"), "--tasks", "10", "--help"]]

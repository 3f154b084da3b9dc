"""``zhongshu bench NAME [ARGS…]``: run one of the benchmarks in the checkout's ``bench/``.

The benchmarks are scripts beside the package, not part of it (they pull in Celery and
friends through the ``bench`` extra), so this only finds and runs them; every argument
after the name goes to the script (``zhongshu bench queue --tasks 2000``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

import zhongshu

console = Console(stderr=True)


def bench_dir() -> Path | None:
    """``bench/`` of the source checkout this package runs from, if there is one."""
    # src/zhongshu/__init__.py -> the checkout's root is two folders up from the package.
    root = Path(zhongshu.__file__).resolve().parents[2]
    folder = root / "bench"
    return folder if folder.is_dir() else None


def available(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def bench(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="a script in bench/")] = None,
) -> None:
    """Run a benchmark from bench/: zhongshu bench NAME [ARGS…] (try NAME --help)."""
    folder = bench_dir()
    if folder is None:
        console.print(
            "[red]error:[/red] no bench/ folder next to this installation; the benchmarks "
            "ship with the source checkout (pip install -e '.[bench]' from a clone)"
        )
        raise typer.Exit(2)
    if name is None or name in ("-h", "--help"):
        console.print("usage: zhongshu bench NAME [ARGS…]   (arguments go to bench/NAME.py)")
        console.print(f"benchmarks: {', '.join(available(folder))}")
        raise typer.Exit(0 if name else 2)
    script = folder / f"{name}.py"
    if not script.is_file():
        console.print(
            f"[red]error:[/red] no benchmark named {name!r}; "
            f"choose one of: {', '.join(available(folder))}"
        )
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, str(script), *ctx.args], cwd=folder.parent))


def register(app: typer.Typer) -> None:
    app.command(
        "bench",
        # Every option after NAME (--help too) belongs to the script.
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(bench)

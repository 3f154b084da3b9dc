"""``zhongshu demo`` end to end, as a real process: hub, worker and the fake platform come
up, the QR login succeeds (``--auto-scan``), and conversations arrive through the sync
path and the IM API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from procs import clean_env, free_port

pytestmark = pytest.mark.slow


def test_the_demo_logs_in_by_qr_and_shows_conversations_arriving(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "zhongshu",
        "demo",
        "--data-dir",
        str(tmp_path / "demo"),
        "--port",
        str(free_port()),
        "--platform-port",
        str(free_port()),
        "--auto-scan",
        "--exit-after",
        "8",
        "--activity-every-s",
        "1",
    ]
    done = subprocess.run(
        args, env=clean_env(), capture_output=True, text=True, timeout=120, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "the worker produced a QR code" in out, out
    assert "logged in" in out, out
    counts = [
        dict((k, int(n)) for k, n in re.findall(r"(\w+) (\d+)", line))
        for line in out.splitlines()
        if line.startswith("inbox")
    ]
    last = counts[-1] if counts else {}
    assert last.get("conversations", 0) >= 1, out
    assert last.get("messages", 0) >= 1, out
    assert last.get("comments", 0) >= 2, out
    # What arrived grows as the platform makes new activity: the monitor keeps syncing.
    totals = [sum(c.values()) for c in counts]
    assert totals == sorted(totals) and totals[-1] > totals[0], out
    # The login's credentials are sealed at rest: the platform's session never appears.
    for f in (tmp_path / "demo").glob("zhongshu.db*"):  # the WAL file too
        assert b"demo_session" not in f.read_bytes(), f

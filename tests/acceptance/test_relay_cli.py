"""``zhongshu relay export-log`` as a real process, with the hub stopped."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import ZHONGSHU, clean_env

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.services.identity import Principal
from zhongshu.services.relay import RelayMessage

pytestmark = pytest.mark.slow

RELAY = Principal("relay", "relay", "relay", via="relay", name="relay")


async def _converse(settings: Settings) -> list[dict[str, Any]]:
    """Two sends, a callback, a repeated callback and an ack; returns the hub's log view."""
    async with testing.running_hub(settings) as hub:
        first, _ = await hub.relay.send(
            RelayMessage("master", "child", cmd="a", text="你好"), RELAY
        )
        second, _ = await hub.relay.send(
            RelayMessage("master", "child", "message", task_id="m-1", payload={"k": [1, 2]}), RELAY
        )
        for _ in range(2):
            await hub.relay.callback(first["id"], "child_1", True, {"ok": True}, RELAY)
        await hub.relay.ack(first["id"], "user_1", RELAY)
        assert second["id"] == "m-1"
        return await hub.relay.logs(1000)


def test_export_log_writes_the_conversation_as_json_lines(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    db = tmp_path / "hub.db"
    logs = asyncio.run(_converse(make_settings(database_url=f"sqlite+aiosqlite:///{db}")))
    out = tmp_path / "conversation_log.jsonl"
    env = clean_env(ZHONGSHU_DATABASE_URL=f"sqlite:///{db}", ZHONGSHU_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [*ZHONGSHU, "relay", "export-log", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "5 log entries written" in done.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == logs
    assert [e["event"] for e in lines] == ["send", "send", "callback", "callback_ignored", "ack"]
    assert lines[0]["text"] == "你好" and lines[1]["payload"] == {"k": [1, 2]}
    assert not list(tmp_path.glob("*.part"))

    # No database where the settings point: one clear line, exit 1, nothing written.
    missing = clean_env(ZHONGSHU_DATA_DIR=str(tmp_path / "nowhere"))
    done = subprocess.run(
        [*ZHONGSHU, "relay", "export-log", str(tmp_path / "x.jsonl")],
        env=missing,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "no database at" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()

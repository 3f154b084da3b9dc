"""Export and import of collected data as JSON lines (gzip-compressed in files).

The format, one JSON object per line: a header ``{"format": "zhongshu.items", "version":
1, ...}``, then ``{"type": "source", ...}`` lines (sources without credentials, created on
import only when missing), ``{"type": "sync_state", ...}`` lines and ``{"type": "item",
...}`` lines with every ``items`` column, the hub id included so that an export, a wipe
and an import give the same ids and the same query results. Import merges by (source,
kind, platform id), so running it twice changes nothing.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from zhongshu import errors
from zhongshu.db.item_store import ITEM_COLUMNS, KINDS, ItemStore, dumps

Row = dict[str, Any]
FORMAT = "zhongshu.items"
VERSION = 1
CHUNK = 5000
_ITEM_REQUIRED = ("source_id", "kind", "platform_id", "published_at", "first_seen_at", "raw")
# An export line carries the whole row.
_ITEM_COLUMNS = ITEM_COLUMNS
_SOURCE_REQUIRED = ("id", "owner_id", "platform", "name", "created_at", "updated_at")
_SOURCE_COLUMNS = (*_SOURCE_REQUIRED, "account_id", "status", "login_status")
_STATE_COLUMNS = (
    "source_id",
    "last_seq",
    "syncs",
    "items_received",
    "last_sync_at",
    "last_node_id",
    "last_mode",
)
Progress = Callable[[int], None]


class DataTransfer:
    def __init__(self, store: ItemStore) -> None:
        self.store = store

    async def count(self, source_id: str | None = None) -> int:
        counts, _ = await self.store.stats(None)
        return sum(int(r["n"]) for r in counts if source_id is None or r["source_id"] == source_id)

    async def lines(self, source_id: str | None = None) -> AsyncIterator[Row]:
        """Every export line, header first."""
        yield {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": time.time(),
            "account": source_id,
        }
        for s in await self.store.export_sources(source_id):
            yield {"type": "source", **s}
        for st in await self.store.sync_states(source_id):
            yield {"type": "sync_state", **st}
        after = 0
        while True:
            chunk = await self.store.export_chunk(source_id, after, CHUNK)
            if not chunk:
                return
            for r in chunk:
                yield {"type": "item", **r}
            after = chunk[-1]["id"]

    async def export_file(
        self, path: Path, source_id: str | None = None, progress: Progress | None = None
    ) -> int:
        """Write a ``.jsonl.gz`` file; returns the number of items written."""
        n = 0
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
            async for line in self.lines(source_id):
                out.write(dumps(line) + "\n")
                if line.get("type") == "item":
                    n += 1
                    if progress and n % 1000 == 0:
                        progress(1000)
        if progress:
            progress(n % 1000)
        return n

    async def import_lines(self, lines: Iterable[str], progress: Progress | None = None) -> Row:
        """Merge export lines into the database; returns counts. Bad lines are refused
        with their line number, and nothing of the chunk they are in is written."""
        it = iter(lines)
        header = _parse(next(it, ""), 1)
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise errors.InvalidInput(
                f"line 1: not a zhongshu items export "
                f"(expected format {FORMAT!r} version {VERSION})"
            )
        srcs: list[Row] = []
        states: list[Row] = []
        batch: list[Row] = []
        totals = {"items": 0, "inserted": 0, "updated": 0, "sources": 0}

        async def flush() -> None:
            inserted, updated = await self.store.import_rows(srcs, batch, states)
            totals["inserted"] += inserted
            totals["updated"] += updated
            totals["items"] += len(batch)
            totals["sources"] += len(srcs)
            if progress:
                progress(len(batch))
            srcs.clear()
            states.clear()
            batch.clear()

        for number, text in enumerate(it, start=2):
            if not text.strip():
                continue
            line = _parse(text, number)
            kind = line.pop("type", None)
            if kind == "item":
                batch.append(_item(line, number))
            elif kind == "source":
                srcs.append(_pick(line, _SOURCE_COLUMNS, _SOURCE_REQUIRED, number))
            elif kind == "sync_state":
                states.append(_pick(line, _STATE_COLUMNS, ("source_id",), number))
            else:
                raise errors.InvalidInput(f"line {number}: unknown line type {str(kind)[:30]!r}")
            if len(batch) >= CHUNK:
                await flush()
        await flush()
        return totals

    async def import_file(self, path: Path, progress: Progress | None = None) -> Row:
        opener = gzip.open if _is_gzip(path) else open
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            return await self.import_lines(f, progress)

    async def import_bytes(self, body: bytes) -> Row:
        """Import an uploaded export (gzip or plain JSON lines)."""
        if body[:2] == b"\x1f\x8b":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as exc:
                raise errors.InvalidInput(f"body: not a valid gzip file ({exc})") from exc
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.InvalidInput("body: not UTF-8 JSON lines") from exc
        return await self.import_lines(text.splitlines())


def gzip_stream(lines: AsyncIterator[Row]) -> AsyncIterator[bytes]:
    """Compress export lines on the fly (the HTTP export streams; nothing is buffered)."""
    import zlib

    async def gen() -> AsyncIterator[bytes]:
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        buf: list[str] = []
        async for line in lines:
            buf.append(dumps(line))
            if len(buf) >= 1000:
                yield z.compress(("\n".join(buf) + "\n").encode())
                buf.clear()
        if buf:
            yield z.compress(("\n".join(buf) + "\n").encode())
        yield z.flush()

    return gen()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _parse(text: str, number: int) -> Row:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(f"line {number}: not JSON ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise errors.InvalidInput(f"line {number}: must be a JSON object")
    return value


def _pick(line: Row, columns: Iterable[str], required: Iterable[str], number: int) -> Row:
    missing = [c for c in required if line.get(c) is None]
    if missing:
        raise errors.InvalidInput(f"line {number}: missing {', '.join(missing)}")
    return {c: line[c] for c in columns if c in line}


def _item(line: Row, number: int) -> Row:
    row = _pick(line, _ITEM_COLUMNS, _ITEM_REQUIRED, number)
    if row["kind"] not in KINDS:
        raise errors.InvalidInput(f"line {number}: unknown kind {str(row['kind'])[:30]!r}")
    row.setdefault("updated_at", row["first_seen_at"])
    row.setdefault("digest", "")
    if "id" in row and not (isinstance(row["id"], int) and row["id"] > 0):
        raise errors.InvalidInput(f"line {number}: id must be a positive integer")
    return row


def iter_file_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        yield from f

"""Every column that holds a sealed secret (services/secrets.py), in one list.

``zhongshu secrets rotate-key`` re-encrypts each of them with the first of
``encryption_keys``. An area that stores a sealed value adds its ``(table, key column,
sealed column)`` here — nothing else is needed for rotation to cover it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import schema
from zhongshu.db.engine import Database

SEALED_COLUMNS: list[tuple[Table, str, str]] = [
    # sources, proxies
    (schema.sources, "id", "credentials"),
    (schema.proxies, "id", "password"),
    # other areas: append (table, key column, sealed column) below
    # channels, AI providers, push tokens
    (schema.channels, "id", "secret"),
    (schema.channels, "id", "proxy"),
    (schema.ai_providers, "id", "api_key"),
    (schema.push_tokens, "user_id", "token"),
]


def _rotate_column(
    conn: Connection, table: Table, key: str, column: str, rotate: Callable[[str], str]
) -> int:
    k, c = table.c[key], table.c[column]
    rows = list(conn.execute(select(k, c).where(c.is_not(None))))
    for row_key, sealed in rows:
        if not sealed:
            continue
        conn.execute(update(table).where(k == row_key).values({column: rotate(sealed)}))
    return len(rows)


async def rotate_all(db: Database, rotate: Callable[[str], str]) -> dict[str, int]:
    """Re-encrypt every sealed value, one transaction per column; returns counts by
    ``table.column``. Safe to run twice: a value already under the newest key is simply
    re-encrypted again."""
    counts: dict[str, int] = {}
    for table, key, column in SEALED_COLUMNS:
        counts[f"{table.name}.{column}"] = await db.run_write(
            _rotate_column, table, key, column, rotate
        )
    return counts

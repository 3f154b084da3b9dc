"""Plain ``dict`` rows out of SQLAlchemy results, shared by the stores."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

Row = dict[str, Any]


def all_rows(conn: Connection, stmt: Any) -> list[Row]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


def first_row(conn: Connection, stmt: Any) -> Row | None:
    row = conn.execute(stmt).first()
    return dict(row._mapping) if row is not None else None


def page_rows(conn: Connection, page: Any, count: Any) -> tuple[list[Row], int]:
    """One page of rows and the total that ``count`` (a scalar select) reports."""
    return all_rows(conn, page), int(conn.scalar(count) or 0)

"""Plain ``dict`` rows out of SQLAlchemy results, shared by the stores."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

Row = dict[str, Any]


def all_rows(conn: Connection, stmt: Any) -> list[Row]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


def first_row(conn: Connection, stmt: Any) -> Row | None:
    row = conn.execute(stmt).first()
    return dict(row._mapping) if row is not None else None


def page_rows(conn: Connection, page: Any, count: Any) -> tuple[list[Row], int]:
    """One page of rows and the total that ``count`` (a scalar select) reports."""
    return all_rows(conn, page), int(conn.scalar(count) or 0)


def matching(table: Table, **equal: Any) -> list[ColumnElement[bool]]:
    """``column == value`` for each keyword whose value is not ``None`` (``None``: any),
    the filter every owner-scoped listing starts from."""
    return [table.c[name] == value for name, value in equal.items() if value is not None]


def newest_page(
    table: Table, where: list[ColumnElement[bool]], limit: int, offset: int
) -> tuple[Select[Any], Select[Any]]:
    """The statements for one page of ``table`` newest first, and the count of all rows
    matching ``where`` (give both to ``page_rows``). The id breaks ties in creation time,
    so pages never overlap or skip a row."""
    page = (
        select(table)
        .where(*where)
        .order_by(table.c.created_at.desc(), table.c.id)
        .limit(limit)
        .offset(offset)
    )
    return page, select(func.count()).select_from(table).where(*where)

"""SQL for users and their preferences."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.schema import api_keys, auth_sessions, refresh_tokens, user_preferences, users
from zhongshu.services.events import Event

Row = dict[str, Any]


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: Row, ev: Event) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(users).values(**row))
            await event_store.append(conn, [ev])

    async def get(self, user_id: str) -> Row | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
            return dict(row._mapping) if row else None

    async def by_username(self, username: str) -> Row | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
            return dict(row._mapping) if row else None

    async def count(self) -> int:
        async with self.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(users)) or 0)

    async def count_active_admins(self) -> int:
        async with self.db.read() as conn:
            return int(
                await conn.scalar(
                    select(func.count())
                    .select_from(users)
                    .where(users.c.role == "admin", users.c.disabled.is_(False))
                )
                or 0
            )

    async def list(
        self,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        query: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Row], int]:
        where = []
        if role:
            where.append(users.c.role == role)
        if disabled is not None:
            where.append(users.c.disabled.is_(disabled))
        if query:
            where.append(users.c.username.contains(query, autoescape=True))
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(users).where(*where).order_by(users.c.username).limit(limit).offset(offset)
            )
            total = await conn.scalar(select(func.count()).select_from(users).where(*where))
        return [dict(r._mapping) for r in rows], int(total or 0)

    async def update(
        self,
        user_id: str,
        values: Row,
        ev: Event | None = None,
        *,
        revoke_tokens: str | None = None,
    ) -> Row | None:
        """Change a user; with ``revoke_tokens`` (a reason) also bump ``token_version`` and
        end every session, in the same transaction, so old tokens stop working at once."""
        async with self.db.write() as conn:
            stmt = update(users).where(users.c.id == user_id).values(**values)
            if revoke_tokens:
                stmt = stmt.values(token_version=users.c.token_version + 1)
                await conn.execute(
                    update(auth_sessions)
                    .where(auth_sessions.c.user_id == user_id, auth_sessions.c.revoked_at.is_(None))
                    .values(revoked_at=values.get("updated_at"), revoked_reason=revoke_tokens)
                )
            row = (await conn.execute(stmt.returning(*users.c))).first()
            if row is not None and ev is not None:
                await event_store.append(conn, [ev])
            return dict(row._mapping) if row else None

    async def delete(self, user_id: str, ev: Event) -> bool:
        """Delete a user with their keys, sessions and preferences."""
        async with self.db.write() as conn:
            sessions = select(auth_sessions.c.id).where(auth_sessions.c.user_id == user_id)
            await conn.execute(
                delete(refresh_tokens).where(refresh_tokens.c.session_id.in_(sessions))
            )
            await conn.execute(delete(auth_sessions).where(auth_sessions.c.user_id == user_id))
            await conn.execute(delete(api_keys).where(api_keys.c.owner_id == user_id))
            await conn.execute(
                delete(user_preferences).where(user_preferences.c.user_id == user_id)
            )
            res = await conn.execute(delete(users).where(users.c.id == user_id))
            if res.rowcount:
                await event_store.append(conn, [ev])
            return bool(res.rowcount)

    async def preferences(self, user_id: str) -> Row:
        async with self.db.read() as conn:
            data = await conn.scalar(
                select(user_preferences.c.data).where(user_preferences.c.user_id == user_id)
            )
        return dict(data or {})

    async def set_preferences(self, user_id: str, data: Row, at: float) -> None:
        async with self.db.write() as conn:
            res = await conn.execute(
                update(user_preferences)
                .where(user_preferences.c.user_id == user_id)
                .values(data=data, updated_at=at)
            )
            if not res.rowcount:
                await conn.execute(
                    insert(user_preferences).values(user_id=user_id, data=data, updated_at=at)
                )

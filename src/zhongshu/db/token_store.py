"""SQL for login sessions and their rotating refresh tokens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db.engine import Database
from zhongshu.db.schema import auth_sessions, refresh_tokens, users

Row = dict[str, Any]


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_session(self, session: Row, refresh: Row) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(auth_sessions).values(**session))
            await conn.execute(insert(refresh_tokens).values(**refresh))

    async def user_and_session(
        self, user_id: str, session_id: str | None
    ) -> tuple[Row | None, Row | None]:
        """The user and (when ``session_id`` is given) the session, in one snapshot.

        On every authenticated request, so it runs as one read in one hop (``run_read``).
        """
        return await self.db.run_read(_user_and_session, user_id, session_id)

    async def rotate(self, token_hash: str, new_refresh: Row, now: float) -> tuple[str, Row | None]:
        """Exchange a refresh token for ``new_refresh`` in one transaction.

        Returns ``(outcome, session)``: ``"ok"``; ``"unknown"``; ``"reused"`` (the token was
        already exchanged — the whole session is revoked here); ``"expired"`` or
        ``"revoked"``. Claiming with ``WHERE rotated_at IS NULL`` makes two concurrent
        exchanges of one token end with exactly one winner.
        """
        async with self.db.write() as conn:
            old = (
                await conn.execute(
                    select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
                )
            ).first()
            if old is None:
                return "unknown", None
            sess_row = (
                await conn.execute(
                    select(auth_sessions).where(auth_sessions.c.id == old.session_id)
                )
            ).first()
            session = dict(sess_row._mapping) if sess_row else None
            if session is None or session["revoked_at"] is not None:
                return "revoked", session
            claimed = await conn.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.rotated_at.is_(None)
                )
                .values(rotated_at=now)
            )
            if not claimed.rowcount:
                await conn.execute(
                    update(auth_sessions)
                    .where(auth_sessions.c.id == old.session_id)
                    .values(revoked_at=now, revoked_reason="refresh token reused")
                )
                return "reused", session
            if old.expires_at <= now or session["expires_at"] <= now:
                return "expired", session
            await conn.execute(
                insert(refresh_tokens).values(**new_refresh, session_id=old.session_id)
            )
            await conn.execute(
                update(auth_sessions)
                .where(auth_sessions.c.id == old.session_id)
                .values(last_used_at=now)
            )
            return "ok", session

    async def revoke_session(self, session_id: str, now: float, reason: str) -> bool:
        async with self.db.write() as conn:
            res = await conn.execute(
                update(auth_sessions)
                .where(auth_sessions.c.id == session_id, auth_sessions.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
            )
            return bool(res.rowcount)

    async def revoke_user_sessions(self, user_id: str, now: float, reason: str) -> int:
        async with self.db.write() as conn:
            res = await conn.execute(
                update(auth_sessions)
                .where(auth_sessions.c.user_id == user_id, auth_sessions.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
            )
            return int(res.rowcount or 0)


def _user_and_session(
    conn: Connection, user_id: str, session_id: str | None
) -> tuple[Row | None, Row | None]:
    user = conn.execute(select(users).where(users.c.id == user_id)).first()
    session = None
    if session_id is not None:
        session = conn.execute(
            select(auth_sessions).where(auth_sessions.c.id == session_id)
        ).first()
    return (dict(user._mapping) if user else None, dict(session._mapping) if session else None)

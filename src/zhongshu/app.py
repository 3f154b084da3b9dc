"""ASGI assembly: FastAPI routers + the Socket.IO server, around one ``Hub``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import socketio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhongshu import __version__
from zhongshu.api import agent, auth, events, nodes, ops, tasks
from zhongshu.api import errors as api_errors
from zhongshu.config import Settings
from zhongshu.hub import Hub
from zhongshu.realtime import worker as worker_ns


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"request body is larger than {self.max_bytes} bytes (max_body_bytes)"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(settings: Settings, hub: Hub | None = None) -> Any:
    """Build the ASGI app. The hub's loops start and stop with the app's lifespan."""
    hub = hub or Hub.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    api = FastAPI(
        title="zhongshu (中枢)",
        version=__version__,
        description="A self-hosted hub for fleets of worker nodes.",
        lifespan=lifespan,
    )
    api.state.hub = hub
    api_errors.install(api)
    for module in (ops, auth, nodes, tasks, agent, events):
        api.include_router(module.router)

    sio = socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=[],
        max_http_buffer_size=16 * 1024 * 1024,
        logger=False,
        engineio_logger=False,
    )
    worker_ns.install(sio, hub)
    api.state.sio = sio
    asgi = socketio.ASGIApp(sio, other_asgi_app=BodySizeLimit(api, settings.max_body_bytes))
    asgi.hub = hub  # type: ignore[attr-defined]
    asgi.fastapi = api  # type: ignore[attr-defined]
    return asgi

"""ASGI assembly: FastAPI routers + the Socket.IO server, around one ``Hub``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import socketio
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhongshu import __version__
from zhongshu.api import (
    accounts,
    agent,
    ai_providers,
    api_keys,
    audit,
    auth,
    backups,
    channels,
    data,
    events,
    hiscrm_data,
    im,
    lifecycle,
    login_sessions,
    me,
    message_tasks,
    messages,
    nodes,
    notification_rules,
    ops,
    proxies,
    relay,
    schedules,
    sessions,
    sources,
    sync,
    tasks,
    users,
)
from zhongshu.api import deps as api_deps
from zhongshu.api import errors as api_errors
from zhongshu.api import (
    settings as settings_api,
)
from zhongshu.config import Settings
from zhongshu.hub import Hub
from zhongshu.realtime import admin as admin_ns
from zhongshu.realtime import client as client_ns
from zhongshu.realtime import worker as worker_ns
from zhongshu.realtime import worker_data as worker_data_ns
from zhongshu.realtime import worker_sources as worker_sources_ns
from zhongshu.realtime.presence import RedisPresence

ROUTERS = (
    # core: ops, identity, nodes, the queue and its worker door
    ops,
    auth,
    sessions,
    me,
    users,
    api_keys,
    audit,
    events,
    nodes,
    tasks,
    agent,
    relay,
    # sources, QR login, schedules, message tasks, worker lifecycle (HisCRM, WeRSS)
    sources,
    accounts,
    proxies,
    login_sessions,
    schedules,
    message_tasks,
    lifecycle,
    # collected data and the IM API
    sync,
    im,
    hiscrm_data,
    data,
    # messages, channels, push (MessagePusher)
    channels,
    messages,
    ai_providers,
    notification_rules,
    # operations: backups, runtime settings
    backups,
    settings_api,
)


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
        if declared is not None:
            # The server never delivers more than the declared length, so checking it is enough.
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # Chunked: read up to the limit before the app sees anything, then replay.
        buffered: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

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


def create_app(settings: Settings, hub: Hub | None = None) -> Any:
    """Build the ASGI app. The hub's loops start and stop with the app's lifespan."""
    hub = hub or Hub.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        presence_loop = asyncio.create_task(presence.run()) if presence else None
        try:
            yield
        finally:
            if presence_loop is not None:
                presence_loop.cancel()
                await presence.close()  # type: ignore[union-attr]
            await hub.stop()

    api = FastAPI(
        title="zhongshu (中枢)",
        version=__version__,
        description="A self-hosted hub for fleets of worker nodes.",
        lifespan=lifespan,
        # Every route's policy (services/policy.py) is enforced before its handler runs.
        dependencies=[Depends(api_deps.authorize)],
    )
    api.state.hub = hub
    api_errors.install(api)
    for module in ROUTERS:
        api.include_router(module.router)

    presence = None
    client_manager = None
    if settings.redis_url:
        # Replicas: emits reach clients connected to any replica (docs/architecture.md).
        client_manager = socketio.AsyncRedisManager(
            settings.redis_url, channel=f"{settings.redis_prefix}socketio"
        )
        presence = RedisPresence(
            hub.redis,
            settings.redis_prefix,
            settings.instance_id(),
            stale_after_s=settings.offline_after_s,
        )
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=client_manager,
        cors_allowed_origins=[],
        max_http_buffer_size=16 * 1024 * 1024,
        logger=False,
        engineio_logger=False,
    )
    conns = worker_ns.install(sio, hub, presence)
    api.state.worker_connections = conns
    api.state.source_sender = worker_sources_ns.install(sio, hub, conns)
    api.state.admin_sender = admin_ns.install(sio, hub, conns)
    worker_data_ns.install(sio, hub, conns)
    client_ns.install(sio, hub, conns)
    api.state.sio = sio
    asgi = socketio.ASGIApp(sio, other_asgi_app=BodySizeLimit(api, settings.max_body_bytes))
    asgi.hub = hub  # type: ignore[attr-defined]
    asgi.fastapi = api  # type: ignore[attr-defined]
    return asgi

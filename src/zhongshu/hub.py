"""The ``Hub``: every service wired together, once, from settings.

The app factory, the CLI and tests build one ``Hub``; routers and socket handlers get it
from the app state. Nothing below reads settings itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from zhongshu import errors
from zhongshu.config import Settings
from zhongshu.db.api_key_store import ApiKeyStore
from zhongshu.db.audit_store import AuditStore
from zhongshu.db.engine import Database
from zhongshu.db.event_store import EventStore
from zhongshu.db.node_store import NodeStore
from zhongshu.db.task_store import TaskStore
from zhongshu.db.token_store import TokenStore
from zhongshu.db.user_store import UserStore
from zhongshu.services.agent import AgentService
from zhongshu.services.api_keys import ApiKeyService
from zhongshu.services.audit import AuditService
from zhongshu.services.callbacks import CallbackSender
from zhongshu.services.dispatcher import Dispatcher
from zhongshu.services.events import EventBus
from zhongshu.services.identity import IdentityService
from zhongshu.services.metrics import Metrics
from zhongshu.services.nodes import NodeService
from zhongshu.services.ratelimit import FailureLimiter, LockoutPolicy
from zhongshu.services.reaper import Reaper
from zhongshu.services.relay import RelayService
from zhongshu.services.tasks import QueuePolicy, TaskService

log = logging.getLogger("zhongshu.hub")


@dataclass
class Hub:
    settings: Settings
    db: Database
    bus: EventBus
    identity: IdentityService
    nodes: NodeService
    tasks: TaskService
    events: EventStore
    dispatcher: Dispatcher
    reaper: Reaper
    callbacks: CallbackSender
    metrics: Metrics
    agent: AgentService
    audit: AuditService
    api_keys: ApiKeyService
    limiter: FailureLimiter
    relay: RelayService
    _loops: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Hub:
        db = Database(
            settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        bus = EventBus()
        task_store = TaskStore(db)
        node_store = NodeStore(db)
        if settings.env == "production" and settings.relay_enabled and not settings.relay_keys():
            raise errors.ConfigError("relay_enabled is true but relay_api_keys is empty")
        audit = AuditService(AuditStore(db), bus)
        limiter = _failure_limiter(settings)
        identity = IdentityService(
            UserStore(db),
            bus,
            settings.signing_key(),
            settings.access_token_ttl_s,
            refresh_token_ttl_s=settings.refresh_token_ttl_s,
            confirm_token_ttl_s=settings.confirm_token_ttl_s,
            tokens=TokenStore(db),
            limiter=limiter,
            audit=audit,
        )
        nodes = NodeService(node_store, bus)
        tasks = TaskService(
            task_store,
            bus,
            QueuePolicy(
                default_max_attempts=settings.task_default_max_attempts,
                default_timeout_s=settings.task_default_timeout_s,
                lease_grace_s=settings.task_lease_grace_s,
                retry_base_s=settings.retry_base_s,
                retry_cap_s=settings.retry_cap_s,
            ),
        )
        dispatcher = Dispatcher(tasks, bus, batch=settings.dispatch_batch)
        events = EventStore(db)
        return cls(
            settings=settings,
            db=db,
            bus=bus,
            identity=identity,
            nodes=nodes,
            tasks=tasks,
            events=events,
            dispatcher=dispatcher,
            reaper=Reaper(
                nodes,
                tasks,
                interval_s=settings.reaper_interval_s,
                offline_after_s=settings.offline_after_s,
            ),
            callbacks=CallbackSender(
                task_store,
                bus,
                settings.webhook_secret(),
                max_attempts=settings.callback_max_attempts,
                timeout_s=settings.callback_timeout_s,
                retry_base_s=settings.callback_retry_base_s,
            ),
            metrics=Metrics(bus, task_store, node_store),
            agent=AgentService(
                nodes,
                tasks,
                dispatcher,
                heartbeat_interval_s=settings.heartbeat_interval_s,
                offline_after_s=settings.offline_after_s,
            ),
            audit=audit,
            api_keys=ApiKeyService(ApiKeyStore(db), bus, limiter, audit),
            limiter=limiter,
            relay=RelayService(tasks, task_store, events, bus),
        )

    async def start(self) -> None:
        await self.db.migrate()
        if await self.identity.user_count() == 0:
            log.warning(
                "no users yet: create the first admin with "
                "`zhongshu init --admin-user NAME --admin-password …`"
            )
        for name, coro in (
            ("dispatcher", self.dispatcher.run()),
            ("reaper", self.reaper.run()),
            ("callbacks", self.callbacks.run()),
        ):
            self._loops.append(asyncio.create_task(coro, name=f"zhongshu-{name}"))

    async def stop(self) -> None:
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._loops.clear()
        await self.audit.flush()
        await self.db.dispose()


def _failure_limiter(settings: Settings) -> FailureLimiter:
    per_subject = LockoutPolicy(
        max_failures=settings.auth_max_failures,
        window_s=settings.auth_failure_window_s,
        base_s=settings.auth_lockout_base_s,
        cap_s=settings.auth_lockout_cap_s,
    )
    per_ip = LockoutPolicy(
        max_failures=settings.auth_ip_max_failures,
        window_s=settings.auth_failure_window_s,
        base_s=settings.auth_lockout_base_s,
        cap_s=settings.auth_lockout_cap_s,
    )
    return FailureLimiter({"*": per_subject, "ip": per_ip})

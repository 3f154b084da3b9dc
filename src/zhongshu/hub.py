"""The ``Hub``: every service wired together, once, from settings.

The app factory, the CLI and tests build one ``Hub``; routers and socket handlers get it
from the app state. Nothing below reads settings itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zhongshu import errors
from zhongshu.config import Settings
from zhongshu.db.api_key_store import ApiKeyStore
from zhongshu.db.audit_store import AuditStore
from zhongshu.db.backup_store import BackupStore
from zhongshu.db.channel_store import ChannelStore
from zhongshu.db.engine import Database
from zhongshu.db.event_store import EventStore
from zhongshu.db.hub_lock import HubLock, HubLockBusy
from zhongshu.db.item_store import ItemStore
from zhongshu.db.lifecycle_store import LifecycleStore
from zhongshu.db.login_session_store import LoginSessionStore
from zhongshu.db.message_store import MessageStore
from zhongshu.db.message_task_store import MessageTaskStore
from zhongshu.db.node_store import NodeStore
from zhongshu.db.notification_store import NotificationStore
from zhongshu.db.proxy_store import ProxyStore
from zhongshu.db.routing_store import RoutingStore
from zhongshu.db.schedule_store import ScheduleStore
from zhongshu.db.settings_store import SettingsStore
from zhongshu.db.source_store import SourceStore
from zhongshu.db.task_store import TaskStore
from zhongshu.db.token_store import TokenStore
from zhongshu.db.user_store import UserStore
from zhongshu.services.agent import AgentService
from zhongshu.services.ai import AiService
from zhongshu.services.alerts import AlertService
from zhongshu.services.api_keys import ApiKeyService
from zhongshu.services.assignment import AssignmentService
from zhongshu.services.audit import AuditService
from zhongshu.services.backup import BackupService
from zhongshu.services.callbacks import CallbackSender
from zhongshu.services.channels import ChannelService
from zhongshu.services.data_transfer import DataTransfer
from zhongshu.services.dispatcher import Dispatcher
from zhongshu.services.events import EventBus
from zhongshu.services.executor import EmbeddedExecutor
from zhongshu.services.identity import IdentityService
from zhongshu.services.im import ImService
from zhongshu.services.lifecycle import WorkerSupervisor
from zhongshu.services.login_sessions import LoginService
from zhongshu.services.message_tasks import MessageTaskService
from zhongshu.services.messages import MessageService
from zhongshu.services.metrics import Metrics
from zhongshu.services.monitor import MonitorScheduler
from zhongshu.services.nodes import NodeService
from zhongshu.services.notifications import NotificationService
from zhongshu.services.pipeline import Pipeline, PipelineConfig, StageLimits, hub_addresses
from zhongshu.services.proxies import ProxyService
from zhongshu.services.ratelimit import FailureLimiter, LockoutPolicy
from zhongshu.services.ratelimit_redis import RedisFailureSync
from zhongshu.services.reaper import Reaper
from zhongshu.services.relay import RelayService
from zhongshu.services.retention import RetentionService
from zhongshu.services.routing import RoutingService
from zhongshu.services.runtime_settings import RuntimeSettings
from zhongshu.services.schedules import ScheduleService
from zhongshu.services.secrets import SecretBox
from zhongshu.services.sources import SourceService
from zhongshu.services.sync import SyncService
from zhongshu.services.tasks import QueuePolicy, TaskService
from zhongshu.services.templates import TemplateRenderer

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
    secrets: SecretBox
    executor: EmbeddedExecutor
    # sources, assignment, login sessions
    sources: SourceService
    proxies: ProxyService
    assignment: AssignmentService
    monitor: MonitorScheduler
    logins: LoginService
    # schedules, message tasks, worker lifecycle
    schedules: ScheduleService
    message_tasks: MessageTaskService
    lifecycle: WorkerSupervisor
    # messages, channels, pipeline, routing
    channels: ChannelService
    ai: AiService
    pipeline: Pipeline
    messages: MessageService
    routing: RoutingService
    alerts: AlertService
    # collected data and IM API
    items: ItemStore
    sync: SyncService
    im: ImService
    notifications: NotificationService
    data_transfer: DataTransfer
    retention: RetentionService
    # backups
    backups: BackupService
    # settings an admin may change while the hub runs
    runtime: RuntimeSettings
    # With Redis (several replicas): one client for the process, and lockouts shared.
    redis: Any = None
    limiter_sync: RedisFailureSync | None = None
    templates: TemplateRenderer | None = None
    # Held (shared) while the hub runs, so ``zhongshu restore`` can tell (db/hub_lock.py).
    in_use: HubLock | None = None
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
        secrets_box = SecretBox(settings.fernet_keys())
        executor = EmbeddedExecutor(
            tasks, dispatcher, f"hub-{settings.instance_id()}", capacity=settings.executor_capacity
        )
        # sources, assignment, login sessions
        source_store = SourceStore(db)
        proxies = ProxyService(ProxyStore(db), bus, secrets_box)
        sources = SourceService(
            source_store,
            bus,
            secrets_box,
            proxies,
            known_platforms=settings.known_platforms,
            login_valid_s=settings.login_valid_s,
        )
        assignment = AssignmentService(source_store, nodes, bus, tick_s=settings.assignment_tick_s)
        sources.assignment = assignment
        logins = LoginService(
            LoginSessionStore(db),
            source_store,
            sources,
            nodes,
            bus,
            session_ttl_s=settings.login_session_ttl_s,
            login_valid_s=settings.login_valid_s,
            watch_interval_s=settings.login_watch_interval_s,
        )
        monitor = MonitorScheduler(source_store, tasks, proxies, tick_s=settings.monitor_tick_s)
        # schedules, message tasks, worker lifecycle
        schedules = ScheduleService(
            ScheduleStore(db),
            tasks,
            bus,
            tick_s=settings.schedule_tick_s,
            default_timezone=settings.schedule_default_timezone,
        )
        templates = TemplateRenderer(
            timeout_s=settings.template_timeout_s, memory_mb=settings.template_memory_mb
        )
        message_tasks = MessageTaskService(
            MessageTaskStore(db),
            executor,
            bus,
            secrets_box,
            templates,
            default_timezone=settings.schedule_default_timezone,
            max_attempts=settings.message_task_max_attempts,
            timeout_s=settings.message_task_timeout_s,
        )
        message_tasks.register()
        message_tasks.on_change.append(schedules.wake)
        schedules.add_participant(message_tasks)
        lifecycle = WorkerSupervisor(
            LifecycleStore(db),
            nodes,
            secrets_box,
            bus,
            settings.worker_profiles,
            hub_url=settings.lifecycle_hub_url
            or "http://{}:{}".format(
                "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host,
                settings.port,
            ),
            work_dir=settings.data_dir / "workers",
            max_restarts=settings.lifecycle_max_restarts,
            restart_base_s=settings.lifecycle_restart_base_s,
            restart_cap_s=settings.lifecycle_restart_cap_s,
            stable_after_s=settings.lifecycle_stable_after_s,
            stop_grace_s=settings.lifecycle_stop_grace_s,
        )
        # messages, channels, pipeline, routing
        channel_store = ChannelStore(db)
        channels = ChannelService(
            channel_store, secrets_box, templates, send_timeout_s=settings.messages_send_timeout_s
        )
        ai = AiService(
            channel_store, secrets_box, templates, timeout_s=settings.messages_ai_timeout_s
        )
        message_store = MessageStore(db)
        public_url = settings.public_url or f"http://{settings.host}:{settings.port}"
        pipeline = Pipeline(
            message_store,
            channel_store,
            channels,
            ai,
            executor,
            bus,
            PipelineConfig(
                data_dir=settings.data_dir,
                view_base_url=public_url,
                max_attempts=settings.messages_max_attempts,
                fetch=StageLimits(
                    settings.messages_fetch_priority,
                    settings.messages_fetch_concurrency,
                    settings.messages_fetch_timeout_s,
                ),
                ai=StageLimits(
                    settings.messages_ai_priority,
                    settings.messages_ai_concurrency,
                    settings.messages_ai_timeout_s,
                ),
                deliver=StageLimits(
                    settings.messages_deliver_priority,
                    settings.messages_deliver_concurrency,
                    settings.messages_send_timeout_s,
                ),
                fetch_max_bytes=settings.messages_fetch_max_bytes,
                hub_addresses=hub_addresses(settings.host, settings.port, public_url),
            ),
        )
        messages = MessageService(
            message_store,
            channels,
            ai,
            pipeline,
            identity,
            limiter,
            secrets_box,
            bus,
            max_content_chars=settings.messages_max_content_chars,
        )
        routing = RoutingService(
            RoutingStore(db),
            messages,
            channels,
            identity,
            tasks,
            bus,
            tick_s=settings.routing_tick_s,
        )
        alerts = AlertService(
            bus,
            events,
            data_dir=settings.data_dir,
            min_interval_s=settings.alerts_min_interval_s,
            window_s=settings.alerts_window_s,
            dead_threshold=settings.alerts_dead_task_threshold,
            error_threshold=settings.alerts_error_threshold,
            disk_free_ratio=settings.alerts_disk_free_ratio,
            check_interval_s=settings.alerts_check_interval_s,
        )
        # collected data and IM API
        item_store = ItemStore(db)
        redis_client = _redis_client(settings.redis_url) if settings.redis_url else None
        runtime = _runtime_settings(
            SettingsStore(db), bus, settings, monitor, assignment, schedules, routing, alerts
        )
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
            secrets=secrets_box,
            executor=executor,
            # sources, assignment, login sessions
            sources=sources,
            proxies=proxies,
            assignment=assignment,
            monitor=monitor,
            logins=logins,
            # schedules, message tasks, worker lifecycle
            schedules=schedules,
            message_tasks=message_tasks,
            lifecycle=lifecycle,
            # messages, channels, pipeline, routing
            channels=channels,
            ai=ai,
            pipeline=pipeline,
            messages=messages,
            routing=routing,
            alerts=alerts,
            # collected data and IM API
            items=item_store,
            sync=SyncService(
                item_store,
                bus,
                max_items=settings.im_sync_max_items,
                max_item_bytes=settings.im_sync_max_item_bytes,
            ),
            im=ImService(item_store),
            notifications=NotificationService(NotificationStore(db), bus),
            data_transfer=DataTransfer(item_store),
            retention=RetentionService(
                item_store,
                settings.im_retention_days,
                interval_s=settings.im_retention_interval_s,
            ),
            # backups
            backups=BackupService(
                BackupStore(db),
                events,
                bus,
                settings.data_dir / "backups",
                keep=settings.backup_keep,
            ),
            runtime=runtime,
            templates=templates,
            redis=redis_client,
            limiter_sync=(
                RedisFailureSync(limiter, redis_client, settings.redis_prefix)
                if redis_client is not None
                else None
            ),
        )

    async def start(self) -> None:
        self.in_use = HubLock(self.db)
        try:
            await self.in_use.acquire()
        except HubLockBusy as exc:
            raise errors.Conflict(
                "a restore is replacing this database right now; start the hub when it has finished"
            ) from exc
        await self.db.migrate()
        await self.runtime.load()
        if await self.identity.user_count() == 0:
            log.warning(
                "no users yet: create the first admin with "
                "`zhongshu init --admin-user NAME --admin-password …`"
            )
        await self.executor.start()
        for name, coro in (
            ("dispatcher", self.dispatcher.run()),
            ("reaper", self.reaper.run()),
            ("callbacks", self.callbacks.run()),
            # sources, schedules, messages, collected data
            ("messages-resume", self.pipeline.run()),
            ("routing", self.routing.run()),
            ("alerts", self.alerts.run()),
            ("assignment", self.assignment.run()),
            ("monitor", self.monitor.run()),
            ("logins", self.logins.run()),
            ("schedules", self.schedules.run()),
            ("lifecycle", self.lifecycle.run()),
            ("retention", self.retention.run()),
        ):
            self._loops.append(asyncio.create_task(coro, name=f"zhongshu-{name}"))
        if self.limiter_sync is not None:
            self._loops.append(
                asyncio.create_task(self.limiter_sync.run(), name="zhongshu-lockout-sync")
            )

    async def stop(self) -> None:
        await self.executor.stop()
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._loops.clear()
        # what needs the database to shut down cleanly goes before it closes
        await self.pipeline.stop()
        await self.lifecycle.shutdown()
        if self.templates is not None:
            await self.templates.close()
        await self.audit.flush()
        if self.limiter_sync is not None:
            await self.limiter_sync.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.in_use is not None:
            await self.in_use.release()
        await self.db.dispose()


def _redis_client(url: str) -> Any:
    import redis.asyncio as redis

    return redis.from_url(url)


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


def _runtime_settings(
    store: SettingsStore,
    bus: EventBus,
    settings: Settings,
    monitor: MonitorScheduler,
    assignment: AssignmentService,
    schedules: ScheduleService,
    routing: RoutingService,
    alerts: AlertService,
) -> RuntimeSettings:
    """The knobs that may change live, each with what applies it."""
    runtime = RuntimeSettings(store, bus, settings)

    def log_level(value: str) -> None:
        logging.getLogger("zhongshu").setLevel(value)

    def attr(target: object, name: str) -> Callable[[Any], None]:
        return lambda value: setattr(target, name, value)

    runtime.tunable("log_level", log_level)
    runtime.tunable("monitor_tick_s", attr(monitor, "tick_s"))
    runtime.tunable("assignment_tick_s", attr(assignment, "tick_s"))
    runtime.tunable("schedule_tick_s", attr(schedules, "tick_s"))
    runtime.tunable("routing_tick_s", attr(routing, "tick_s"))
    runtime.tunable("alerts_min_interval_s", attr(alerts, "min_interval_s"))
    runtime.tunable("alerts_dead_task_threshold", attr(alerts, "dead_threshold"))
    runtime.tunable("alerts_error_threshold", attr(alerts, "error_threshold"))
    runtime.tunable("alerts_disk_free_ratio", attr(alerts, "disk_free_ratio"))
    return runtime

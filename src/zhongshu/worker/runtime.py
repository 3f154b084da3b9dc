"""The ``Worker``: runs the tasks the hub leases to this node and reports their results.

The worker owns what is independent of the wire: the running tasks, the concurrency bound,
the journal and the batching of results. A transport (``transports.py``: Socket.IO push or
HTTP pull) owns the connection and calls back ``assign``, ``revoke``, ``on_registered`` and
``flush_outbox``.

Hot path, per task: one ``asyncio.Task``; per loop tick: one journal transaction and one
``worker:task:result`` call for every result finished in that tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

import zhongshu
from zhongshu.worker import errors
from zhongshu.worker.journal import Journal, Result
from zhongshu.worker.link import HubLink
from zhongshu.worker.registry import HandlerRegistry, TaskContext, invoke

if TYPE_CHECKING:
    from zhongshu.worker.transports import Transport

logger = logging.getLogger("zhongshu.worker")

MAX_RESULTS_PER_CALL = 500


@dataclass(slots=True)
class _Run:
    """A task this worker holds: its lease and the asyncio task running it."""

    task_id: Any
    lease_token: Any
    kind: str
    payload: dict[str, Any]
    timeout_s: float | None
    ctx: TaskContext
    task: asyncio.Task[None] | None = None
    # Revoked or cancelled at shutdown: its outcome must not be reported.
    dropped: bool = False


@dataclass(slots=True)
class WorkerStats:
    """Counters logged at shutdown and sent (partly) with every heartbeat."""

    succeeded: int = 0
    failed: int = 0
    resent: int = 0
    revoked: int = 0
    refused: int = 0
    cancelled: int = 0
    acked: int = 0
    rejected: int = 0
    started_at: float = field(default_factory=time.time)

    @property
    def completed(self) -> int:
        return self.succeeded + self.failed


class Worker:
    """A worker node process.

    Parameters
    ----------
    hub_url
        Base URL of the hub, e.g. ``http://127.0.0.1:8001``.
    key, secret
        The node's ``CN…``/``CS…`` credentials (the secret is never logged).
    journal_path
        The SQLite journal file; one per node key, kept across restarts.
    registry
        The handlers; ``HandlerRegistry.from_config()`` when omitted.
    capabilities
        Advertised on top of every kind the registry can run.
    concurrency
        How many tasks run at once (advertised as ``capacity``).
    transport
        ``"socketio"`` (push, default) or ``"http"`` (long-poll pull).
    grace_s
        At shutdown, how long running tasks may finish before they are cancelled.
    reconnect_max_s
        Ceiling of the exponential reconnect backoff.
    result_linger_s
        How long a finished result waits for others to share its batch.
    report_fast_starts
        Send ``worker:task:started`` also for tasks whose result goes out in the same
        batch. ``False`` saves the hub one write per short task, but then the hub never
        sees those tasks as ``running``.
    """

    def __init__(
        self,
        hub_url: str,
        key: str,
        secret: str,
        *,
        journal_path: str | Path,
        registry: HandlerRegistry | None = None,
        capabilities: Iterable[str] = (),
        concurrency: int = 8,
        transport: str = "socketio",
        grace_s: float = 30.0,
        reconnect_max_s: float = 10.0,
        result_linger_s: float = 0.0,
        max_inflight_batches: int = 8,
        http_wait_s: float = 20.0,
        report_fast_starts: bool = False,
    ) -> None:
        assert concurrency >= 1, "concurrency must be at least 1"
        assert transport in ("socketio", "http"), f"unknown transport {transport!r}"
        self.hub_url = hub_url.rstrip("/")
        self.key = key
        self._secret = secret
        self.journal_path = Path(journal_path)
        self.registry = registry if registry is not None else HandlerRegistry.from_config()
        self.capabilities = sorted(set(capabilities) | set(self.registry.kinds))
        self.concurrency = concurrency
        self.transport_name = transport
        self.grace_s = grace_s
        self.reconnect_max_s = reconnect_max_s
        self.result_linger_s = result_linger_s
        self.http_wait_s = http_wait_s
        self.report_fast_starts = report_fast_starts
        self.node_id = ""
        self.heartbeat_interval_s = 10.0
        self.stats = WorkerStats()

        self.journal: Journal | None = None
        self._running: dict[Any, _Run] = {}
        self._sem = asyncio.Semaphore(concurrency)
        # Leases this worker will not finish (shutdown): released to the hub at the end.
        self._handback: list[dict[str, Any]] = []
        self._started: list[dict[str, Any]] = []
        self._outgoing: list[Result] = []
        # Finished but not journaled yet (this tick): a re-lease must find them too.
        self._unjournaled: dict[Any, Result] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._inflight = asyncio.Semaphore(max_inflight_batches)
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._stopping = False
        self._process = psutil.Process()
        self._transport: Transport | None = None
        # Accounts (sources) the hub assigned, by id, with their credentials: memory only.
        self.accounts: dict[str, dict[str, Any]] = {}
        self._logins: dict[str, asyncio.Task[None]] = {}

    # -- lifecycle -------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once shutdown began: no new task is taken."""
        return self._stopping

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def transport(self) -> Transport:
        assert self._transport is not None, "the worker is not running"
        return self._transport

    def request_stop(self) -> None:
        """Begin a graceful shutdown; a second call cancels running tasks at once.

        Safe to call from a signal handler.
        """
        if self._stop.is_set():
            if not self._force.is_set():
                logger.info("second stop request: cancelling running tasks now")
            self._force.set()
            return
        logger.info("stop requested; finishing running tasks (grace %gs)", self.grace_s)
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT → ``request_stop`` (the second one skips the grace period)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run(self) -> None:
        """Connect, run tasks until ``request_stop``, then shut down in steps."""
        from zhongshu.worker import transports

        self.journal = Journal(self.journal_path)
        pending = self.journal.pending_count()
        logger.info(
            "worker starting: hub=%s key=%s transport=%s concurrency=%d capabilities=%s "
            "journal=%s (%d results to re-send)",
            self.hub_url,
            self.key,
            self.transport_name,
            self.concurrency,
            ",".join(self.capabilities),
            self.journal_path,
            pending,
        )
        self._transport = transports.create(self.transport_name, self, self._secret)
        flusher = asyncio.create_task(self._flush_loop(), name="zhongshu-worker-flush")
        connection = asyncio.create_task(self.transport.run(), name="zhongshu-worker-link")
        try:
            await self._wait_stop_or(connection)
        finally:
            await self._shutdown(flusher, connection)

    async def _wait_stop_or(self, connection: asyncio.Task[None]) -> None:
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({stop, connection}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if connection in done and not self._stop.is_set():
            connection.result()  # a transport that ends on its own has failed: raise it

    async def _shutdown(self, flusher: asyncio.Task[None], connection: asyncio.Task[None]) -> None:
        self._stopping = True
        self._slot_free.set()
        await self._hand_back(announce=True)  # "send me nothing new" before the grace period
        finished, cancelled = await self._finish_running()
        await self._drain(timeout_s=10.0)
        await self._hand_back()
        # The flusher and the link loop only end by cancellation.
        flusher.cancel()
        await self.transport.close()
        connection.cancel()
        await asyncio.gather(flusher, connection, return_exceptions=True)
        left = 0
        if self.journal is not None:
            left = self.journal.pending_count()
            self.journal.close()
            self.journal = None
        s = self.stats
        logger.info(
            "worker stopped: %d succeeded, %d failed, %d re-sent from journal, %d revoked, "
            "%d finished during grace, %d cancelled at shutdown, %d refused while stopping, "
            "%d results left in the journal",
            s.succeeded,
            s.failed,
            s.resent,
            s.revoked,
            finished,
            cancelled,
            s.refused,
            left,
        )

    async def _hand_back(self, announce: bool = False) -> None:
        """Tell the hub which leases this worker will not finish, so they run elsewhere now
        instead of after the node's offline timeout (and, first, that it is draining)."""
        from zhongshu.worker import transports

        items, self._handback = self._handback, []
        if not items and not announce:
            return
        if not self.transport.connected:
            self._handback = items
            return
        try:
            async with asyncio.timeout(2.0):
                await self.transport.send_release(items)
            if items:
                logger.info("handed %d unfinished tasks back to the hub", len(items))
        except (TimeoutError, transports.HubUnavailable, OSError) as exc:
            logger.warning(
                "could not hand back %d tasks (%s); the hub re-queues them when this node "
                "goes offline",
                len(items),
                exc,
            )

    async def _finish_running(self) -> tuple[int, int]:
        tasks = [run.task for run in self._running.values() if run.task]
        if not tasks:
            return 0, 0
        logger.info("waiting up to %gs for %d running tasks", self.grace_s, len(tasks))
        force = asyncio.create_task(self._force.wait())
        waiters: list[asyncio.Future[Any]] = [force, asyncio.gather(*tasks, return_exceptions=True)]
        await asyncio.wait(waiters, timeout=self.grace_s, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        done = {t for t in tasks if t.done()}
        pending = set(tasks) - done
        self._handback.extend(
            {"task_id": run.task_id, "lease_token": run.lease_token}
            for run in self._running.values()
            if run.task in pending
        )
        for run in list(self._running.values()):
            self._drop(run)
        await asyncio.gather(*pending, return_exceptions=True)
        self.stats.cancelled += len(pending)
        return len(done), len(pending)

    # -- what the transport calls ------------------------------------------------------

    def registration(self) -> dict[str, Any]:
        """The ``worker:register`` body."""
        return {
            "capabilities": self.capabilities,
            "capacity": self.concurrency,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": zhongshu.__version__,
        }

    def on_registered(self, ack: dict[str, Any]) -> None:
        """Remember what the hub answered to ``worker:register``."""
        self.node_id = str(ack.get("node_id") or "")
        interval_s = ack.get("heartbeat_interval_s")
        if isinstance(interval_s, int | float) and interval_s > 0:
            self.heartbeat_interval_s = float(interval_s)
        offline_s = ack.get("offline_after_s")
        if isinstance(offline_s, int | float) and offline_s > 0 and self._transport is not None:
            # Reconnect well within the hub's offline timeout, so a restarted hub finds us
            # back before it would take our leases.
            self._transport.backoff.max_s = min(self.reconnect_max_s, offline_s / 2)
        logger.info(
            "registered as node %s (heartbeat every %gs, %d running, %d results to re-send)",
            self.node_id,
            self.heartbeat_interval_s,
            len(self._running),
            self.journal.pending_count() if self.journal else 0,
        )

    def heartbeat(self) -> dict[str, Any]:
        """The ``worker:heartbeat`` body: load stats and the leases this worker holds."""
        return {
            "stats": {
                "cpu": psutil.cpu_percent(None),
                "memory": psutil.virtual_memory().percent,
                "rss_bytes": self._process.memory_info().rss,
                "running": len(self._running),
                "completed": self.stats.completed,
                "succeeded": self.stats.succeeded,
                "failed": self.stats.failed,
                "outbox": len(self._outgoing)
                + (self.journal.pending_count() if self.journal else 0),
            },
            "timestamp": time.time(),
            "running": [
                {"task_id": run.task_id, "lease_token": run.lease_token}
                for run in self._running.values()
            ],
        }

    def assign(self, leases: list[dict[str, Any]]) -> None:
        """Take leased tasks: run new ones, re-send journaled results of known ones."""
        if self._stopping:
            # Not started: handed back to the hub at shutdown so it can lease them elsewhere.
            self.stats.refused += len(leases)
            self._handback.extend(
                {"task_id": lease.get("id"), "lease_token": lease.get("lease_token")}
                for lease in leases
                if "id" in lease
            )
            return
        fresh: list[dict[str, Any]] = []
        for lease in leases:
            run = self._running.get(lease.get("id"))
            if run is not None:
                # Leased again while running here (a lost ack, a reconnect): report under
                # the newest token, which is the only one the hub accepts.
                run.lease_token = run.ctx.lease_token = lease.get("lease_token")
            elif "id" in lease:
                fresh.append(lease)
            else:
                logger.warning("ignoring a lease without an id: %r", lease)
        if fresh:
            self._start_fresh(fresh)

    def _start_fresh(self, leases: list[dict[str, Any]]) -> None:
        assert self.journal is not None
        ids = [lease["id"] for lease in leases]
        known = {tid: self._unjournaled[tid] for tid in ids if tid in self._unjournaled}
        maybe = [tid for tid in ids if tid not in known and self.journal.knows(tid)]
        if maybe:
            known.update(self.journal.lookup(maybe))
        retry: list[Any] = []
        for lease in leases:
            previous = known.get(lease["id"])
            if previous is not None and previous.final:
                self.stats.resent += 1
                self._queue_result(previous.with_token(lease.get("lease_token")))
                continue
            if previous is not None:
                retry.append(lease["id"])
            self._start(lease)
        if retry:
            self.journal.discard(retry)

    def _start(self, lease: dict[str, Any]) -> None:
        task_id = lease["id"]
        timeout_s = lease.get("timeout_s")
        ctx = TaskContext(
            task_id=task_id,
            kind=str(lease.get("kind", "")),
            attempt=int(lease.get("attempt") or 1),
            max_attempts=int(lease.get("max_attempts") or 1),
            lease_token=lease.get("lease_token"),
            timeout_s=float(timeout_s) if timeout_s else None,
            node_id=self.node_id,
            hub=HubLink(self),
        )
        payload = lease.get("payload")
        if payload is None:
            payload = {}
        run = _Run(task_id, ctx.lease_token, ctx.kind, payload, ctx.timeout_s, ctx)
        self._running[task_id] = run
        run.task = asyncio.create_task(self._execute(run))

    def revoke(self, task_ids: Iterable[Any], reason: str = "") -> None:
        """Stop tasks the hub no longer leases to this worker; their results are dropped."""
        count = 0
        for task_id in task_ids:
            run = self._running.get(task_id)
            if run is not None:
                self._drop(run)
                count += 1
        if count:
            self.stats.revoked += count
            logger.info("revoked %d running tasks (%s)", count, reason or "no reason given")

    async def on_accounts_assigned(self, accounts: list[dict[str, Any]]) -> None:
        """``master:task:assign {accounts: [...]}``: watch these accounts from now on."""
        for account in accounts:
            account_id = account.get("id") or account.get("account_id")
            if account_id is not None:
                self.accounts[str(account_id)] = account
        logger.info("%d accounts assigned (%d in all)", len(accounts), len(self.accounts))

    async def on_accounts_revoked(self, account_ids: list[Any]) -> None:
        """``master:task:revoke {accountIds: [...]}``: stop watching these accounts."""
        for account_id in account_ids:
            self.accounts.pop(str(account_id), None)
        logger.info("%d accounts revoked (%d left)", len(account_ids), len(self.accounts))

    async def on_login_start(self, request: dict[str, Any]) -> None:
        """``master:login:start {account_id, session_id, platform, proxy}``: run the
        platform's ``<platform>.login`` handler, which shows QR codes through
        ``ctx.hub.emit_qrcode`` and returns ``{status, cookies, user_info, fingerprint}``."""
        session_id = str(request.get("session_id") or "")
        platform = str(request.get("platform") or "")
        if not session_id or session_id in self._logins:
            return
        run = asyncio.create_task(self._login(session_id, platform, request))
        self._logins[session_id] = run
        run.add_done_callback(lambda _: self._logins.pop(session_id, None))

    async def _login(self, session_id: str, platform: str, request: dict[str, Any]) -> None:
        kind = f"{platform}.login"
        fn = self.registry.get(kind)
        ctx = TaskContext(task_id=session_id, kind=kind, node_id=self.node_id)
        ctx.hub = HubLink(self, session_id)
        status: dict[str, Any]
        if fn is None:
            status = {"status": "failed", "error_message": f"this worker has no {kind} handler"}
        else:
            try:
                value = await invoke(fn, ctx, request)
                status = dict(value) if isinstance(value, dict) else {"status": "failed"}
                status.setdefault("status", "success")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("login %s (%s) failed: %s", session_id, platform, exc)
                status = {"status": "failed", "error_message": _describe(exc)}
        try:
            ack = await self.transport.call(
                "worker:login:status", {**status, "session_id": session_id}
            )
        except Exception as exc:  # the hub expires the session; nothing else to do here
            logger.warning("could not report login %s: %s", session_id, _describe(exc))
            return
        if isinstance(ack, dict) and ack.get("ok") is False:
            logger.warning("the hub refused login %s's status: %s", session_id, ack.get("error"))

    async def flush_outbox(self) -> None:
        """Send every journaled, unacknowledged result (after each (re)connect)."""
        assert self.journal is not None
        pending = self.journal.pending()
        if pending:
            logger.info("re-sending %d journaled results", len(pending))
        for start in range(0, len(pending), MAX_RESULTS_PER_CALL):
            batch = pending[start : start + MAX_RESULTS_PER_CALL]
            acks = await self.transport.send_results(batch)
            if acks is None:
                return  # disconnected again: the next connection tries again
            self._apply_acks(batch, acks)

    def on_disconnected(self) -> None:
        """Abandon result calls in flight: they stay journaled and are re-sent later."""
        for send in list(self._sends):
            send.cancel()

    async def wait_for_capacity(self) -> int:
        """Block until a slot is free; return how many are (for the HTTP lease size)."""
        while len(self._running) >= self.concurrency and not self._stopping:
            self._slot_free.clear()
            await self._slot_free.wait()
        return max(self.concurrency - len(self._running), 0)

    # -- running one task --------------------------------------------------------------

    async def _execute(self, run: _Run) -> None:
        try:
            async with self._sem:
                if run.dropped:
                    return
                self._started.append({"task_id": run.task_id, "lease_token": run.lease_token})
                self._wake.set()
                result = await self._call(run)
        finally:
            if self._running.get(run.task_id) is run:
                del self._running[run.task_id]
                self._slot_free.set()
        if run.dropped:
            return
        if result.status == "succeeded":
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        self._queue_result(result)

    async def _call(self, run: _Run) -> Result:
        fn = self.registry.get(run.kind)
        if fn is None:
            return Result.failed(
                run.task_id,
                run.lease_token,
                f"no handler for kind {run.kind!r} on this worker "
                f"(it runs: {', '.join(self.registry.kinds) or 'nothing'})",
                retryable=False,
            )
        deadline = asyncio.timeout(run.timeout_s)
        try:
            async with deadline:
                value = await invoke(fn, run.ctx, run.payload)
            return Result.succeeded(run.task_id, run.lease_token, value)
        except TimeoutError as exc:
            run.ctx.cancelled = True
            message = f"timeout after {run.timeout_s:g}s" if deadline.expired() else _describe(exc)
            return Result.failed(run.task_id, run.lease_token, message, retryable=True)
        except errors.PermanentFailure as exc:
            return Result.failed(run.task_id, run.lease_token, str(exc), retryable=False)
        except Exception as exc:
            logger.debug("task %s (%s) failed", run.task_id, run.kind, exc_info=True)
            return Result.failed(run.task_id, run.lease_token, _describe(exc), retryable=True)

    def _drop(self, run: _Run) -> None:
        run.dropped = True
        run.ctx.cancelled = True
        if run.task is not None:
            run.task.cancel()

    # -- results: journal, batch, send, ack ----------------------------------------------

    def _queue_result(self, result: Result) -> None:
        self._outgoing.append(result)
        self._unjournaled[result.task_id] = result
        self._wake.set()

    async def _flush_loop(self) -> None:
        # Runs until cancelled at shutdown.
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Let every result of this loop tick (or of result_linger_s) share one batch.
            await asyncio.sleep(self.result_linger_s)
            try:
                await self._flush_once()
            except Exception:
                # A journal that cannot be written (disk full…) must not end the flusher:
                # _flush_once put the results back; try again shortly.
                logger.exception("flushing results failed; retrying in 1s")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _flush_once(self) -> None:
        started, self._started = self._started, []
        results, self._outgoing = self._outgoing, []
        if started and results and not self.report_fast_starts:
            # A task that started and finished within this tick needs no start of its own:
            # the hub settles a result from ``leased`` as well as from ``running``.
            finished = {r.task_id for r in results}
            started = [s for s in started if s["task_id"] not in finished]
        if started:
            await self.transport.send_started(started)
        if not results:
            return
        assert self.journal is not None
        # Durable before it is sent: a crash after this line re-sends, never re-runs.
        try:
            self.journal.add(results)
        except Exception:
            self._outgoing[:0] = results
            raise
        for result in results:
            self._unjournaled.pop(result.task_id, None)
        if not self.transport.connected:
            return  # flush_outbox sends them after the next registration
        for start in range(0, len(results), MAX_RESULTS_PER_CALL):
            await self._inflight.acquire()
            send = asyncio.create_task(self._send(results[start : start + MAX_RESULTS_PER_CALL]))
            self._sends.add(send)
            send.add_done_callback(self._sends.discard)

    async def _send(self, results: list[Result]) -> None:
        try:
            acks = await self.transport.send_results(results)
        finally:
            self._inflight.release()
        if acks is not None:
            self._apply_acks(results, acks)

    def _apply_acks(self, results: list[Result], acks: list[dict[str, Any]]) -> None:
        assert self.journal is not None
        sent = {r.task_id: r.lease_token for r in results}
        keys = []
        for ack in acks:
            task_id = ack.get("task_id")
            if task_id not in sent:
                continue
            keys.append((task_id, sent[task_id]))
            if ack.get("accepted"):
                self.stats.acked += 1
            else:
                self.stats.rejected += 1
                logger.debug("hub refused result of %s: %s", task_id, ack.get("reason"))
        self.journal.acknowledge(keys)

    async def _drain(self, timeout_s: float) -> None:
        """Send what is buffered and wait (bounded) for the acks of calls in flight."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._flush_once()
                while self._sends:
                    await asyncio.gather(*list(self._sends), return_exceptions=True)
        except TimeoutError:
            logger.warning(
                "results still unacknowledged after %.0fs; they stay journaled", timeout_s
            )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""How a worker talks to the hub: Socket.IO push (default) or HTTP long-poll pull.

Both speak docs/protocol.md v1 and expose the same small interface to ``Worker``:
``run`` (connect, register, stay connected, reconnect with backoff), ``send_started``,
``send_results`` (acks, or ``None`` when the hub could not be reached) and ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

import httpx
import socketio

from zhongshu.worker.journal import Result

if TYPE_CHECKING:
    from zhongshu.worker.runtime import Worker

logger = logging.getLogger("zhongshu.worker")

NAMESPACE = "/worker"
EV_REGISTER = "worker:register"
EV_HEARTBEAT = "worker:heartbeat"
EV_STARTED = "worker:task:started"
EV_RESULT = "worker:task:result"
EV_RELEASE = "worker:task:release"
EV_ASSIGN = "master:task:assign"
EV_REVOKE = "master:task:revoke"
EV_LOGIN_START = "master:login:start"
MAX_HEARTBEAT_MISSES = 3


class HubUnavailable(Exception):
    """The hub did not answer (down, restarting, network): retried with backoff."""


class Backoff:
    """Exponential backoff with jitter, so a restarted hub is not hit by every worker at once."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay_s(self) -> float:
        ceiling_s = min(self.max_s, self.initial_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(ceiling_s / 2, ceiling_s)


class Transport:
    """The interface ``Worker`` uses; see the module docstring."""

    def __init__(self, worker: Worker, secret: str) -> None:
        self.worker = worker
        self._secret = secret
        self._closing = asyncio.Event()
        self.backoff = Backoff(max_s=worker.reconnect_max_s)

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    async def run(self) -> None:
        """Stay connected and registered until ``close``; ends only by cancellation."""
        last_error = ""
        while not self._closing.is_set():
            try:
                await self.session()
                self.backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _describe(exc)
                # The same failure every few seconds is one warning, not a flood.
                level = logging.DEBUG if error == last_error else logging.WARNING
                logger.log(level, "hub %s unreachable: %s", self.worker.hub_url, error)
                last_error = error
            if self._closing.is_set():
                break
            delay_s = self.backoff.next_delay_s()
            logger.debug("reconnecting in %.1fs", delay_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay_s)

    async def session(self) -> None:
        """One connection: connect, register, serve until it drops."""
        raise NotImplementedError

    async def send_started(self, items: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def send_results(self, results: list[Result]) -> list[dict[str, Any]] | None:
        raise NotImplementedError

    async def send_release(self, items: list[dict[str, Any]]) -> None:
        """Tell the hub this worker is draining (shutting down: send nothing new) and hand
        back the leases in ``items`` (``worker:task:release``); raises HubUnavailable."""
        raise NotImplementedError

    async def call(self, event: str, data: Any) -> Any:
        """Send an event of the master protocol and wait for the hub's ack (so events that
        must stay in order — a QR code, then the login's outcome — do)."""
        raise HubUnavailable(f"{event} needs the Socket.IO transport")

    async def sync_data(self, account_id: str, envelope: dict[str, Any]) -> Any:
        """Send a ``worker:data:sync`` envelope; returns the hub's ACK."""
        raise NotImplementedError

    async def close(self) -> None:
        self._closing.set()


def create(name: str, worker: Worker, secret: str) -> Transport:
    if name == "http":
        return HttpTransport(worker, secret)
    return SocketIOTransport(worker, secret)


class SocketIOTransport(Transport):
    """Socket.IO client on ``/worker``: the hub pushes leases as soon as they are ready."""

    def __init__(self, worker: Worker, secret: str, *, call_timeout_s: float = 30.0) -> None:
        super().__init__(worker, secret)
        self.call_timeout_s = call_timeout_s
        self._sio: socketio.AsyncClient | None = None
        self._registered = False
        self._dropped = asyncio.Event()
        self._calls: set[asyncio.Future[Any]] = set()
        self._refused_reason = ""

    @property
    def connected(self) -> bool:
        return self._registered and self._sio is not None and self._sio.connected

    async def session(self) -> None:
        sio = self._client()
        self._dropped.clear()
        self._refused_reason = ""
        heartbeat: asyncio.Task[None] | None = None
        try:
            try:
                await sio.connect(
                    self.worker.hub_url,
                    auth={"key": self.worker.key, "secret": self._secret},
                    namespaces=[NAMESPACE],
                    wait_timeout=10,
                )
            except socketio.exceptions.ConnectionError as exc:
                reason = self._refused_reason or str(exc)
                raise HubUnavailable(f"connection refused: {reason}") from None
            self._sio = sio
            ack = await self._call(EV_REGISTER, self.worker.registration())
            if not isinstance(ack, dict) or "node_id" not in ack:
                raise HubUnavailable(f"unexpected worker:register answer: {ack!r}")
            self.worker.on_registered(ack)
            self._registered = True
            self.backoff.reset()
            heartbeat = asyncio.create_task(self._heartbeat_loop())
            await self.worker.flush_outbox()
            await self._wait_dropped_or_closing()
        finally:
            self._registered = False
            self._sio = None
            if heartbeat:
                heartbeat.cancel()
            self._fail_calls()
            self.worker.on_disconnected()
            with contextlib.suppress(Exception):
                await sio.disconnect()

    def _client(self) -> socketio.AsyncClient:
        # Reconnection is ours (run's loop), so every connection re-registers and flushes.
        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        sio.on(EV_ASSIGN, self._on_assign, namespace=NAMESPACE)
        sio.on(EV_REVOKE, self._on_revoke, namespace=NAMESPACE)
        sio.on(EV_LOGIN_START, self._on_login_start, namespace=NAMESPACE)
        sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
        return sio

    async def _wait_dropped_or_closing(self) -> None:
        waits = [
            asyncio.create_task(self._dropped.wait()),
            asyncio.create_task(self._closing.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._dropped.is_set() and not self._closing.is_set():
            raise HubUnavailable("disconnected")

    async def _on_assign(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        tasks = data.get("tasks")
        if isinstance(tasks, list) and tasks:
            self.worker.assign(tasks)
        accounts = data.get("accounts")
        if isinstance(accounts, list):
            await self.worker.on_accounts_assigned(accounts)

    async def _on_revoke(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("task_ids"), list):
            self.worker.revoke(data["task_ids"], str(data.get("reason") or "hub revoked"))
        if isinstance(data, dict) and isinstance(data.get("accountIds"), list):
            await self.worker.on_accounts_revoked(data["accountIds"])

    async def _on_login_start(self, data: Any) -> None:
        if isinstance(data, dict):
            await self.worker.on_login_start(data)

    async def call(self, event: str, data: Any) -> Any:
        return await self._call(event, data)

    async def sync_data(self, account_id: str, envelope: dict[str, Any]) -> Any:
        return await self._call("message", envelope, timeout_s=60.0)  # acked after commit

    async def _on_connect_error(self, data: Any = None) -> None:
        # The hub's reason ("invalid node credentials", "node is disabled"); the exception
        # connect() raises only says that a namespace failed.
        message = data.get("message") if isinstance(data, dict) else data
        self._refused_reason = str(message or "")

    async def _on_disconnect(self, *args: Any) -> None:
        self._dropped.set()
        self._fail_calls()

    async def _heartbeat_loop(self) -> None:
        # Runs until the session cancels it.
        misses = 0
        while True:
            await asyncio.sleep(self.worker.heartbeat_interval_s)
            try:
                ack = await self._call(EV_HEARTBEAT, self.worker.heartbeat(), timeout_s=10.0)
            except HubUnavailable as exc:
                misses += 1
                logger.warning("heartbeat failed (%d in a row): %s", misses, exc)
                if misses >= MAX_HEARTBEAT_MISSES:
                    self._dropped.set()
                continue
            misses = 0
            revoke = ack.get("revoke") if isinstance(ack, dict) else None
            if revoke:
                self.worker.revoke(revoke, "heartbeat")

    async def send_started(self, items: list[dict[str, Any]]) -> None:
        sio = self._sio
        if sio is None or not self._registered:
            return
        # Fire and forget: a lost start costs nothing, the result still settles the task.
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await sio.emit(EV_STARTED, {"tasks": items}, namespace=NAMESPACE)

    async def send_results(self, results: list[Result]) -> list[dict[str, Any]] | None:
        if not self.connected:
            return None
        try:
            ack = await self._call(EV_RESULT, {"results": [r.to_wire() for r in results]})
        except HubUnavailable as exc:
            logger.debug("results not acknowledged (%s); they stay journaled", exc)
            return None
        acks = ack.get("acks") if isinstance(ack, dict) else None
        return acks if isinstance(acks, list) else None

    async def send_release(self, items: list[dict[str, Any]]) -> None:
        await self._call(
            EV_RELEASE, {"tasks": items, "reason": "worker shutting down", "draining": True}
        )

    async def close(self) -> None:
        await super().close()
        sio = self._sio
        if sio is not None:
            with contextlib.suppress(Exception):
                await sio.disconnect()

    async def _call(self, event: str, data: Any, timeout_s: float | None = None) -> Any:
        """Emit with an ack, failing at once when the connection drops.

        ``AsyncClient.call`` would wait for its full timeout after a disconnect.
        """
        sio = self._sio
        if sio is None:
            raise HubUnavailable("not connected")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            if not future.done():
                future.set_result(args[0] if len(args) == 1 else list(args) or None)

        self._calls.add(future)
        try:
            await sio.emit(event, data, namespace=NAMESPACE, callback=on_ack)
            async with asyncio.timeout(timeout_s or self.call_timeout_s):
                return await future
        except TimeoutError:
            raise HubUnavailable(f"no answer to {event}") from None
        except socketio.exceptions.SocketIOError as exc:
            raise HubUnavailable(f"{event} not sent: {_describe(exc)}") from None
        finally:
            self._calls.discard(future)

    def _fail_calls(self) -> None:
        for future in list(self._calls):
            if not future.done():
                future.set_exception(HubUnavailable("disconnected"))


class HttpTransport(Transport):
    """HTTP pull over ``/api/v1/agent/*``: register, heartbeat, long-poll leases, post results."""

    def __init__(self, worker: Worker, secret: str, *, request_timeout_s: float = 30.0) -> None:
        super().__init__(worker, secret)
        self.request_timeout_s = request_timeout_s
        self._client: httpx.AsyncClient | None = None
        self._registered = False
        self._starts: dict[Any, asyncio.Task[None]] = {}

    @property
    def connected(self) -> bool:
        return self._registered and self._client is not None

    async def session(self) -> None:
        client = httpx.AsyncClient(
            base_url=self.worker.hub_url,
            headers={"Authorization": f"AK-SK {self.worker.key}:{self._secret}"},
            timeout=self.request_timeout_s,
            trust_env=False,
        )
        heartbeat: asyncio.Task[None] | None = None
        self._client = client
        try:
            ack = await self._post("/api/v1/agent/register", self.worker.registration())
            self.worker.on_registered(ack)
            self._registered = True
            self.backoff.reset()
            heartbeat = asyncio.create_task(self._heartbeat_loop())
            await self.worker.flush_outbox()
            await self._lease_loop()
        finally:
            self._registered = False
            if heartbeat:
                heartbeat.cancel()
            self.worker.on_disconnected()
            self._client = None
            await client.aclose()

    async def _lease_loop(self) -> None:
        wait_s = self.worker.http_wait_s
        while not self._closing.is_set():
            free = await self.worker.wait_for_capacity()
            if self.worker.stopping:
                # Keep the session (heartbeats, results) until close; lease nothing more.
                await self._closing.wait()
                return
            body = {"max_tasks": max(1, min(free, 100)), "wait_s": wait_s}
            reply = await self._post("/api/v1/agent/lease", body, timeout_s=wait_s + 15)
            tasks = reply.get("tasks") if isinstance(reply, dict) else None
            if tasks:
                self.worker.assign(tasks)

    async def _heartbeat_loop(self) -> None:
        # Runs until the session cancels it.
        while True:
            await asyncio.sleep(self.worker.heartbeat_interval_s)
            try:
                ack = await self._post("/api/v1/agent/heartbeat", self.worker.heartbeat())
            except HubUnavailable as exc:
                logger.warning("heartbeat failed: %s", exc)
                continue
            if ack.get("revoke"):
                self.worker.revoke(ack["revoke"], "heartbeat")

    async def send_started(self, items: list[dict[str, Any]]) -> None:
        task = asyncio.create_task(self._post_started(items))
        for item in items:
            self._starts[item["task_id"]] = task

    async def _post_started(self, items: list[dict[str, Any]]) -> None:
        try:
            await self._post("/api/v1/agent/started", {"tasks": items})
        except HubUnavailable:
            pass  # the result still settles the task
        finally:
            for item in items:
                self._starts.pop(item["task_id"], None)

    async def send_results(self, results: list[Result]) -> list[dict[str, Any]] | None:
        if not self.connected:
            return None
        # The hub expects a start before its result; starts still in flight go first.
        pending = {self._starts[r.task_id] for r in results if r.task_id in self._starts}
        if pending:
            await asyncio.wait(pending)
        try:
            reply = await self._post(
                "/api/v1/agent/results", {"results": [r.to_wire() for r in results]}
            )
        except HubUnavailable as exc:
            logger.warning("sending %d results failed: %s", len(results), exc)
            return None
        acks = reply.get("acks")
        return acks if isinstance(acks, list) else None

    async def send_release(self, items: list[dict[str, Any]]) -> None:
        await self._post(
            "/api/v1/agent/release",
            {"tasks": items, "reason": "worker shutting down", "draining": True},
        )

    async def sync_data(self, account_id: str, envelope: dict[str, Any]) -> Any:
        # The HTTP door answers with the same ACK body the Socket.IO ack carries; a refusal
        # (4xx: bad data, not assigned, a delta gap) is an answer too, not an outage.
        path = f"/api/v1/sources/{account_id}/sync"
        response = await self._send(path, envelope, 60.0, refusals_ok=True)
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("payload"), dict):
            return body
        return {"payload": {"success": False, "error": _detail(response)}}

    async def _post(
        self, path: str, body: dict[str, Any], timeout_s: float | None = None
    ) -> dict[str, Any]:
        reply = (await self._send(path, body, timeout_s)).json()
        return reply if isinstance(reply, dict) else {}

    async def _send(
        self,
        path: str,
        body: dict[str, Any],
        timeout_s: float | None = None,
        *,
        refusals_ok: bool = False,
    ) -> httpx.Response:
        """POST; an unreachable hub or a 5xx — and a 4xx unless ``refusals_ok`` — raise
        HubUnavailable."""
        client = self._client
        if client is None:
            raise HubUnavailable("not connected")
        try:
            response = await client.post(
                path, json=body, timeout=timeout_s or self.request_timeout_s
            )
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"POST {path}: {_describe(exc)}") from None
        if response.status_code >= (500 if refusals_ok else 400):
            raise HubUnavailable(f"POST {path}: {response.status_code} {_detail(response)}")
        return response


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return str(body)[:200]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""Worker lifecycle: local ``zhongshu worker`` processes the hub starts and supervises.

Each configured profile (``worker_profiles``) runs as one node. The first start creates the
node and keeps its secret sealed in ``worker_processes``, so later starts (and hub
restarts) reuse it. The secret reaches the child through ``ZHONGSHU_WORKER_SECRET`` in its
environment, never its argv (which ``ps`` shows to every user).

A supervisor task per running profile waits for the child: an exit the hub did not ask for
is a crash, restarted after ``restart_base_s · 2^n`` seconds (capped), at most
``max_restarts`` times in a row (a run longer than ``stable_after_s`` resets the count);
then the profile is ``failed``. Stopping is SIGTERM, then SIGKILL after ``stop_grace_s``;
the hub's shutdown stops every child that way.

Statuses: ``stopped`` · ``running`` · ``crashed`` (died, restart pending) · ``failed``
(gave up). Every transition is an event ``worker.lifecycle.<status>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from zhongshu import errors
from zhongshu.db.lifecycle_store import LifecycleStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal
from zhongshu.services.nodes import NodeService
from zhongshu.services.secrets import SecretBox

log = logging.getLogger("zhongshu.lifecycle")

Row = dict[str, Any]
Status = Literal["stopped", "running", "crashed", "failed"]


class WorkerProfile(BaseModel):
    """One entry of ``worker_profiles``: how to run a local worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    capabilities: list[str] = Field(default_factory=list)
    concurrency: int = Field(4, ge=1, le=10_000)
    # Extra environment of the child (its ZHONGSHU_* settings, PYTHONPATH …).
    env: dict[str, str] = Field(default_factory=dict)
    # Extra command-line arguments of `zhongshu worker`.
    args: list[str] = Field(default_factory=list)
    # Python modules with @handler functions (`--handlers`).
    handlers: list[str] = Field(default_factory=list)
    transport: Literal["socketio", "http"] = "socketio"
    # Start with the hub.
    autostart: bool = False

    @field_validator("handlers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


@dataclass
class _Run:
    """What this process knows about one profile's child."""

    profile: WorkerProfile
    node_id: str = ""
    status: Status = "stopped"
    desired: Literal["running", "stopped"] = "stopped"
    proc: asyncio.subprocess.Process | None = None
    started_at: float | None = None
    restarts: int = 0
    in_a_row: int = 0
    last_exit_code: int | None = None
    supervisor: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WorkerSupervisor:
    """Start, stop, restart and watch the configured local workers.

    Parameters
    ----------
    hub_url:
        The URL the children connect to.
    work_dir:
        Where each profile's log (``<profile>.log``) and journal live.
    """

    def __init__(
        self,
        store: LifecycleStore,
        nodes: NodeService,
        secrets: SecretBox,
        bus: EventBus,
        profiles: list[WorkerProfile],
        *,
        hub_url: str,
        work_dir: Path,
        max_restarts: int = 5,
        restart_base_s: float = 1.0,
        restart_cap_s: float = 30.0,
        stable_after_s: float = 60.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.secrets = secrets
        self.bus = bus
        self.profiles = {p.name: p for p in profiles}
        self.hub_url = hub_url
        self.work_dir = work_dir
        self.max_restarts = max_restarts
        self.restart_base_s = restart_base_s
        self.restart_cap_s = restart_cap_s
        self.stable_after_s = stable_after_s
        self.stop_grace_s = stop_grace_s
        self._runs: dict[str, _Run] = {}

    def _run(self, name: str) -> _Run:
        profile = self.profiles.get(name)
        if profile is None:
            raise errors.WorkerProfileNotFound(
                f"no worker profile {name!r} (configured: {', '.join(self.profiles) or 'none'})"
            )
        run = self._runs.get(name)
        if run is None:
            run = self._runs[name] = _Run(profile)
        return run

    # --- queries ----------------------------------------------------------------------

    async def status(self, name: str) -> Row:
        """The profile's process: status, pid, uptime, restarts, node."""
        run = self._run(name)
        row = await self.store.get(name)
        pid = run.proc.pid if run.proc is not None and run.proc.returncode is None else None
        now = time.time()
        return {
            "profile": name,
            "status": run.status,
            "desired": run.desired,
            "pid": pid,
            "node_id": run.node_id or (row["node_id"] if row else None),
            "started_at": run.started_at if pid else None,
            "uptime_s": round(now - run.started_at, 3) if pid and run.started_at else 0.0,
            "restarts": run.restarts,
            "last_exit_code": run.last_exit_code,
            "capabilities": list(run.profile.capabilities),
            "concurrency": run.profile.concurrency,
            "log_path": str(self._log_path(name)),
        }

    # --- commands ---------------------------------------------------------------------

    async def start(self, name: str, actor: Principal | None = None) -> Row:
        """Start the profile's worker (a running one is left alone)."""
        run = self._run(name)
        async with run.lock:
            if run.supervisor is not None and not run.supervisor.done():
                return await self.status(name)
            key, secret = await self._credentials(run)
            run.desired = "running"
            run.restarts = run.in_a_row = 0
            await self._spawn(run, key, secret, actor)
            run.supervisor = asyncio.create_task(
                self._supervise(run, key, secret), name=f"zhongshu-worker-{name}"
            )
        return await self.status(name)

    async def stop(self, name: str, actor: Principal | None = None) -> Row:
        """SIGTERM the worker, SIGKILL after the grace; it stays stopped."""
        run = self._run(name)
        async with run.lock:
            run.desired = "stopped"
            if run.proc is None:
                await self._reap_stored_orphan(name)
            await self._terminate(run)
            task, run.supervisor = run.supervisor, None
            if task is not None and not task.done():
                task.cancel()  # only reached while it waits to restart a crashed child
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if run.status != "stopped":
                await self._set(run, "stopped", actor)
        return await self.status(name)

    async def restart(self, name: str, actor: Principal | None = None) -> Row:
        await self.stop(name, actor)
        return await self.start(name, actor)

    async def reap_orphans(self) -> None:
        """Stop the children a previous hub left running (killed with -9, it could not
        stop them): nothing runs unsupervised while its status says "stopped"."""
        for name in self.profiles:
            try:
                await self._reap_stored_orphan(name)
            except Exception:
                log.exception("could not check worker profile %s for a leftover process", name)

    async def autostart(self) -> None:
        """Start the profiles marked ``autostart`` (at hub start)."""
        for name, profile in self.profiles.items():
            if profile.autostart:
                try:
                    await self.start(name)
                except Exception:
                    log.exception("worker profile %s did not start", name)

    async def shutdown(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL after the grace), all at once."""
        names = [n for n, r in self._runs.items() if r.supervisor is not None or r.proc]
        results = await asyncio.gather(*(self.stop(n) for n in names), return_exceptions=True)
        for n, res in zip(names, results, strict=True):
            if isinstance(res, BaseException):
                log.error("worker profile %s did not stop cleanly: %s", n, res)

    # --- internals --------------------------------------------------------------------

    def _log_path(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    async def _credentials(self, run: _Run) -> tuple[str, str]:
        """The profile's node key pair: created once, sealed in the database, reused."""
        name = run.profile.name
        row = await self.store.get(name)
        if row is not None:
            with contextlib.suppress(errors.NodeNotFound):
                node = await self.nodes.get(row["node_id"])
                if node["access_key"] == row["access_key"]:
                    run.node_id = row["node_id"]
                    await self._reap_orphan(row)
                    return row["access_key"], self.secrets.open(row["secret"])
        node, secret = await self.nodes.create(
            f"worker-{name}",
            capabilities=run.profile.capabilities,
            capacity=run.profile.concurrency,
        )
        now = time.time()
        values = {
            "node_id": node["id"],
            "access_key": node["access_key"],
            "secret": self.secrets.seal(secret),
            "pid": None,
            "updated_at": now,
        }
        if row is None:
            await self.store.insert({"profile": name, "created_at": now, **values})
        else:
            await self.store.update(name, values)
        run.node_id = node["id"]
        return node["access_key"], secret

    async def _reap_stored_orphan(self, name: str) -> None:
        row = await self.store.get(name)
        if row is not None and row.get("pid"):
            await self._reap_orphan(row)
            await self.store.update(
                name, {"pid": None, "status": "stopped", "updated_at": time.time()}
            )

    async def _reap_orphan(self, row: Row) -> None:
        """A child left behind by a hub that was killed: stop it before starting another
        with the same key (matched by the key in its environment, not only its pid)."""
        pid = row.get("pid")
        if not pid:
            return
        try:
            import psutil

            proc = psutil.Process(pid)
            if proc.environ().get("ZHONGSHU_WORKER_KEY") != row["access_key"]:
                return
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, self.stop_grace_s)
            except psutil.TimeoutExpired:
                proc.kill()
            log.warning("stopped worker %s (pid %s) left by a previous hub", row["profile"], pid)
        except Exception:  # gone, not ours, or not readable: nothing to reap
            return

    def _command(self, run: _Run) -> list[str]:
        p = run.profile
        journal = self.work_dir / f"{p.name}.journal.db"
        cmd = [
            sys.executable,
            "-m",
            "zhongshu",
            "worker",
            "--hub",
            self.hub_url,
            "--concurrency",
            str(p.concurrency),
            "--journal",
            str(journal),
            "--transport",
            p.transport,
        ]
        for cap in p.capabilities:
            cmd += ["--capability", cap]
        for module in p.handlers:
            cmd += ["--handlers", module]
        return [*cmd, *p.args]

    def _env(self, run: _Run, key: str, secret: str) -> dict[str, str]:
        # The hub's own ZHONGSHU_* settings (its secret key …) are not the worker's business.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZHONGSHU_")}
        env.update(run.profile.env)
        env["ZHONGSHU_WORKER_KEY"] = key
        env["ZHONGSHU_WORKER_SECRET"] = secret
        return env

    async def _spawn(self, run: _Run, key: str, secret: str, actor: Principal | None) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # A local append-only log file: opening it does not block in any way that matters.
        with open(self._log_path(run.profile.name), "ab") as out:  # noqa: ASYNC230
            run.proc = await asyncio.create_subprocess_exec(
                *self._command(run),
                env=self._env(run, key, secret),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.work_dir,
                # Its own session: a Ctrl-C at the hub's terminal reaches the hub, which
                # then stops its children in order.
                start_new_session=True,
            )
        run.started_at = time.time()
        await self._set(run, "running", actor)

    async def _supervise(self, run: _Run, key: str, secret: str) -> None:
        """Wait for the child; restart it after a crash, with backoff, up to the limit."""
        while True:
            proc = run.proc
            assert proc is not None
            code = await proc.wait()
            run.last_exit_code = code
            if run.desired != "running":
                return  # stop() is handling it
            lived = time.time() - (run.started_at or time.time())
            if lived >= self.stable_after_s:
                run.in_a_row = 0
            log.warning(
                "worker %s (pid %s) exited with %s after %.1f s",
                run.profile.name,
                proc.pid,
                code,
                lived,
            )
            if run.in_a_row >= self.max_restarts:
                await self._set(run, "failed", None, {"exit_code": code})
                return
            await self._set(run, "crashed", None, {"exit_code": code})
            delay = min(self.restart_cap_s, self.restart_base_s * 2**run.in_a_row)
            run.in_a_row += 1
            run.restarts += 1
            await asyncio.sleep(delay)
            async with run.lock:
                if run.desired != "running":
                    return
                await self._spawn(run, key, secret, None)

    async def _terminate(self, run: _Run) -> None:
        proc = run.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_grace_s):
                await proc.wait()
        except TimeoutError:
            log.warning("worker %s ignored SIGTERM: killing it", run.profile.name)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        run.last_exit_code = proc.returncode

    async def _set(
        self, run: _Run, status: Status, actor: Principal | None, data: Row | None = None
    ) -> None:
        run.status = status
        pid = run.proc.pid if run.proc is not None and run.proc.returncode is None else None
        name = run.profile.name
        ev = Event(
            f"worker.lifecycle.{status}",
            "worker_profile",
            name,
            actor.actor if actor else "system",
            {"pid": pid, "node_id": run.node_id, "restarts": run.restarts, **(data or {})},
        )
        values = {
            "desired": run.desired,
            "status": status,
            "pid": pid,
            "started_at": run.started_at,
            "restarts": run.restarts,
            "last_exit_code": run.last_exit_code,
            "updated_at": time.time(),
        }
        try:
            await self.store.update(name, values, [ev])
        except errors.StoreError:
            log.exception("could not record worker %s as %s", name, status)
        self.bus.publish([ev])

    async def run(self) -> None:
        """The hub's background loop: start the ``autostart`` profiles, then idle. The
        supervisors are their own tasks; this loop ends by cancellation at hub stop."""
        await self.reap_orphans()
        await self.autostart()
        await asyncio.Event().wait()

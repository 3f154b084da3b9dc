"""kill -9 of the hub process in the middle of a run, then a restart on the same data dir
and port: every accepted task completes exactly once, and results the workers finished
while the hub was down (kept in their journals) are the ones the hub stores.

Real processes only (``zhongshu serve`` and two ``zhongshu worker``s, see ``procs.py``);
the workers keep running across the restart and reconnect by themselves.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from procs import Fleet, attempt_overlaps, wait_for

pytestmark = pytest.mark.slow

TASKS = 2000
BATCH = 100


class Submitter(threading.Thread):
    """Submits the tasks batch by batch, re-sending a batch until the hub answers 2xx.

    Every task has an idempotency key, so a batch the hub committed but could not answer
    (it was killed) comes back with the same ids when it is sent again.
    """

    def __init__(self, url: str, headers: dict[str, str], deadline_s: float) -> None:
        super().__init__(daemon=True)
        # The second half waits for this, so part of it is sent while the hub is down.
        self.second_half = threading.Event()
        self.url = url
        self.headers = headers
        self.deadline = time.monotonic() + deadline_s
        self.accepted: dict[str, dict[str, Any]] = {}  # id -> submitted spec
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as c:
            for start in range(0, TASKS, BATCH):
                batch = [_spec(i) for i in range(start, start + BATCH)]
                if start == TASKS // 2:
                    self.second_half.wait(max(0.0, self.deadline - time.monotonic()))
                while not self.stop.is_set() and time.monotonic() < self.deadline:
                    try:
                        r = c.post("/api/v1/tasks/batch", json={"tasks": batch})
                    except httpx.HTTPError:
                        r = None
                    if r is not None and 200 <= r.status_code < 300:
                        for spec, t in zip(batch, r.json()["items"], strict=True):
                            assert t["idempotency_key"] == spec["idempotency_key"]
                            self.accepted[t["id"]] = spec
                        break
                    self.failures += 1
                    self.stop.wait(0.1)


def _spec(i: int) -> dict[str, Any]:
    # Mostly instant tasks; every 20th takes 0.5 s, so some are running at the kill and
    # finish while the hub is down.
    return {
        "kind": "fleet.sleep",
        "payload": {"n": i, "seconds": 0.5 if i % 20 == 0 else 0},
        "idempotency_key": f"crash-{i}",
    }


def _succeeded_total(fleet: Fleet) -> int:
    r = fleet.admin.get("/api/v1/tasks", params={"status": "succeeded", "limit": 1})
    return int(r.json()["total"]) if r.status_code == 200 else 0


def test_kill_9_hub_mid_run_loses_nothing(own_fleet: Fleet) -> None:
    fleet = own_fleet
    hub = fleet.hub
    workers = list(fleet.workers.values())
    pids = {w.name: w.pid for w in workers}

    submitter = Submitter(hub.url, {"authorization": fleet.admin.headers["authorization"]}, 90)
    submitter.start()
    try:
        wait_for(
            lambda: len(submitter.accepted) == TASKS // 2 and _succeeded_total(fleet) >= 200,
            60,
            "half the tasks to be accepted and 200 to succeed",
            0.05,
        )
        killed_at = time.time()
        hub.kill()
        submitter.second_half.set()
        hub.start()
        ready_at = time.time()
        fleet.admin.close()
        fleet.admin = hub.client()
        submitter.join(90)
    finally:
        submitter.stop.set()
    assert not submitter.is_alive()
    assert len(submitter.accepted) == TASKS, f"only {len(submitter.accepted)} tasks accepted"
    assert submitter.failures > 0, "no submit was refused while the hub was down"
    ids = list(submitter.accepted)

    done = fleet.wait_final(ids, timeout_s=90)
    assert Counter(t["status"] for t in done.values()) == {"succeeded": TASKS}
    for tid, t in done.items():
        assert t["payload"] == submitter.accepted[tid]["payload"]
        assert t["result"]["n"] == t["payload"]["n"]
    # The workers were never restarted: they rode out the hub's crash.
    assert {w.name: w.pid for w in workers if w.alive} == pids

    # Never two successes: one succeeded attempt and one task.succeeded event per task.
    succeeded_attempts = dict(
        hub.query(
            "SELECT task_id, count(*) FROM task_attempts WHERE outcome = 'succeeded' "
            "GROUP BY task_id"
        )
    )
    assert {tid: succeeded_attempts.get(tid, 0) for tid in ids} == dict.fromkeys(ids, 1)
    succeeded_events = dict(
        hub.query(
            "SELECT subject_id, count(*) FROM events WHERE type = 'task.succeeded' "
            "GROUP BY subject_id"
        )
    )
    assert {tid: succeeded_events.get(tid, 0) for tid in ids} == dict.fromkeys(ids, 1)

    # No worker stopped, so no lease may be taken back: the hub's downtime is not the
    # nodes' silence. (A lease taken back here makes the restarted hub refuse the result
    # the worker journaled during the outage, and the task may run a second time.)
    lost = hub.query(
        "SELECT a.task_id, a.node_id, a.error, a.finished_at FROM task_attempts a "
        "WHERE a.outcome = 'lost'"
    )
    assert not lost, (
        f"the restarted hub took back {len(lost)} leases from workers that never stopped "
        f"(killed at {killed_at:.2f}, ready at {ready_at:.2f}): {lost[:3]}"
    )

    # Results finished while the hub was down were journaled, re-sent after the reconnect,
    # and are the results the hub kept (not a second run's).
    during_outage = [
        r
        for w in workers
        for r in w.runs()
        if r["ev"] == "end" and r["outcome"] == "done" and killed_at <= r["t"] <= ready_at
    ]
    assert during_outage, "no task finished while the hub was down; kill earlier"
    not_kept = [
        (r["task"], r["pid"], r["token"], done[r["task"]]["result"])
        for r in during_outage
        if (done[r["task"]]["result"]["pid"], done[r["task"]]["result"]["token"])
        != (r["pid"], r["token"])
    ]
    assert not not_kept, (
        f"{len(not_kept)} of {len(during_outage)} results finished during the outage were "
        f"not the stored result (run again instead): {not_kept[:5]}"
    )
    assert any("re-sending" in w.log() and "journaled results" in w.log() for w in workers)

    # Capacity held across the restart too.
    peaks = attempt_overlaps(hub.query("SELECT node_id, leased_at, finished_at FROM task_attempts"))
    for w in workers:
        assert peaks.get(w.node_id, 0) <= w.concurrency, peaks

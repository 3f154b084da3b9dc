"""The core hub with real processes: ``zhongshu serve`` and two ``zhongshu worker``s.

The ``alpha`` worker advertises capability ``alpha`` (capacity 4), ``beta`` advertises
``beta`` (capacity 6); both run the built-in handlers and ``fleet_handlers``. Nothing of
ours is mocked: tasks go in over HTTP, run in the worker processes, and the tests read the
outcome from the API and from the hub's SQLite file. The hub declares a silent node offline
after 2 s (heartbeats every 0.5 s).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from procs import CALLBACK_SECRET, Fleet, attempt_overlaps, wait_for

from zhongshu.services import callbacks

pytestmark = pytest.mark.slow


def _outcomes(task: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["node_id"], a["outcome"]) for a in task["attempts_history"]]


def _mixed_tasks(rng: random.Random) -> tuple[list[dict[str, Any]], Counter[str]]:
    """500 tasks: echo, short sleeps, alpha-only and beta-only work, and failures that die."""
    plan = {
        "echo": 150,
        "sleep": 60,
        "alpha.work": 110,
        "beta.work": 130,
        "fail.retryable": 30,
        "fail.permanent": 20,
    }
    tasks: list[dict[str, Any]] = []
    for label, n in plan.items():
        for i in range(n):
            if label == "echo":
                tasks.append({"kind": "echo", "payload": {"n": i, "word": f"echo-{i}"}})
            elif label == "sleep":
                tasks.append({"kind": "sleep", "payload": {"seconds": rng.choice([0.01, 0.05])}})
            elif label in ("alpha.work", "beta.work"):
                cap = label.split(".")[0]
                seconds = rng.choice([0, 0, 0.01, 0.03])
                tasks.append(
                    {"kind": label, "capability": cap, "payload": {"n": i, "seconds": seconds}}
                )
            elif label == "fail.retryable":
                tasks.append(
                    {"kind": "fail", "payload": {"message": f"boom-{i}"}, "max_attempts": 2}
                )
            else:
                tasks.append(
                    {
                        "kind": "fail",
                        "payload": {"message": f"final-{i}", "retryable": False},
                        "max_attempts": 3,
                    }
                )
    rng.shuffle(tasks)
    return tasks, Counter(plan)


def test_500_mixed_tasks_respect_capability_and_capacity(fleet: Fleet) -> None:
    alpha, beta = fleet.workers["alpha"], fleet.workers["beta"]
    specs, plan = _mixed_tasks(random.Random(2026))
    ids = fleet.submit(specs)
    assert len(set(ids)) == 500
    done = fleet.wait_final(ids, timeout_s=90)

    by_label: dict[str, list[dict[str, Any]]] = {}
    for spec, tid in zip(specs, ids, strict=True):
        label = spec["kind"]
        if label == "fail":
            label = (
                "fail.permanent" if spec["payload"].get("retryable") is False else "fail.retryable"
            )
        by_label.setdefault(label, []).append(done[tid])
    assert Counter({k: len(v) for k, v in by_label.items()}) == plan

    # Final states and attempts. A node that the busy machine stalls for 2 s may be
    # declared offline, which costs its tasks a "lost" attempt; nothing else may.
    history: dict[str, list[str]] = {}
    for tid, outcome in fleet.hub.query(
        "SELECT task_id, outcome FROM task_attempts ORDER BY task_id, attempt"
    ):
        history.setdefault(tid, []).append(outcome)
    for label in ("echo", "sleep", "alpha.work", "beta.work"):
        assert Counter(t["status"] for t in by_label[label]) == {"succeeded": plan[label]}, label
        for t in by_label[label]:
            *before, last = history[t["id"]]
            assert last == "succeeded" and set(before) <= {"lost"}, history[t["id"]]
    assert all(t["result"] == t["payload"] for t in by_label["echo"])
    for t in by_label["fail.retryable"]:
        assert (t["status"], t["attempts"]) == ("dead", 2)
        assert t["error"].endswith(t["payload"]["message"]), t["error"]
        assert history[t["id"]][-1] == "failed"
    for t in by_label["fail.permanent"]:
        assert t["status"] == "dead"
        assert history[t["id"]] in (["failed"], ["lost", "failed"]), history[t["id"]]

    # Capabilities: alpha work ran only on the alpha node, beta work only on beta (the
    # handler reports the node it ran on; the hub's attempts say the same).
    rows = fleet.hub.query(
        "SELECT t.capability, a.node_id, count(*) FROM task_attempts a "
        "JOIN tasks t ON t.id = a.task_id GROUP BY t.capability, a.node_id"
    )
    ran_on = {(cap, node): n for cap, node, n in rows}
    assert {node for cap, node in ran_on if cap == "alpha"} == {alpha.node_id}
    assert {node for cap, node in ran_on if cap == "beta"} == {beta.node_id}
    for label, worker in (("alpha.work", alpha), ("beta.work", beta)):
        assert {t["result"]["node"] for t in by_label[label]} == {worker.node_id}
        assert {t["node_id"] for t in by_label[label]} == {worker.node_id}
    # Work both could do went to both (least loaded first).
    assert ran_on.get(("echo", alpha.node_id), 0) > 0
    assert ran_on.get(("echo", beta.node_id), 0) > 0

    # Exactly one succeeded attempt per succeeded task, none for dead ones.
    succeeded_attempts = dict(
        fleet.hub.query(
            "SELECT task_id, count(*) FROM task_attempts WHERE outcome = 'succeeded' "
            "GROUP BY task_id"
        )
    )
    for tid in ids:
        want = 1 if done[tid]["status"] == "succeeded" else 0
        assert succeeded_attempts.get(tid, 0) == want, fleet.task(tid)

    # Capacity never exceeded: by the hub's own lease history (leased_at..finished_at of
    # every attempt, per node), and by what the handlers saw running in each process.
    peaks = attempt_overlaps(
        fleet.hub.query("SELECT node_id, leased_at, finished_at FROM task_attempts")
    )
    assert peaks[alpha.node_id] <= alpha.concurrency, peaks
    assert peaks[beta.node_id] <= beta.concurrency, peaks
    assert peaks[alpha.node_id] >= 2, "the test never kept the alpha node busy"
    for w in (alpha, beta):
        running = [r["running"] for r in w.runs() if r["ev"] == "start"]
        assert running and max(running) <= w.concurrency

    # The API's attempts history says what the database says.
    for t in (by_label["fail.retryable"][0], by_label["alpha.work"][0]):
        detail = fleet.task(t["id"])
        assert [a["outcome"] for a in detail["attempts_history"]] == history[t["id"]]


def test_kill_9_worker_mid_task_finishes_on_the_other(fleet: Fleet) -> None:
    [tid] = fleet.submit([{"kind": "sleep", "payload": {"seconds": 2}}])
    running = fleet.wait_status(tid, ["running"], timeout_s=30)
    victim = fleet.worker_of(running["node_id"])
    survivor = fleet.other_than(victim)
    killed_at = time.time()
    victim.kill()

    task = fleet.wait_status(tid, ["succeeded", "dead"], timeout_s=40)
    assert task["status"] == "succeeded", task
    assert task["result"] == {"slept_s": 2.0}
    assert task["node_id"] == survivor.node_id
    assert _outcomes(task) == [(victim.node_id, "lost"), (survivor.node_id, "succeeded")]
    assert "offline" in (task["attempts_history"][0]["error"] or "")

    # The retry was leased only after the hub declared the killed node offline.
    [offline] = [
        e
        for e in fleet.events(type="node.offline", subject_id=victim.node_id)
        if _ts(e["at"]) >= killed_at
    ]
    assert _ts(task["attempts_history"][1]["leased_at"]) >= _ts(offline["at"])
    assert fleet.node(victim.node_id)["status"] == "offline"


def test_paused_worker_late_result_is_refused(fleet: Fleet) -> None:
    """SIGSTOP the worker holding a task until the hub re-leases it; SIGCONT: its result is
    refused as stale and the task keeps the other worker's result."""
    [tid] = fleet.submit([{"kind": "fleet.sleep", "payload": {"seconds": 1.5, "retry_seconds": 0}}])
    running = fleet.wait_status(tid, ["running"], timeout_s=30)
    frozen = fleet.worker_of(running["node_id"])
    other = fleet.other_than(frozen)
    frozen.pause()
    try:
        task = fleet.wait_status(tid, ["succeeded", "dead"], timeout_s=40)
    finally:
        frozen.resume()
    assert task["status"] == "succeeded", task
    assert task["result"]["node"] == other.node_id
    assert task["result"]["pid"] == other.pid

    # The paused worker wakes up, finishes its (old) run and reports it: the hub refuses it.
    def late_run_ended() -> bool:
        return any(
            r["ev"] == "end" and r["task"] == tid and r["node"] == frozen.node_id
            for r in frozen.runs()
        )

    wait_for(late_run_ended, 20, "the paused worker to finish its run")
    wait_for(
        lambda: f"hub refused result of {tid}" in frozen.log(),
        20,
        "the paused worker's late result to be refused",
    )
    after = fleet.task(tid)
    assert after["status"] == "succeeded"
    assert after["result"] == task["result"]
    assert _outcomes(after) == [(frozen.node_id, "lost"), (other.node_id, "succeeded")]
    assert [a["lease_token"] for a in after["attempts_history"]] == [1, 2]
    succeeded = [e for e in fleet.events(subject_id=tid) if e["type"] == "task.succeeded"]
    assert [e["actor"] for e in succeeded] == [f"node:{other.node_id}"]


def test_sigterm_finishes_within_grace_and_the_rest_reruns_elsewhere(fleet: Fleet) -> None:
    """Grace is 3 s: a 1.5 s task finishes and is stored; a long one is cancelled at the
    deadline, handed back to the hub (worker:task:release) and runs again on the other worker
    at once — without waiting for the node to go offline, and without using up an attempt."""
    [long_id] = fleet.submit(
        [{"kind": "fleet.sleep", "payload": {"seconds": 60, "retry_seconds": 0}}]
    )
    holder = fleet.worker_of(fleet.wait_status(long_id, ["running"], timeout_s=30)["node_id"])
    other = fleet.other_than(holder)
    own_capability = holder.capabilities[0]
    [short_id] = fleet.submit(
        [
            {
                "kind": "fleet.sleep",
                "capability": own_capability,
                "payload": {"seconds": 1.5},
            }
        ]
    )
    fleet.wait_status(short_id, ["running"], timeout_s=30)

    log_before = len(holder.log())
    started = time.monotonic()
    assert holder.terminate(timeout_s=30) == 0
    assert time.monotonic() - started < 15
    log = holder.log()[log_before:]
    assert "1 finished during grace, 1 cancelled at shutdown" in log, log[-2000:]

    short = fleet.task(short_id)
    assert short["status"] == "succeeded", short
    assert short["result"]["node"] == holder.node_id
    assert _outcomes(short) == [(holder.node_id, "succeeded")]

    assert "handed 1 unfinished tasks back to the hub" in log, log[-2000:]
    long = fleet.wait_status(long_id, ["succeeded", "dead"], timeout_s=40)
    assert long["status"] == "succeeded", long
    assert long["result"]["node"] == other.node_id
    assert _outcomes(long) == [(holder.node_id, "released"), (other.node_id, "succeeded")]
    assert long["attempts"] == 1  # a released lease does not count as an attempt


class _Receiver(BaseHTTPRequestHandler):
    answers: list[int]
    received: list[tuple[dict[str, str], bytes]]
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.lock:
            self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            code = self.answers.pop(0) if self.answers else 200
        self.send_response(code)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    """A real HTTP receiver on 127.0.0.1 that answers 500, 500, then 200."""
    handler = type("Receiver", (_Receiver,), {"answers": [500, 500], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_signed_callback_retried_until_delivered(
    fleet: Fleet, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    [tid] = fleet.submit([{"kind": "echo", "payload": {"hello": "中枢"}, "callback_url": url}])

    def delivered() -> dict[str, Any] | None:
        t = fleet.task(tid)
        return t if t["callback_status"] in ("delivered", "failed") else None

    task = wait_for(delivered, 30, "the callback to be delivered", interval_s=0.1)
    assert task["status"] == "succeeded"
    assert task["callback_status"] == "delivered"
    assert [(d["attempt"], d["status_code"], d["ok"]) for d in task["callback_deliveries"]] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]

    assert len(handler.received) == 3
    ids = {headers["webhook-id"] for headers, _ in handler.received}
    assert len(ids) == 1, "a retried delivery keeps its webhook-id"
    assert ids == {task["callback_deliveries"][0]["webhook_id"]}
    for headers, body in handler.received:
        assert headers["webhook-signature"].startswith("v1,")
        assert callbacks.verify(CALLBACK_SECRET, headers, body)
        doc = json.loads(body)
        assert doc["type"] == "task.succeeded"
        assert doc["data"]["id"] == tid
        assert doc["data"]["status"] == "succeeded"
        assert doc["data"]["result"] == {"hello": "中枢"}
    # Negative controls: another secret, or one changed byte, does not verify.
    headers, body = handler.received[-1]
    other_secret = "whsec_" + "A" * 43 + "="
    assert not callbacks.verify(other_secret, headers, body)
    assert not callbacks.verify(CALLBACK_SECRET, headers, body.replace(b"succeeded", b"succeedeD"))


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()

"""Prometheus metrics: counters fed by the event bus, gauges read from the database at
scrape time (so every replica reports the same queue depth)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from zhongshu.db.node_store import NodeStore
from zhongshu.db.task_store import TaskStore
from zhongshu.services.events import Event, EventBus

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, bus: EventBus, tasks: TaskStore, nodes: NodeStore) -> None:
        self.tasks = tasks
        self.nodes = nodes
        self.registry = CollectorRegistry()
        self.completed = Counter(
            "zhongshu_tasks_completed_total",
            "Tasks that succeeded.",
            ["capability"],
            registry=self.registry,
        )
        self.failed = Counter(
            "zhongshu_tasks_failed_total",
            "Failed attempts; final=true when the task went dead.",
            ["capability", "final"],
            registry=self.registry,
        )
        self.dispatch_latency = Histogram(
            "zhongshu_dispatch_latency_seconds",
            "From a task being ready to being leased to a node.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.by_state = Gauge(
            "zhongshu_tasks",
            "Tasks by state and capability.",
            ["state", "capability"],
            registry=self.registry,
        )
        self.nodes_online = Gauge("zhongshu_nodes_online", "Nodes online.", registry=self.registry)
        bus.listen("task.", self._on_task)

    def _on_task(self, ev: Event) -> None:
        cap = str(ev.data.get("capability", ""))
        if ev.type == "task.succeeded":
            self.completed.labels(cap).inc()
        elif ev.type == "task.failed":
            self.failed.labels(cap, "false").inc()
        elif ev.type == "task.dead":
            self.failed.labels(cap, "true").inc()
        elif ev.type == "task.leased":
            self.dispatch_latency.observe(max(0.0, float(ev.data.get("wait_s", 0.0))))

    async def render(self) -> bytes:
        self.by_state.clear()
        for row in await self.tasks.counts():
            self.by_state.labels(row["status"], row["capability"]).set(row["n"])
        self.nodes_online.set(
            sum(1 for n in await self.nodes.find() if n["status"] == "online" and not n["disabled"])
        )
        return generate_latest(self.registry)

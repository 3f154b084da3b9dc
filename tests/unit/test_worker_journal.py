"""The worker journal: durable outbox, token-checked acks, and the never-run-twice lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhongshu.worker import errors
from zhongshu.worker.journal import Journal, Result


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal" / "worker.db"


def ok(task_id: str = "t1", token: int = 1, value: object = None) -> Result:
    return Result.succeeded(task_id, token, {"v": task_id} if value is None else value)


def test_results_survive_reopen(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([ok("t1"), Result.failed("t2", 7, "boom", retryable=False)])

    with Journal(journal_path) as journal:
        pending = {r.task_id: r for r in journal.pending()}
        assert set(pending) == {"t1", "t2"}
        assert pending["t1"].to_wire() == {
            "task_id": "t1",
            "lease_token": 1,
            "status": "succeeded",
            "result": {"v": "t1"},
        }
        assert pending["t2"].to_wire() == {
            "task_id": "t2",
            "lease_token": 7,
            "status": "failed",
            "error": "boom",
            "retryable": False,
        }


def test_lease_token_type_is_kept(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([ok("a", 3), ok("b", "tok-3")])
        tokens = {r.task_id: r.lease_token for r in journal.pending()}
    assert tokens == {"a": 3, "b": "tok-3"}


def test_ack_moves_final_results_to_done(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([ok("t1"), Result.failed("t2", 1, "bad", retryable=False)])
        assert journal.acknowledge([("t1", 1), ("t2", 1)]) == 2
        assert journal.pending() == []
        assert journal.done_count() == 2

    with Journal(journal_path) as journal:
        found = journal.lookup(["t1", "t2", "t3"])
        assert set(found) == {"t1", "t2"}
        assert found["t1"].result == {"v": "t1"}
        assert all(r.final for r in found.values())
        assert journal.knows("t1") and not journal.knows("t3")


def test_ack_for_an_older_token_keeps_the_newer_result(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([ok("t1", 1)])
        journal.add([ok("t1", 2)])  # re-journaled under a new lease before the old ack came
        assert journal.acknowledge([("t1", 1)]) == 0
        assert [(r.task_id, r.lease_token) for r in journal.pending()] == [("t1", 2)]


def test_acked_retryable_failure_is_forgotten(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([Result.failed("t1", 1, "flaky", retryable=True)])
        journal.acknowledge([("t1", 1)])
        assert journal.pending() == []
        assert journal.lookup(["t1"]) == {}


def test_outbox_wins_over_done_in_lookup(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([ok("t1", 1, value="old")])
        journal.acknowledge([("t1", 1)])
        journal.add([ok("t1", 5, value="old")])
        assert journal.lookup(["t1"])["t1"].lease_token == 5


def test_discard_forgets_a_task(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([Result.failed("t1", 1, "flaky", retryable=True), ok("t2")])
        journal.acknowledge([("t2", 1)])
        journal.discard(["t1", "t2"])
        assert journal.lookup(["t1", "t2"]) == {}
        assert not journal.knows("t1") and not journal.knows("t2")


def test_done_table_is_bounded(journal_path: Path) -> None:
    with Journal(journal_path, done_keep=5) as journal:
        journal.add([ok(f"t{i}") for i in range(20)])
        journal.acknowledge([(f"t{i}", 1) for i in range(20)])
        journal.prune()
        assert journal.done_count() == 5
        assert set(journal.lookup([f"t{i}" for i in range(20)])) == {f"t{i}" for i in range(15, 20)}
        assert not journal.knows("t0")


def test_done_table_forgets_old_results(journal_path: Path) -> None:
    with Journal(journal_path, done_max_age_s=0.0) as journal:
        journal.add([ok("t1")])
        journal.acknowledge([("t1", 1)])
        journal.prune()
        assert journal.done_count() == 0


def test_large_lookup_is_chunked(journal_path: Path) -> None:
    with Journal(journal_path) as journal:
        journal.add([ok(f"t{i}") for i in range(1200)])
        assert len(journal.lookup([f"t{i}" for i in range(1300)])) == 1200


def test_unserialisable_result_is_a_permanent_failure() -> None:
    with pytest.raises(errors.ResultNotSerializable):
        Result.succeeded("t1", 1, {"when": object()})
    with pytest.raises(errors.PermanentFailure):
        Result.succeeded("t1", 1, float("nan"))

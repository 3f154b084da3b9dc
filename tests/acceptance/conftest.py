"""Fixtures for the fleet tests: a real hub and two real workers (see ``procs.py``)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest
from procs import Fleet, running_fleet

# Two workers with different capabilities and capacities; both run every handler kind,
# so only the capability decides where alpha/beta work may go.
FLEET_WORKERS: list[dict[str, Any]] = [
    {"name": "alpha", "capabilities": ["alpha"], "concurrency": 4},
    {"name": "beta", "capabilities": ["beta"], "concurrency": 6},
]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One hub with an ``alpha`` and a ``beta`` worker for a whole test module."""
    with running_fleet(tmp_path_factory.mktemp("fleet"), FLEET_WORKERS) as f:
        yield f


@pytest.fixture
def fleet(shared_fleet: Fleet, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """The module's fleet with every worker running and registered (a test may have
    killed, paused or stopped one); prints the processes' logs when the test failed."""
    shared_fleet.heal()
    yield shared_fleet
    if request.node.stash.get(_FAILED, False):
        print(shared_fleet.tails())


@pytest.fixture
def own_fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    """A fleet for one test only (for tests that kill the hub)."""
    with running_fleet(tmp_path_factory.mktemp("own-fleet"), FLEET_WORKERS) as f:
        yield f
        if request.node.stash.get(_FAILED, False):
            print(f.tails())

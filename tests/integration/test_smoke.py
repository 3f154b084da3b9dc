from __future__ import annotations

import httpx


async def test_submit_and_read_back(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tasks", json={"kind": "echo", "payload": {"x": 1}})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "pending"
    r = await client.get(f"/api/v1/tasks/{task['id']}")
    assert r.json()["payload"] == {"x": 1}

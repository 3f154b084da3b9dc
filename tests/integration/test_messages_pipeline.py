"""The pipeline end to end against a real local page, a fake OpenAI-compatible server and
real receivers: fetch → AI → deliveries, each stage a hub task with its own retries."""

from __future__ import annotations

from typing import Any

import httpx
from messages_support import fake_llm, finished, make_channel, receiver

PAGE = b"""<html><head><title>Zhongshu release notes</title></head><body>
<nav>menu</nav><article><h1>Zhongshu 1.0 is out</h1>
<p>The hub now relays messages to DingTalk, Lark and e-mail through Apprise channels.</p>
<p>Every pipeline stage runs as a durable task with retries and exponential backoff.</p>
<p>Operators can watch each message's per-channel status from the console.</p>
</article></body></html>"""


async def test_fetch_ai_and_send_end_to_end(client: httpx.AsyncClient, hub: Any) -> None:
    with receiver() as rec, fake_llm() as llm:
        rec.pages["/article"] = ("text/html; charset=utf-8", PAGE)
        r = await client.post(
            "/api/v1/ai-providers",
            json={
                "name": "local",
                "base_url": llm.url,
                "model": "tiny-1",
                "api_key": "sk-local-secret-key",
                "prompt_template": "Summarise {{ title }}: {{ page }}",
            },
        )
        assert r.status_code == 201, r.text
        assert "sk-local-secret-key" not in r.text
        ch = await make_channel(client, url=f"json://{rec.url.removeprefix('http://')}/out")
        r = await client.post(
            "/api/v1/messages",
            json={
                "title": "Release",
                "url": rec.url + "/article",
                "channels": [ch["id"]],
                "ai": True,
            },
        )
        assert r.status_code == 201, r.text
        done = await finished(client, r.json()["message_id"])
        assert done["status"] == "sent", done
        assert done["fetch"]["status"] == "done"
        assert done["fetch"]["title"] in ("Zhongshu release notes", "Zhongshu 1.0 is out")
        assert done["fetch"]["chars"] > 100
        assert done["ai"] == {
            "enabled": True,
            "status": "done",
            "provider_id": done["ai"]["provider_id"],
            "result": llm.answer,
            "error": None,
        }
        assert done["channels"][0]["status"] == "sent"
        # The fetched text is stored under the data dir and went into the prompt.
        stored = list((hub.settings.data_dir / "messages").rglob("*.txt"))
        assert len(stored) == 1 and "durable task" in stored[0].read_text()
        assert "durable task" in llm.requests[0]["messages"][0]["content"]
        assert llm.requests[0]["model"] == "tiny-1"
        assert llm.auth[0] == "Bearer sk-local-secret-key"
        sent = rec.at("/out")[0].json()
        assert sent["title"] == "Release"
        assert sent["message"].startswith(llm.answer)
        assert rec.url + "/article" in sent["message"]
        # The view link shows the fetched page to whoever holds it.
        view = await client.get("/view/" + done["view_url"].rsplit("/", 1)[1])
        assert "exponential backoff" in view.text and llm.answer in view.text
        # Each stage ran as a hub task of the message's owner.
        tasks = (await client.get("/api/v1/tasks", params={"limit": 50})).json()["items"]
        kinds = sorted(t["kind"] for t in tasks if t["kind"].startswith("message."))
        assert kinds == ["message.ai", "message.deliver", "message.fetch"]


async def test_a_channel_that_fails_twice_then_succeeds(client: httpx.AsyncClient) -> None:
    with receiver() as rec:
        rec.fail["/flaky"] = 2
        ch = await make_channel(client, url=f"json://{rec.url.removeprefix('http://')}/flaky")
        r = await client.post("/api/v1/messages", json={"content": "hi", "channels": [ch["id"]]})
        done = await finished(client, r.json()["message_id"])
        assert done["status"] == "sent"
        assert done["channels"][0]["attempts"] == 3
        assert done["channels"][0]["error"] is None
        assert len(rec.at("/flaky")) == 3


async def test_one_channel_always_failing_ends_partially_sent(client: httpx.AsyncClient) -> None:
    with receiver() as rec:
        rec.always_fail.add("/down")
        host = rec.url.removeprefix("http://")
        good = await make_channel(client, name="good", url=f"json://{host}/up")
        bad = await make_channel(client, name="bad", kind="http", url=rec.url + "/down")
        r = await client.post(
            "/api/v1/messages", json={"content": "hi", "channels": f"{good['id']}|{bad['id']}"}
        )
        done = await finished(client, r.json()["message_id"])
        assert done["status"] == "partially_sent"
        by_name = {c["name"]: c for c in done["channels"]}
        assert by_name["good"]["status"] == "sent"
        assert by_name["bad"]["status"] == "failed"
        assert by_name["bad"]["attempts"] == 3
        assert "HTTP 500" in by_name["bad"]["error"]
        task = (await client.get(f"/api/v1/tasks/{by_name['bad']['task_id']}")).json()
        assert task["status"] == "dead"


async def test_a_page_that_cannot_be_fetched_still_lets_the_message_go(
    client: httpx.AsyncClient,
) -> None:
    with receiver() as rec:
        rec.always_fail.add("/broken")
        ch = await make_channel(client, url=f"json://{rec.url.removeprefix('http://')}/o")
        r = await client.post(
            "/api/v1/messages",
            json={"title": "t", "url": rec.url + "/broken", "channels": [ch["id"]]},
        )
        done = await finished(client, r.json()["message_id"])
        assert done["fetch"]["status"] == "failed"
        assert "HTTP 500" in done["fetch"]["error"]
        assert done["status"] == "sent"
        assert len(rec.at("/broken")) == 3

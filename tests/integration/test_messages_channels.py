"""Channels: Apprise to a real HTTP receiver and a real SMTP server, a templated HTTP
channel through a real proxy with truncation and a view link, secrets sealed and masked."""

from __future__ import annotations

from typing import Any

import httpx
from identity_support import make_user
from messages_support import (
    finished,
    forward_proxy,
    make_channel,
    receiver,
    smtp_server,
    socks5_proxy,
)
from sqlalchemy import select

from zhongshu.db.schema import channels


async def test_apprise_json_and_form_deliver_to_a_real_receiver(client: httpx.AsyncClient) -> None:
    with receiver() as rec:
        host = rec.url.removeprefix("http://")
        j = await make_channel(client, name="json", url=f"json://{host}/hook")
        f = await make_channel(client, name="form", url=f"form://{host}/form")
        r = await client.post(f"/api/v1/channels/{j['id']}/test")
        assert r.json() == {"ok": True, "error": None, "truncated": False}
        hit = rec.at("/hook")[0]
        assert hit.json()["title"] == "zhongshu test"
        assert "test message" in hit.json()["message"]

        r = await client.post(
            "/api/v1/messages",
            json={"title": "Hello", "content": "from the hub", "channels": [j["id"], f["id"]]},
        )
        assert r.status_code == 201, r.text
        done = await finished(client, r.json()["message_id"])
        assert done["status"] == "sent"
        assert [c["status"] for c in done["channels"]] == ["sent", "sent"]
        assert rec.at("/hook")[-1].json()["message"] == "from the hub"
        form = rec.at("/form")[0]
        assert form.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert b"from+the+hub" in form.body


async def test_apprise_mailto_delivers_to_a_real_smtp_server(client: httpx.AsyncClient) -> None:
    with smtp_server() as box:
        url = f"mailto://127.0.0.1:{box.port}?from=hub@example.com&to=me@example.com"
        ch = await make_channel(client, name="mail", url=url)
        r = await client.post(
            "/api/v1/messages",
            json={"title": "Mail subject", "content": "Mail body", "channels": [ch["id"]]},
        )
        done = await finished(client, r.json()["message_id"])
        assert done["status"] == "sent", done
        sender, rcpts, content = box.mails[0]
        assert (sender, rcpts) == ("hub@example.com", ["me@example.com"])
        assert b"Subject: Mail subject" in content
        assert b"Mail body" in content


async def test_templated_http_channel_through_a_proxy_is_cut_with_a_view_link(
    client: httpx.AsyncClient,
) -> None:
    with receiver() as rec, forward_proxy() as proxy:
        ch = await make_channel(
            client,
            name="tpl",
            kind="http",
            url=rec.url + "/tpl?key=SECRET-IN-URL",
            method="PUT",
            headers={"X-Api-Key": "SECRET-HEADER-VALUE"},
            body_template='{"t": {{ title|tojson }}, "c": {{ content|tojson }}, '
            '"v": {{ view_url|tojson }}, "ts": {{ timestamp }}, "r": "{{ random }}"}',
            proxy=proxy.url,
            max_length=120,
        )
        long_text = "word " * 200
        r = await client.post(
            "/api/v1/messages", json={"title": "Long", "content": long_text, "channels": [ch["id"]]}
        )
        assert r.status_code == 201, r.text
        msg = r.json()
        done = await finished(client, msg["message_id"])
        assert done["status"] == "sent"
        assert done["channels"][0]["truncated"] is True
        hit = rec.at("/tpl")[0]
        assert hit.method == "PUT"
        assert hit.headers.get("x-api-key") == "SECRET-HEADER-VALUE"
        body = hit.json()
        assert len(body["c"]) == 120
        assert body["c"].endswith(msg["view_url"])
        assert body["v"] == msg["view_url"]
        assert isinstance(body["ts"], int) and len(body["r"]) == 32
        assert any(s.startswith("PUT http://127.0.0.1") for s in proxy.seen)
        # The link shows the whole message to whoever holds it, without logging in.
        view_path = "/view/" + msg["view_url"].rsplit("/", 1)[1]
        view = await client.get(view_path, headers={"authorization": ""})
        assert view.status_code == 200
        assert long_text.strip() in view.text
        assert view.headers["content-type"].startswith("text/html")
        assert (await client.get("/view/not-a-token")).status_code == 404


async def test_a_runaway_channel_template_fails_its_delivery_not_the_hub(
    client: httpx.AsyncClient,
) -> None:
    """Any user may write a body template: one that loops for ever fails its own delivery
    (no retry: it would loop again) while the hub keeps answering."""
    endless = "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}"
    with receiver() as rec:
        bad = await make_channel(
            client, name="loops", kind="http", url=rec.url + "/loop", body_template=endless
        )
        good = await make_channel(client, name="fine", kind="http", url=rec.url + "/fine")
        r = await client.post(
            "/api/v1/messages", json={"content": "hi", "channels": [bad["id"], good["id"]]}
        )
        assert r.status_code == 201, r.text
        message_id = r.json()["message_id"]
        # The hub answers while the template runs in the renderer's child process.
        for _ in range(5):
            assert (await client.get("/healthz")).status_code == 200
        done = await finished(client, message_id)
        assert done["status"] == "partially_sent"
        by_id = {c["channel_id"]: c for c in done["channels"]}
        assert by_id[good["id"]]["status"] == "sent"
        failed = by_id[bad["id"]]
        assert failed["status"] == "failed" and failed["attempts"] == 1
        assert "longer than" in failed["error"]
        assert rec.at("/loop") == [] and len(rec.at("/fine")) == 1


async def test_both_channel_kinds_deliver_through_a_socks5_proxy(
    client: httpx.AsyncClient,
) -> None:
    with receiver() as rec, socks5_proxy() as proxy:
        host = rec.url.removeprefix("http://")
        apprise_ch = await make_channel(
            client, name="json-socks", url=f"json://{host}/via-socks", proxy=proxy.url
        )
        http_ch = await make_channel(
            client,
            name="tpl-socks",
            kind="http",
            url=rec.url + "/tpl-socks",
            body_template='{"t": {{ title|tojson }}}',
            proxy=proxy.url,
        )
        for ch in (apprise_ch, http_ch):
            r = await client.post(f"/api/v1/channels/{ch['id']}/test")
            assert r.json()["ok"] is True, r.text
        assert rec.at("/via-socks") and rec.at("/tpl-socks")
        # Both went through the proxy, authenticated with the channel's credentials.
        assert proxy.seen.count("AUTH demo") == 2
        assert proxy.seen.count(f"CONNECT {host}") == 2


async def test_secrets_are_sealed_at_rest_and_masked_in_responses(
    client: httpx.AsyncClient, hub: Any
) -> None:
    token_url = "dingtalk://supersecrettoken1234567890/"
    ch = await make_channel(client, name="ding", url=token_url, proxy="http://u:pw@127.0.0.1:3128")
    text = (await client.get(f"/api/v1/channels/{ch['id']}")).text
    assert "supersecrettoken1234567890" not in text
    assert "pw@" not in text
    assert ch["service"]
    rows = await hub.db.run_read(lambda c: [dict(r._mapping) for r in c.execute(select(channels))])
    raw = repr(rows)
    assert "supersecrettoken1234567890" not in raw and "u:pw" not in raw
    http_ch = await make_channel(
        client,
        name="h",
        kind="http",
        url="https://example.com/hook/abcdef123456",
        headers={"Authorization": "Bearer very-secret-token"},
    )
    assert "abcdef123456" not in str(http_ch) and "very-secret-token" not in str(http_ch)
    # A partial update keeps the sealed secret.
    r = await client.patch(f"/api/v1/channels/{http_ch['id']}", json={"name": "renamed"})
    assert r.status_code == 200 and r.json()["name"] == "renamed"
    assert hub.channels.spec_of(await hub.channels.get(http_ch["id"])).headers == {
        "Authorization": "Bearer very-secret-token"
    }


async def test_bad_channels_are_refused_when_saved(client: httpx.AsyncClient) -> None:
    for body in (
        {"name": "x", "url": "dingtalk://"},
        {"name": "x", "url": "nonsense-scheme://foo"},
        {"name": "x", "url": "not a url"},
        {"name": "x", "kind": "http", "url": "ftp://example.com/x"},
        {"name": "x", "kind": "http", "url": "https://e.com", "body_template": "{{ oops"},
        {"name": "x", "url": "json://127.0.0.1/x", "proxy": "gopher://p:1"},
        {"name": "x", "url": "json://127.0.0.1/x", "max_length": 3},
        {"name": "x", "kind": "http", "url": "https://e.com", "headers": {"Bad Name": "v"}},
    ):
        r = await client.post("/api/v1/channels", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"]
    r = await client.post("/api/v1/channels", json={"name": "x", "url": "dingtalk://"})
    assert "Apprise URL" in r.json()["detail"]


async def test_channels_belong_to_their_owner(client: httpx.AsyncClient) -> None:
    alice = await make_user(client)
    bob = await make_user(client)
    ch = await make_channel(client, alice.headers, name="a", url="json://127.0.0.1:9/x")
    for method, path in (
        ("GET", f"/api/v1/channels/{ch['id']}"),
        ("PATCH", f"/api/v1/channels/{ch['id']}"),
        ("DELETE", f"/api/v1/channels/{ch['id']}"),
        ("POST", f"/api/v1/channels/{ch['id']}/test"),
    ):
        r = await client.request(
            method, path, headers=bob.headers, json={} if method != "GET" else None
        )
        assert r.status_code == 404, (method, path, r.text)
    listed = (await client.get("/api/v1/channels", headers=bob.headers)).json()["items"]
    assert listed == []
    # Bob cannot send through Alice's channel either.
    r = await client.post(
        "/api/v1/messages", json={"title": "x", "channels": [ch["id"]]}, headers=bob.headers
    )
    assert r.status_code == 422 and "unknown channel" in r.json()["detail"]
    # A test send that fails reports why, it does not error.
    r = await client.post(f"/api/v1/channels/{ch['id']}/test", headers=alice.headers)
    assert r.status_code == 200 and r.json()["ok"] is False and r.json()["error"]

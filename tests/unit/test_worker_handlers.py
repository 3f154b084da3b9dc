"""Built-in handlers, ``http.fetch`` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from zhongshu.worker import PermanentFailure, TaskContext
from zhongshu.worker.handlers import builtin

MiB = 1024 * 1024


def ctx(kind: str, timeout_s: float | None = None) -> TaskContext:
    return TaskContext(task_id="t1", kind=kind, timeout_s=timeout_s)


async def _big_chunked(request: web.Request) -> web.StreamResponse:
    # No Content-Length: the limit must be enforced while reading.
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(int(request.query.get("mib", "2"))):
        await response.write(b"x" * MiB)
    await response.write_eof()
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get(
        "/hello",
        lambda r: web.Response(
            text="héllo wörld", headers={"ETag": '"abc"', "Set-Cookie": "session=secret"}
        ),
    )
    app.router.add_get("/status/404", lambda r: web.Response(status=404, text="nope"))
    app.router.add_get("/big", lambda r: web.Response(body=b"y" * (2 * MiB)))
    app.router.add_get("/big-chunked", _big_chunked)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/redirect", lambda r: web.HTTPFound("/hello"))
    return app


@pytest.fixture
async def server() -> AsyncIterator[str]:
    runner = web.AppRunner(_app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(payload: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    return await builtin.http_fetch(ctx("http.fetch", timeout_s), payload)


async def test_echo_returns_the_payload() -> None:
    assert await builtin.echo(ctx("echo"), {"a": [1, 2]}) == {"a": [1, 2]}


async def test_sleep_sleeps_and_is_bounded() -> None:
    assert await builtin.sleep(ctx("sleep"), {"seconds": 0.01}) == {"slept_s": 0.01}
    with pytest.raises(PermanentFailure, match="seconds"):
        await builtin.sleep(ctx("sleep"), {"seconds": 10**6})
    with pytest.raises(PermanentFailure, match="number"):
        await builtin.sleep(ctx("sleep"), {"seconds": "soon"})


async def test_fail_is_retryable_unless_told_otherwise() -> None:
    with pytest.raises(RuntimeError, match="try again") as info:
        await builtin.fail(ctx("fail"), {"message": "try again"})
    assert not isinstance(info.value, PermanentFailure)
    with pytest.raises(PermanentFailure, match="give up"):
        await builtin.fail(ctx("fail"), {"message": "give up", "retryable": False})


async def test_fetch_returns_status_headers_text_size(server: str) -> None:
    out = await fetch({"url": f"{server}/hello"})
    assert out["status_code"] == 200
    assert out["text"] == "héllo wörld"
    assert out["size"] == len("héllo wörld".encode())
    assert out["truncated"] is False
    assert out["headers"]["etag"] == '"abc"'
    assert "set-cookie" not in {k.lower() for k in out["headers"]}


async def test_fetch_reports_http_errors_as_results(server: str) -> None:
    out = await fetch({"url": f"{server}/status/404"})
    assert out["status_code"] == 404 and out["text"] == "nope"


async def test_fetch_follows_redirects(server: str) -> None:
    out = await fetch({"url": f"{server}/redirect"})
    assert out["status_code"] == 200 and out["url"].endswith("/hello")


async def test_fetch_truncates_text(server: str) -> None:
    out = await fetch({"url": f"{server}/hello", "max_text_chars": 5})
    assert out["text"] == "héllo" and out["truncated"] is True


async def test_fetch_refuses_a_declared_oversized_body(server: str) -> None:
    with pytest.raises(PermanentFailure, match="max_bytes=1048576"):
        await fetch({"url": f"{server}/big", "max_bytes": MiB})
    out = await fetch({"url": f"{server}/big", "max_text_chars": 10})
    assert out["size"] == 2 * MiB


async def test_fetch_limits_a_streamed_body(server: str) -> None:
    with pytest.raises(PermanentFailure, match="larger than max_bytes"):
        await fetch({"url": f"{server}/big-chunked?mib=8"})  # default limit: 5 MiB
    out = await fetch({"url": f"{server}/big-chunked?mib=2", "max_text_chars": 0})
    assert out["size"] == 2 * MiB and out["text"] == ""


async def test_fetch_has_a_time_limit(server: str) -> None:
    with pytest.raises(TimeoutError, match=r"longer than 0\.2s"):
        await fetch({"url": f"{server}/slow", "timeout_s": 0.2})
    with pytest.raises(TimeoutError, match=r"longer than 0\.3s"):
        await fetch({"url": f"{server}/slow"}, timeout_s=0.3)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "http://", "", None, 3]
)
async def test_fetch_refuses_non_http_urls(url: object) -> None:
    with pytest.raises(PermanentFailure, match="url"):
        await fetch({"url": url})


async def test_fetch_validates_limits() -> None:
    with pytest.raises(PermanentFailure, match="max_bytes"):
        await fetch({"url": "http://127.0.0.1:1/", "max_bytes": -1})

"""Built-in handlers: ``echo``, ``sleep``, ``fail`` and ``http.fetch``.

``echo``/``sleep``/``fail`` exist for tests, demos and benchmarks; ``http.fetch`` is the
smallest useful collector. Bad payloads raise ``PermanentFailure`` because retrying the
same payload cannot succeed.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx

from zhongshu.worker.errors import PermanentFailure
from zhongshu.worker.registry import TaskContext, handler

MAX_SLEEP_S = 3600.0
FETCH_MAX_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT_S = 30.0
FETCH_MAX_TEXT_CHARS = 64 * 1024
# Headers worth keeping; the rest (cookies, tracing ids…) are noise or sensitive.
FETCH_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "last-modified",
    "etag",
    "date",
    "expires",
    "cache-control",
    "location",
    "server",
)


@handler("echo")
async def echo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload unchanged (the no-op task of the benchmarks)."""
    return payload


@handler("sleep")
async def sleep(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``payload["seconds"]`` (0…3600), then report how long it slept."""
    seconds_s = _number(payload, "seconds", default=1.0, low=0.0, high=MAX_SLEEP_S)
    await asyncio.sleep(seconds_s)
    return {"slept_s": seconds_s}


@handler("fail")
async def fail(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Fail with ``payload["message"]``; ``{"retryable": false}`` makes the failure final."""
    message = str(payload.get("message") or "failed on purpose")
    if payload.get("retryable", True) is False:
        raise PermanentFailure(message)
    raise RuntimeError(message)


@handler("http.fetch")
async def http_fetch(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """GET ``payload["url"]`` with a size limit (``max_bytes``) and a time limit (``timeout_s``).

    Returns ``{url, status_code, headers, text, truncated, size}``: ``text`` is cut to
    ``max_text_chars`` characters, ``size`` counts the body bytes read. A body larger than
    ``max_bytes`` fails the task (not retryable): the same URL will be as large next time.
    """
    url = _http_url(payload.get("url"))
    max_bytes = int(_number(payload, "max_bytes", default=FETCH_MAX_BYTES, low=1, high=2**31))
    max_chars = int(
        _number(payload, "max_text_chars", default=FETCH_MAX_TEXT_CHARS, low=0, high=2**31)
    )
    timeout_s = _number(payload, "timeout_s", default=FETCH_TIMEOUT_S, low=0.001, high=3600)
    if ctx.timeout_s:
        timeout_s = min(timeout_s, ctx.timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            response, body = await _get_limited(url, max_bytes, timeout_s)
    except TimeoutError:
        raise TimeoutError(f"http.fetch of {url} took longer than {timeout_s:g}s") from None
    text = body.decode(response.encoding or "utf-8", errors="replace")
    return {
        "url": str(response.url),
        "status_code": response.status_code,
        "headers": {k: v for k, v in response.headers.items() if k.lower() in FETCH_HEADERS},
        "text": text[:max_chars],
        "truncated": len(text) > max_chars,
        "size": len(body),
    }


async def _get_limited(url: str, max_bytes: int, timeout_s: float) -> tuple[httpx.Response, bytes]:
    async with (
        httpx.AsyncClient(
            follow_redirects=True, timeout=timeout_s, trust_env=False, verify=_tls_context()
        ) as client,
        client.stream("GET", url) as response,
    ):
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(url, max_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(url, max_bytes)
            chunks.append(chunk)
        return response, b"".join(chunks)


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of ms; one context serves every fetch.
    return ssl.create_default_context()


def _too_large(url: str, max_bytes: int) -> PermanentFailure:
    return PermanentFailure(f"response body of {url} is larger than max_bytes={max_bytes}")


def _http_url(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise PermanentFailure("payload.url is required (an http:// or https:// URL)")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise PermanentFailure(f"payload.url must be an http(s) URL, got {value[:200]!r}")
    return value


def _number(payload: dict[str, Any], key: str, *, default: float, low: float, high: float) -> float:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PermanentFailure(f"payload.{key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise PermanentFailure(f"payload.{key} must be between {low:g} and {high:g}, got {value}")
    return float(value)

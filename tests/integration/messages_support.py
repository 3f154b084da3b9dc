"""Real receivers on 127.0.0.1 for the message tests: an HTTP receiver (webhooks, pages),
an SMTP server (aiosmtpd), a small HTTP forward/CONNECT proxy and a fake OpenAI-compatible
chat-completions server. Each runs in a thread, so the hub's event loop stays free."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import select
import socket
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
from identity_support import make_user


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; ``fail[path] = n`` answers the next n requests there with 500;
    ``pages[path] = (content_type, body)`` serves GETs."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    always_fail: set[str] = field(default_factory=set)
    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path.split("?")[0] == path]


def _receiver_handler(rec: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            path = self.path.split("?")[0]
            with rec.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec.hits.append(Hit(self.command, self.path, headers, body))
                failing = path in rec.always_fail or rec.fail.get(path, 0) > 0
                if rec.fail.get(path, 0) > 0:
                    rec.fail[path] -= 1
                page = rec.pages.get(path)
            if failing:
                status, ctype, out = 500, "text/plain", b"receiver says no"
            elif page is not None and self.command == "GET":
                status, (ctype, out) = 200, page
            else:
                status, ctype, out = 200, "application/json", b'{"ok": true}'
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_PATCH = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    with serve(_receiver_handler(rec)) as server:
        rec.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield rec


# --- SMTP --------------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int = 0
    mails: list[tuple[str, list[str], bytes]] = field(default_factory=list)


@contextlib.contextmanager
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.mails.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        box.port = s.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes (or 10 s of silence); closes upstream."""
    sockets = [client, upstream]
    with contextlib.suppress(OSError):
        while True:
            ready, _, _ = select.select(sockets, [], [], 10)
            if not ready:
                break
            for s in ready:
                data = s.recv(65536)
                if not data:
                    upstream.close()
                    return
                (upstream if s is client else client).sendall(data)
    upstream.close()


# --- a forward proxy ---------------------------------------------------------------------


@dataclass
class Proxy:
    url: str = ""
    seen: list[str] = field(default_factory=list)


def _proxy_handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            proxy.seen.append(f"{self.command} {self.path}")
            target = urlsplit(self.path)
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else None
            conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection",)
            }
            path = target.path + (f"?{target.query}" if target.query else "")
            conn.request(self.command, path or "/", body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = _forward

        def do_CONNECT(self) -> None:
            proxy.seen.append(f"CONNECT {self.path}")
            host, _, port = self.path.partition(":")
            upstream = socket.create_connection((host, int(port or 443)), timeout=10)
            self.send_response(200, "Connection established")
            self.end_headers()
            _pipe(self.connection, upstream)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def forward_proxy() -> Iterator[Proxy]:
    proxy = Proxy()
    with serve(_proxy_handler(proxy)) as server:
        proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield proxy


# --- a fake OpenAI-compatible server -----------------------------------------------------


@dataclass
class FakeLLM:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    answer: str = "AI SUMMARY: the page is about zhongshu."


def _llm_handler(llm: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            llm.requests.append(body)
            llm.auth.append(self.headers.get("authorization", ""))
            if self.path != "/v1/chat/completions":
                self.send_response(404)
                self.end_headers()
                return
            out = json.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": llm.answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def fake_llm() -> Iterator[FakeLLM]:
    llm = FakeLLM()
    with serve(_llm_handler(llm)) as server:
        llm.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        yield llm


# --- helpers -----------------------------------------------------------------------------


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout_s: float = 15.0, every_s: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s")
        await asyncio.sleep(every_s)


async def make_channel(
    client: httpx.AsyncClient, as_: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    """Create a channel (as the client's user, or with the ``as_`` headers)."""
    body = {"name": fields.pop("name", "ch"), **fields}
    r = await client.post("/api/v1/channels", json=body, headers=as_ or {})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def finished(
    client: httpx.AsyncClient, message_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Wait until the message has a final status; returns it."""

    async def check() -> dict[str, Any] | None:
        r = await client.get(f"/api/v1/messages/{message_id}", headers=headers or {})
        assert r.status_code == 200, r.text
        body = r.json()
        return body if body["status"] in ("sent", "partially_sent", "failed") else None

    return await wait_for(check)  # type: ignore[no-any-return]


__all__ = ["make_user"]


# --- a SOCKS5 proxy (RFC 1928, no-auth and username/password) --------------------------


@dataclass
class Socks5:
    url: str = ""
    seen: list[str] = field(default_factory=list)


def _socks5_handler(proxy: Socks5) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        def _read(self, n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = self.request.recv(n - len(data))
                if not chunk:
                    raise ConnectionError("client went away")
                data += chunk
            return data

        def handle(self) -> None:
            sock = self.request
            _, n_methods = self._read(2)
            methods = self._read(n_methods)
            if 2 in methods:  # username/password (RFC 1929)
                sock.sendall(b"\x05\x02")
                _, ulen = self._read(2)
                user = self._read(ulen)
                (plen,) = self._read(1)
                self._read(plen)
                proxy.seen.append(f"AUTH {user.decode()}")
                sock.sendall(b"\x01\x00")
            else:
                sock.sendall(b"\x05\x00")
            _, _cmd, _, atyp = self._read(4)  # CONNECT is all this proxy does
            if atyp == 1:
                host = socket.inet_ntoa(self._read(4))
            elif atyp == 3:
                (hlen,) = self._read(1)
                host = self._read(hlen).decode()
            else:
                host = socket.inet_ntop(socket.AF_INET6, self._read(16))
            port = int.from_bytes(self._read(2), "big")
            proxy.seen.append(f"CONNECT {host}:{port}")
            upstream = socket.create_connection((host, port), timeout=10)
            sock.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
            _pipe(sock, upstream)

    return Handler


@contextlib.contextmanager
def socks5_proxy() -> Iterator[Socks5]:
    proxy = Socks5()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), _socks5_handler(proxy))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proxy.url = f"socks5://demo:pw@127.0.0.1:{server.server_address[1]}"
        yield proxy
    finally:
        server.shutdown()
        server.server_close()

"""A small synchronous HTTP client for the hub's REST API, used by the CLI commands.

It exists so that every command fails the same way: whatever goes wrong (hub down, slow,
refusing the request) becomes one ``HubError`` with a sentence a person can act on, which
``exit_on_error`` prints as one red line on stderr before exiting with code 1.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from zhongshu import __version__, errors

DEFAULT_HUB = "http://127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 30.0

stderr = Console(stderr=True, soft_wrap=True, highlight=False)


class HubError(errors.ZhongshuError):
    """The hub could not be reached or refused the request: the message says which and why.

    ``status_code`` is the hub's HTTP status, or 0 when no answer came back.
    """

    status_code = 0

    def __init__(self, message: str, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"HubError({self.message!r}, status_code={self.status_code})"


def normalize_hub_url(url: str) -> str:
    """Check the scheme and drop trailing slashes, so stored and typed URLs compare equal."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"hub URL must start with http:// or https://, got {url!r}")
    return url


class HubClient:
    """Talks JSON to one hub. Use as a context manager so the connection pool is closed.

    Parameters
    ----------
    base_url:
        The hub, e.g. ``http://127.0.0.1:8001``.
    token:
        A bearer token from ``/api/v1/auth/login``, a user API key ``WK…:SK…`` (sent as
        ``AK-SK``), or ``None`` for anonymous calls.
    timeout_s:
        How long one request may take before it is reported as unanswered.
    """

    def __init__(
        self, base_url: str, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url = normalize_hub_url(base_url)
        headers = {"user-agent": f"zhongshu-cli/{__version__}"}
        if token:
            headers["authorization"] = authorization(token)
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, verify=_tls(self.base_url)
        )

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=json, headers=headers)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.request("PATCH", path, json=json)

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.request("DELETE", path, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; returns the decoded JSON body (``None`` for an empty one).

        Raises ``HubError`` for every failure, so callers handle exactly one exception type.
        """
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.ConnectError as exc:
            raise HubError(
                f"cannot reach the hub at {self.base_url}: is `zhongshu serve` running?"
            ) from exc
        except httpx.TimeoutException as exc:
            raise HubError(
                f"the hub at {self.base_url} did not answer within "
                f"{self._http.timeout.read}s ({method} {path})"
            ) from exc
        except httpx.HTTPError as exc:
            raise HubError(f"cannot talk to the hub at {self.base_url}: {exc}") from exc
        if response.is_error:
            raise HubError(_refusal(response), response.status_code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise HubError(
                f"the hub at {self.base_url} answered {method} {path} with something other "
                "than JSON: is that URL really a zhongshu hub?"
            ) from exc


def _tls(base_url: str) -> bool | ssl.SSLContext:
    """Full verification for https. A plain-http hub never uses TLS (redirects are not
    followed), so skip loading the CA bundle, which costs ~0.1 s per command; the bare
    context trusts no CA, so a stray https request would fail rather than go unverified."""
    if base_url.startswith("https://"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def authorization(token: str) -> str:
    """The Authorization value: user API keys (``WK…:SK…``) go as AK-SK, the rest as Bearer."""
    if token.startswith("WK") and ":SK" in token:
        return f"AK-SK {token}"
    return f"Bearer {token}"


def _refusal(response: httpx.Response) -> str:
    """One line from an error reply: the hub's ``detail``, the status, and a hint if any."""
    detail = _detail(response)
    message = f"{detail} (HTTP {response.status_code})"
    if response.status_code == 401 and "authorization" in response.request.headers:
        message += " — run `zhongshu login` (the token may have expired) or pass --token"
    return message


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return text[0][:200] if text else response.reason_phrase or "no reason given"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    if detail:  # FastAPI's default validation shape: a list of {loc, msg}
        return "; ".join(_problem(d) for d in detail) if isinstance(detail, list) else str(detail)
    return response.reason_phrase or "no reason given"


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
    return f"{loc}: {item.get('msg')}" if loc else str(item.get("msg"))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red error line on stderr; returns the ``Exit`` for the caller to raise."""
    stderr.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a ``HubError`` raised inside the block into the error line and exit code 1."""
    try:
        yield
    except HubError as exc:
        raise fail(exc.message) from exc

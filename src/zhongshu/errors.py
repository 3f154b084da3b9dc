"""Every error zhongshu raises on purpose, under one root.

Services raise these; only the HTTP and Socket.IO edges turn them into status codes
(see ``api/errors.py``). Each docstring names the cause and the fix.
"""

from __future__ import annotations


class ZhongshuError(Exception):
    """Root of all zhongshu errors."""

    status_code = 400

    def __init__(self, message: str = "") -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])
        self.message = str(self.args[0])


class ConfigError(ZhongshuError):
    """The configuration is invalid: fix the named field in config.yaml or ZHONGSHU_* env."""


class StoreError(ZhongshuError):
    """The database refused an operation; the cause is attached as ``__cause__``."""

    status_code = 503


class InvalidInput(ZhongshuError):
    """The request is well-formed JSON but a value is wrong: the message names the field."""

    status_code = 422


class NotFound(ZhongshuError):
    """The object does not exist, or belongs to someone else: check the id."""

    status_code = 404


class Conflict(ZhongshuError):
    """The object is not in a state that allows the operation: read its status first."""

    status_code = 409


class AuthenticationFailed(ZhongshuError):
    """The credentials are missing, malformed or wrong: log in again or check the key pair."""

    status_code = 401


class Forbidden(ZhongshuError):
    """The caller is known but lacks the right: ask an admin for the role or scope."""

    status_code = 403


class NodeDisabled(Forbidden):
    """The node was disabled by an admin: enable it with ``zhongshu node enable``."""


class TaskNotFound(NotFound):
    """No task with this id: check the id returned by submit."""


class NodeNotFound(NotFound):
    """No node with this id: list nodes with ``zhongshu node list``."""


class StaleLease(Conflict):
    """The lease this result or start belongs to is no longer current (expired or reassigned)."""


class TooManyRequests(ZhongshuError):
    """Too many attempts: wait for ``retry_after_s`` seconds."""

    status_code = 429

    def __init__(self, message: str = "", retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"TooManyRequests(retry_after_s={self.retry_after_s})"


class UserNotFound(NotFound):
    """No user with this id: list users with ``zhongshu user list``."""


class ApiKeyNotFound(NotFound):
    """No API key with this id (or it is someone else's): list yours with ``zhongshu key list``."""


class StepUpRequired(Forbidden):
    """A sensitive operation without a fresh password confirmation: confirm, then retry."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or 'this operation needs a fresh password confirmation: POST {"password": …} to '
            "/api/v1/auth/confirm and send the returned confirm_token in the "
            "X-Confirm-Token header"
        )

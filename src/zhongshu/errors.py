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


# schedules, message tasks, worker lifecycle


class InvalidSchedule(InvalidInput, ValueError):
    """A cron expression, interval or timezone is not valid: the message names which and why
    (cron: 5 crontab fields; interval: seconds > 0; timezone: an IANA name like Asia/Shanghai)."""


class ScheduleNotFound(NotFound):
    """No schedule with this id (or it is someone else's): list yours at /api/v1/schedules."""


class MessageTaskNotFound(NotFound):
    """No message task with this id (or it is someone else's): list /api/v1/message-tasks."""


class WorkerProfileNotFound(NotFound):
    """No worker profile with this name: add it to ``worker_profiles`` in the config."""


# messages, channels, push
# ``push_code`` is the MessagePusher error code /api/v1/push answers with (docs/messages.md).


class ChannelNotFound(NotFound):
    """No channel with this id (or it is someone else's): list yours at /api/v1/channels."""

    push_code = 1003


class InvalidChannel(InvalidInput):
    """A channel setting is wrong (a malformed Apprise URL, a bad template, a bad proxy):
    the message names the field; fix it and save again."""

    push_code = 1001


class MessageNotFound(NotFound):
    """No message with this id (or it is someone else's): use the id /push returned."""

    push_code = 2001


class AiProviderNotFound(NotFound):
    """No AI provider with this id (or it is someone else's): list /api/v1/ai-providers."""

    push_code = 1006


class RuleNotFound(NotFound):
    """No notification rule with this id: list yours at /api/v1/notification-rules."""


class InvalidPushToken(AuthenticationFailed):
    """The push token is missing or wrong: get yours from GET /api/v1/token."""

    push_code = 1002


class MessageInvalid(InvalidInput):
    """A message needs at least one of title, content and url, each within its limits."""

    push_code = 1001


class MessageChannelsInvalid(InvalidInput):
    """A message names channels that do not exist, are disabled or are someone else's (or
    none at all, and the push token has no default channels): check the channel ids."""

    push_code = 1003


class MessageUrlRefused(InvalidInput):
    """The message URL is not http(s), or points at this hub: give a public http(s) URL."""

    push_code = 1004


class MessageTooLarge(InvalidInput):
    """Title and content are longer than messages_max_content_chars: shorten them, or send
    a URL and let the pipeline fetch the page."""

    status_code = 413
    push_code = 1005


class AiUnavailable(InvalidInput):
    """AI processing was asked for but the user has no AI provider: add one at
    /api/v1/ai-providers, or send ``ai: false``."""

    push_code = 1006


# collected data, IM API


class ItemNotFound(NotFound):
    """No collected item (conversation, content, …) with this id, or it belongs to a source
    you do not own: use the ``id`` an /api/im list returned."""


class NotificationNotFound(NotFound):
    """No notification with this id (or it is someone else's): list /api/v1/notifications."""


class SyncSourceUnknown(NotFound):
    """A sync names a source (``accountId``) the hub does not know: create the source first
    (/api/v1/sources) and sync with its id."""


class SyncNotAssigned(Forbidden):
    """A node synced a source that is not assigned to it: only the node in the source's
    ``assigned_node_id`` may sync it (see master:task:assign)."""


class SyncTooLarge(InvalidInput):
    """A sync carries more items than ``im_sync_max_items`` (or a field over its limit):
    split the snapshot into deltas, or raise the limit in the config."""

    status_code = 413


class SyncGap(Conflict):
    """A delta's ``seq`` skips ahead of the last applied one: a delta was lost. Resend from
    ``expected_seq``, or send a full snapshot (which restarts the sequence)."""

    def __init__(self, message: str = "", expected_seq: int = 1) -> None:
        super().__init__(message)
        self.expected_seq = expected_seq

    def __repr__(self) -> str:
        return f"SyncGap(expected_seq={self.expected_seq})"


class DeliveryFailed(ZhongshuError):
    """A channel did not take a message (connection refused, an error status, Apprise said
    no). ``retryable`` says whether trying again can help; the message carries the cause."""

    status_code = 502

    def __init__(self, message: str = "", retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"DeliveryFailed({self.message!r}, retryable={self.retryable})"


class AiCallFailed(DeliveryFailed):
    """The AI provider did not answer usefully (unreachable, an error status, no choices):
    check its base URL, model and key at /api/v1/ai-providers."""


class FetchFailed(DeliveryFailed):
    """The message URL could not be fetched (unreachable, an error status, too large or
    too slow: messages_fetch_max_bytes, messages_fetch_timeout_s)."""


# sources, proxies, login sessions


class SourceNotFound(NotFound):
    """No source (account) with this id, or it is someone else's: list yours first."""


class LoginSessionNotFound(NotFound):
    """No login session with this id (or it is not this caller's): start a login again."""


class NoCapableWorker(Conflict):
    """No online worker can serve this platform now: start a worker with the platform's
    capability (``zhongshu worker --capability <platform>``) and try again."""


# backups and restore


class BackupNotFound(NotFound):
    """No backup with this name: list them with GET /api/v1/backups or ``zhongshu backup
    list`` and use a name from there (names only, never paths)."""


class InvalidBackup(InvalidInput):
    """The file cannot be restored: it is not a zhongshu backup (a SQLite ``.db`` or a
    ``zhongshu.backup`` ``.jsonl.gz`` dump), it is damaged, or it comes from a newer
    zhongshu. The message says which; restore a different file or upgrade zhongshu."""


class RestoreRefused(Conflict):
    """The target database already has users, and a restore replaces everything in it:
    restore into an empty database, or pass ``--force`` to replace its contents."""

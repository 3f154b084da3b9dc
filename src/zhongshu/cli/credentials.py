"""Where ``zhongshu login`` keeps the hub URL and bearer token between commands.

The file holds a live bearer token, so it is written owner-only (0600, directory 0700) and
replaced atomically: a crash mid-write never leaves a half-written or world-readable file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_FILE = "ZHONGSHU_CREDENTIALS_FILE"


class CredentialsError(Exception):
    """The credentials file exists but cannot be read: delete it or run `zhongshu login`."""


@dataclass(frozen=True)
class Credentials:
    """What a login leaves behind. Times are Unix times, ``None`` when the hub gave none.

    The refresh token lets commands renew the short-lived access token without asking for
    the password again.
    """

    hub: str
    token: str
    username: str | None = None
    expires_at: float | None = None
    refresh_token: str | None = None
    refresh_expires_at: float | None = None

    def expired(self, margin_s: float = 30.0) -> bool:
        """Whether the access token is (about to be) too old to use."""
        return self.expires_at is not None and self.expires_at < time.time() + margin_s

    def renewable(self) -> bool:
        return bool(self.refresh_token) and (
            self.refresh_expires_at is None or self.refresh_expires_at > time.time()
        )


def credentials_path() -> Path:
    """``$ZHONGSHU_CREDENTIALS_FILE``, else ``$XDG_CONFIG_HOME/zhongshu/credentials.json``
    (``~/.config`` when unset)."""
    override = os.environ.get(ENV_FILE)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "zhongshu" / "credentials.json"


def load(path: Path | None = None) -> Credentials | None:
    """The stored credentials, or ``None`` when nobody has logged in."""
    path = path or credentials_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("hub"), str) or not raw.get("token"):
        raise CredentialsError(
            f"credentials file {path} is not a zhongshu login: run `zhongshu login` again"
        )
    return Credentials(
        hub=raw["hub"],
        token=str(raw["token"]),
        username=raw.get("username"),
        expires_at=raw.get("expires_at"),
        refresh_token=raw.get("refresh_token"),
        refresh_expires_at=raw.get("refresh_expires_at"),
    )


def save(creds: Credentials, path: Path | None = None) -> Path:
    """Write the credentials owner-only and atomically; returns the path written."""
    path = path or credentials_path()
    _make_private_dir(path.parent)
    # mkstemp creates the file 0600 from the start, so the token is never readable by others.
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(creds), fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def delete(path: Path | None = None) -> bool:
    """Remove the stored credentials; ``False`` when there were none."""
    path = path or credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def locked(path: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock beside the credentials file (no-op where flock is missing)."""
    path = path or credentials_path()
    _make_private_dir(path.parent)
    try:
        import fcntl
    except ImportError:  # Windows: renewals may race, which at worst means logging in again
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_private_dir(directory: Path) -> None:
    """Create missing directories 0700. Existing ones are left alone: the override path may
    point into a shared directory such as /tmp, whose mode is not ours to change."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask

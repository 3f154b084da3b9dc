"""Secrets at rest: one ``SecretBox`` encrypts every stored credential.

Source cookies and tokens, proxy and channel passwords, AI provider keys: anything the
hub must give back to a worker or a remote service (so it cannot be hashed) is sealed
with Fernet (``cryptography``). ``MultiFernet`` decrypts with any configured key and
encrypts with the first, which is what a key rotation needs.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from zhongshu import errors

PREFIX = "fernet:"


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise errors.ConfigError("no encryption key configured (encryption_keys)")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def seal(self, value: str) -> str:
        """Ciphertext for ``value``, tagged so a stored secret is recognisable."""
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise errors.ConfigError("stored secret is not sealed by zhongshu")
        try:
            return self._fernet.decrypt(sealed.removeprefix(PREFIX).encode()).decode()
        except InvalidToken as exc:
            raise errors.ConfigError(
                "a stored secret cannot be decrypted with the configured encryption_keys"
            ) from exc

    def seal_json(self, value: Any) -> str:
        return self.seal(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def open_json(self, sealed: str) -> Any:
        return json.loads(self.open(sealed))

    def rotate(self, sealed: str) -> str:
        """Re-encrypt with the first (newest) key."""
        return PREFIX + self._fernet.rotate(sealed.removeprefix(PREFIX).encode()).decode()


def mask(value: str | None, keep: int = 4) -> str:
    """What a response shows of a secret: enough to recognise it, never enough to use it."""
    if not value:
        return ""
    if len(value) <= keep * 2:
        return "****"
    return value[:keep] + "****"

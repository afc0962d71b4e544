"""Bearer tokens: from the environment and from a file that is re-read when it changes.

A token file (e.g. a mounted Kubernetes Secret) can be rotated without a restart: the file's
identity (inode, size, modification time) is checked at most once a second, and when it changed the
tokens are read again.  A file that cannot be read or parsed keeps the last tokens in force (and is
logged), so a rotation caught half-way never opens the service.  Once a token file is configured,
authentication stays on: an empty file accepts no token.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path

from oncology.settings import ServeSettings

log = logging.getLogger("oncology.webservice")

#: Seconds between checks of the token file.
CHECK_SECONDS = 1.0


class Tokens:
    def __init__(self, settings: ServeSettings) -> None:
        self._env = [t.get_secret_value().encode() for t in settings.api_tokens]
        self._file: Path | None = settings.api_tokens_file
        self._from_file: list[bytes] = []
        self._identity: tuple[int, int, int] | None = None
        self._next_check = 0.0
        if self._file is not None:
            self._from_file = [t.encode() for t in settings.tokens()[len(self._env):]]  # raises if unreadable
            self._identity = self._stat()

    @property
    def enabled(self) -> bool:
        return bool(self._env) or self._file is not None

    def accepts(self, given: bytes) -> bool:
        """Whether ``given`` is a current token; compared with every one, so the time does not tell which."""
        if self._file is not None and time.monotonic() >= self._next_check:
            self._refresh()
        ok = False
        for expected in (*self._env, *self._from_file):
            ok |= hmac.compare_digest(given, expected)
        return ok

    def _stat(self) -> tuple[int, int, int] | None:
        assert self._file is not None
        try:
            st = os.stat(self._file)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _refresh(self) -> None:
        self._next_check = time.monotonic() + CHECK_SECONDS
        identity = self._stat()
        if identity == self._identity:
            return
        assert self._file is not None
        try:
            lines = self._file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot re-read the API tokens file %s (%s); the previous tokens stay in force", self._file, exc)
            return
        self._from_file = [line.strip().encode() for line in lines if line.strip() and not line.startswith("#")]
        self._identity = identity
        log.info("API tokens file %s changed: %d token(s) now", self._file, len(self._from_file))

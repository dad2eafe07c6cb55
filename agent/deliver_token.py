"""The endpoint's bearer token: read from a file or an environment variable, checked, never shown.

Also defines ``DeliveryConfigError``, the error every part of delivery raises for settings
that cannot work (the daemon exits 2 on it instead of retrying).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

import structlog

_TOKEN = re.compile(r"[\x21-\x7e]+")

log = structlog.get_logger("acqharvest.deliver")


class DeliveryConfigError(Exception):
    """The endpoint settings cannot work (missing token, bad URL, unreadable CA bundle)."""

    def __init__(self, message: str, key: str = "endpoint") -> None:
        super().__init__(message)
        #: the config section at fault, for the message
        self.key = key


class TokenSource(Protocol):
    """Where a section of the config keeps its bearer token (``endpoint``, ``status_server``)."""

    @property
    def token_file(self) -> Path | None: ...
    @property
    def token_env(self) -> str | None: ...


def read_token(settings: TokenSource, key: str = "endpoint") -> str | None:
    """The bearer token from ``token_file`` (preferred) or ``token_env``; None if neither is set.

    Errors name the file or variable, never the token; ``key`` is the config section.
    """
    try:
        return _read_token(settings)
    except DeliveryConfigError as error:
        raise DeliveryConfigError(str(error), key) from None


def _read_token(settings: TokenSource) -> str | None:
    if settings.token_file is not None:
        path = settings.token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise DeliveryConfigError(f"token file {path} does not exist") from None
        except UnicodeDecodeError:
            raise DeliveryConfigError(f"token file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise DeliveryConfigError(f"cannot read token file {path}: {exc.strerror}") from None
        if not token:
            raise DeliveryConfigError(f"token file {path} is empty")
        warn_if_readable_by_others(path, "token_file_permissions")
        source = f"token file {path}"
    elif settings.token_env is not None:
        value = os.environ.get(settings.token_env)
        if value is None:
            raise DeliveryConfigError(f"environment variable {settings.token_env} is not set")
        token = value.strip()
        if not token:
            raise DeliveryConfigError(f"environment variable {settings.token_env} is empty")
        source = f"environment variable {settings.token_env}"
    else:
        return None
    # A control character or space would otherwise surface in an HTTP library error
    # that quotes the header, token included.
    if not _TOKEN.fullmatch(token):
        raise DeliveryConfigError(f"the token in {source} contains spaces or control characters")
    return token


def warn_if_readable_by_others(path: Path, event: str) -> None:
    """Log ``event`` when a secret file (token, private key) is open to other users."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return  # the caller reports an unreadable file itself
    if mode & 0o077:
        log.warning(
            event,
            path=str(path),
            mode=oct(mode),
            hint=f"other users may read it; run: chmod 600 {path}",
        )

"""The optional bearer token. Every route but health needs `Authorization: Bearer <token>`
(HTTP) or an auth frame (socket protocol) when the server has one. Compared in constant
time (hmac.compare_digest), so the check leaks nothing about the token through timing."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Optional

from ..errors import EngineError

TOKEN_ENV = "ENGINE_SERVE_TOKEN"


def load_token(token_file: Optional[str] = None, token: Optional[str] = None) -> Optional[str]:
    """The token from an explicit value, a file (first line, stripped), or ENGINE_SERVE_TOKEN."""
    if token is None and token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, UnicodeDecodeError, IndexError) as e:
            raise EngineError(f"serve: cannot read a token from {token_file} ({e or 'empty file'})") from None
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None and (len(token) < 8 or any(c.isspace() for c in token)):
        raise EngineError("serve: the token must be at least 8 characters without whitespace")
    return token


def token_matches(expected: Optional[str], presented) -> bool:
    """True when no token is set, or `presented` (str or bytes) equals it."""
    if expected is None:
        return True
    if presented is None:
        return False
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected.encode("utf-8"), presented)


def bearer_matches(expected: Optional[str], authorization) -> bool:
    """Check an HTTP Authorization header value ('Bearer <token>', str or bytes)."""
    if expected is None:
        return True
    if not authorization:
        return False
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, value = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and token_matches(expected, value.strip())

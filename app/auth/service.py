"""Who may use the API: the bearer token (scripts) or a session cookie (the browser).

The cookie is stateless: `<expiry>.<HMAC-SHA256(token, expiry)>`. It proves its holder
knew the token when it was made, so changing the token ends every session, and the
token itself never reaches a URL, a log line or page JavaScript (the cookie is HttpOnly).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SESSION_COOKIE = "trainlens_session"


def token_matches(presented: bytes, token: str) -> bool:
    """Constant-time comparison of bytes, so a non-ASCII header is a mismatch, not a
    TypeError."""
    return hmac.compare_digest(presented, token.encode("utf-8"))


def _signature(token: str, expires: int) -> str:
    message = f"trainlens-session:{expires}".encode()
    return hmac.new(token.encode("utf-8"), message, hashlib.sha256).hexdigest()


def make_session(token: str, lifetime_seconds: float) -> str:
    expires = int(time.time() + lifetime_seconds)
    return f"{expires}.{_signature(token, expires)}"


def session_valid(value: str, token: str) -> bool:
    expires_text, _, signature = value.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires < time.time():
        return False
    return hmac.compare_digest(signature.encode("latin-1"), _signature(token, expires).encode())


def bearer_credential(authorization: bytes) -> bytes | None:
    scheme, _, credential = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credential.strip()

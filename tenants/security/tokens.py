"""Signed tokens (JWS, pinned to HS256): visitor cookies and other bearer tokens of a purpose.

The header's ``kid`` only selects one of the configured keys; an unknown kid, another algorithm, a bad
signature, another tenant or another purpose all fail the same way: the token is not trusted.
Tokens carry ids only, never personal data.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import GuestProtocol, OctKey

from tenants.settings import SigningKey, get_settings

__all__ = ["TokenClaims", "TokenSigner", "get_signer"]

ALGORITHMS = ["HS256"]
MAX_TOKEN_LENGTH = 1024
CHECKED_TOKENS = 100_000
"""Signature checks remembered per process (a few tens of MB at most)."""
_UNCHECKED = object()


@dataclass(frozen=True)
class TokenClaims:
    tenant_id: UUID
    subject: UUID
    """The visitor (or other entity) the token names."""
    issued_at: int
    key_id: str
    extra: dict[str, Any] = field(default_factory=dict)


class TokenSigner:
    """Signs with the newest key; verifies with any configured key."""

    def __init__(self, keys: tuple[SigningKey, ...]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._newest = keys[0]
        self._by_id = {key.key_id: OctKey.import_key(key.secret) for key in keys}
        self._checked: dict[str, tuple[str, dict[str, Any]] | None] = {}

    def sign(self, purpose: str, tenant_id: UUID, subject: UUID, **extra: Any) -> str:
        payload = {"p": purpose, "t": tenant_id.hex, "s": subject.hex, "iat": int(time.time()), **extra}
        header = {"alg": "HS256", "kid": self._newest.key_id}
        return jws.serialize_compact(
            header, json.dumps(payload, separators=(",", ":")), self._by_id[self._newest.key_id], ALGORITHMS
        )

    def verify(self, token: str, purpose: str, tenant_id: UUID, max_age: int | None = None) -> TokenClaims | None:
        """The claims if the token is genuine, of this purpose and tenant (and young enough); else None."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        genuine = self._genuine(token)
        if genuine is None:
            return None
        key_id, payload = genuine
        try:
            if payload.get("p") != purpose or payload.get("t") != tenant_id.hex:
                return None
            issued_at = int(payload["iat"])
            if max_age is not None and time.time() - issued_at > max_age:
                return None
            extra = {k: v for k, v in payload.items() if k not in ("p", "t", "s", "iat")}
            return TokenClaims(tenant_id, UUID(hex=payload["s"]), issued_at, key_id, extra)
        except (ValueError, KeyError, TypeError):
            return None

    def _genuine(self, token: str) -> tuple[str, dict[str, Any]] | None:
        """The key id and payload of a correctly signed token. Memoised: a browser sends the same
        token with every hit, and the answer depends only on the token and the (fixed) keys."""
        cached = self._checked.get(token, _UNCHECKED)
        if cached is not _UNCHECKED:
            return cached  # type: ignore[return-value]
        try:
            signed = jws.deserialize_compact(token, self._key_for, ALGORITHMS)
            payload = json.loads(signed.payload)
            result: tuple[str, dict[str, Any]] | None = (
                (str(signed.headers()["kid"]), payload) if isinstance(payload, dict) else None
            )
        except (JoseError, ValueError, KeyError, TypeError):
            result = None
        if len(self._checked) >= CHECKED_TOKENS:
            self._checked.clear()
        self._checked[token] = result
        return result

    def is_current(self, claims: TokenClaims) -> bool:
        """False for a token signed with an older key: re-issue it."""
        return claims.key_id == self._newest.key_id

    def _key_for(self, signed: GuestProtocol) -> OctKey:
        # ALGORITHMS already refuses any other algorithm (and "none") before a key is asked for.
        key = self._by_id.get(str(signed.headers().get("kid")))
        if key is None:
            raise ValueError("unknown key id")
        return key


_signer: TokenSigner | None = None


def get_signer() -> TokenSigner:
    """The process's signer, built from ``TRAILMARK_SIGNING_KEYS``."""
    global _signer  # noqa: PLW0603 - one per process, settings never change at run time
    if _signer is None:
        _signer = TokenSigner(get_settings().signing_keys)
    return _signer

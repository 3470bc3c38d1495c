"""Handing a new API key's secret to the page after the redirect, once.

Creating a key answers with a redirect (so a reload never mints another key); the page it leads to shows the
secret, which Trailmark does not keep. In between the secret waits in Redis for a few minutes under a random
handover id that only the creating browser holds: Redis keeps it encrypted (JWE, A256GCM) with a key derived from
that id, under the id's SHA-256, so a Redis dump alone reveals nothing. Reading it deletes it (GETDEL): shown once,
never again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from uuid import UUID

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from tenants.redis_store import get_redis

__all__ = ["HANDOVER_SECONDS", "HandedOver", "hand_over_secret", "take_secret"]

HANDOVER_SECONDS = 600
"""How long the secret waits for its page: ample for a redirect, short for a forgotten tab."""
MAX_HANDOVER_ID_LENGTH = 100


@dataclass(frozen=True)
class HandedOver:
    key_id: UUID
    secret: str


def _digest(purpose: str, handover_id: str) -> bytes:
    return hashlib.sha256(f"{purpose}:{handover_id}".encode()).digest()


def _redis_key(tenant_id: UUID, user_id: UUID, handover_id: str) -> str:
    return f"trailmark:{tenant_id}:api-key-handover:{user_id}:{_digest('lookup', handover_id).hex()}"


def hand_over_secret(tenant_id: UUID, user_id: UUID, key_id: UUID, secret: str) -> str:
    """Keep ``secret`` for the next page of the staff member ``user_id``; the handover id it can be taken with."""
    handover_id = secrets.token_urlsafe(32)
    payload = json.dumps({"key_id": str(key_id), "secret": secret}).encode()
    sealed = jwe.encrypt_compact(
        {"alg": "dir", "enc": "A256GCM"}, payload, OctKey.import_key(_digest("seal", handover_id))
    )
    get_redis().set(_redis_key(tenant_id, user_id, handover_id), sealed, ex=HANDOVER_SECONDS)
    return handover_id


def take_secret(tenant_id: UUID, user_id: UUID, handover_id: str) -> HandedOver | None:
    """The secret handed over under ``handover_id`` to this staff member, deleting it; None once taken, expired,
    or for another tenant's or person's id."""
    if not handover_id or len(handover_id) > MAX_HANDOVER_ID_LENGTH:
        return None
    sealed = get_redis().getdel(_redis_key(tenant_id, user_id, handover_id))
    if sealed is None:
        return None
    try:
        opened = jwe.decrypt_compact(sealed, OctKey.import_key(_digest("seal", handover_id)))
    except (JoseError, ValueError):
        return None
    payload = json.loads(opened.plaintext or b"{}")
    return HandedOver(UUID(payload["key_id"]), str(payload["secret"]))

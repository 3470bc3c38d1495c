"""Connecting a Google Ads account: OAuth 2 authorization code with PKCE (S256), through authlib's client.

The dashboard sends the staff member to Google's consent page with a fresh ``state`` and code challenge; the
verifier waits in Redis under the tenant, keyed by the state's hash, for ten minutes, and is taken once
(``GETDEL``), so a replayed callback finds nothing. The code is exchanged for a refresh token, stored with the
integration like any token (sealed, write-only), which ends a pause.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import warnings
from typing import Any
from uuid import UUID

import httpx
from authlib.common.errors import AuthlibBaseError
from authlib.deprecate import AuthlibDeprecationWarning
from sqlmodel import Session

from tenants.conversions.integrations import get_integration, update_integration
from tenants.errors import Invalid
from tenants.isolation import current_tenant_id
from tenants.models import Integration, Platform
from tenants.redis_store import get_redis
from tenants.settings import get_settings

# authlib 1.9 warns on import that its httpx client will move to the httpx2 package: nothing to act on here, and
# its module installs an "always" filter first, which this one (inserted after it, so in front) overrides.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

__all__ = ["SCOPE", "AuthlibBaseError", "authorization_url", "finish_connect", "refreshed_access_token"]

SCOPE = "https://www.googleapis.com/auth/adwords"
STATE_SECONDS = 600


def _key(tenant_id: UUID, state: str) -> str:
    return f"trailmark:{tenant_id}:google-oauth:{hashlib.sha256(state.encode()).hexdigest()}"


def _client(redirect_uri: str | None = None) -> OAuth2Client:
    settings = get_settings().ad_platforms
    if not settings.google_client_id or not settings.google_client_secret:
        raise Invalid(
            "Google Ads cannot be connected on this server yet",
            {"google": "the operator sets TRAILMARK_GOOGLE_CLIENT_ID and TRAILMARK_GOOGLE_CLIENT_SECRET"},
        )
    return OAuth2Client(
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret,
        redirect_uri=redirect_uri,
        scope=SCOPE,
        code_challenge_method="S256",
        timeout=30,
    )


def authorization_url(session: Session, integration_id: UUID, redirect_uri: str) -> str:
    """Where to send the staff member: Google's consent page for this integration (offline access, so a
    refresh token comes back; consent prompted, so it comes back on a reconnect too)."""
    integration = get_integration(session, integration_id)
    if integration.platform != Platform.GOOGLE_ADS:
        raise Invalid("only a Google Ads integration connects through Google", {"platform": "is not google_ads"})
    verifier = secrets.token_urlsafe(48)  # 64 characters: within PKCE's 43-128
    state = secrets.token_urlsafe(24)
    with _client(redirect_uri) as client:
        url, _ = client.create_authorization_url(
            get_settings().ad_platforms.google_authorize,
            state=state,
            code_verifier=verifier,
            access_type="offline",
            prompt="consent",
        )
    record = json.dumps({"integration_id": str(integration.id), "verifier": verifier})
    get_redis().set(_key(current_tenant_id(session), state), record, ex=STATE_SECONDS)
    return str(url)


def finish_connect(session: Session, *, state: str, code: str, redirect_uri: str) -> Integration:
    """Google's callback: exchange the code (with the verifier kept for ``state``) for a refresh token and store
    it. 422 for an unknown, used or expired state, or a code Google refuses."""
    raw: Any = get_redis().getdel(_key(current_tenant_id(session), state)) if state else None
    if raw is None:
        raise Invalid("this connection attempt is unknown or expired: connect again", {"state": "not ours"})
    pending = json.loads(raw)
    try:
        with _client(redirect_uri) as client:
            token = client.fetch_token(
                get_settings().ad_platforms.google_token,
                grant_type="authorization_code",
                code=code,
                code_verifier=pending["verifier"],
            )
    except (AuthlibBaseError, httpx.HTTPError, OSError, ValueError) as error:
        raise Invalid("Google refused the connection: connect again", {"code": type(error).__name__}) from None
    refresh = token.get("refresh_token")
    if not refresh:
        raise Invalid("Google gave no refresh token: remove Trailmark's access in your Google account, then connect")
    return update_integration(session, UUID(pending["integration_id"]), secrets={"refresh_token": refresh})


def refreshed_access_token(refresh_token: str) -> dict[str, Any]:
    """The refresh-token grant (the sender's, before an upload): ``{access_token, expires_in, …}``. Raises
    authlib's ``OAuthError`` (``invalid_grant`` for a revoked or expired refresh token) or an httpx error."""
    with _client() as client:
        return dict(client.refresh_token(get_settings().ad_platforms.google_token, refresh_token=refresh_token))

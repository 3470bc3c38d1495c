"""API-key authentication: ``Authorization: Bearer tm_…`` → :class:`ApiCaller`."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from tenants.accounts.service import ApiCaller, authenticate_api_key
from tenants.errors import Unauthorized

__all__ = ["provide_caller"]


def _caller_from_request(request: Request[Any, Any, Any]) -> ApiCaller:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if not header:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <API key>'")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <API key>'")
    return authenticate_api_key(credentials.strip())


provide_caller = Provide(_caller_from_request, sync_to_thread=True)
"""Dependency ``caller``: the authenticated tenant and key (the lookup runs in a worker thread)."""

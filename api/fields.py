"""Rules shared by request schemas: one declaration that msgspec enforces and the OpenAPI schema shows."""

from __future__ import annotations

from typing import Annotated

import msgspec

from tenants.accounts.service import EMAIL_PATTERN, SLUG_PATTERN

__all__ = ["EMAIL", "HTTP_URL", "NOT_BLANK", "SLUG", "Email", "HttpUrl", "Slug"]

NOT_BLANK = r"\S"
"""At least one character that is not white space (services trim names before storing them)."""
EMAIL = EMAIL_PATTERN.pattern
SLUG = SLUG_PATTERN.pattern
HTTP_URL = r"^https?://(?:[^\s/?#\[\]@]*@)?[^\s/?#\[\]@:][^\s/?#\[\]@]*(?:[/?#]\S*)?$"
"""An absolute http(s) URL with a host name (no IPv6 literal: the standard library refuses some of them)."""

Email = Annotated[
    str, msgspec.Meta(max_length=320, pattern=EMAIL, description="An email address like name@example.com")
]
Slug = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=63,
        pattern=SLUG,
        description="Lowercase letters, digits and dashes, not starting or ending with a dash",
    ),
]
HttpUrl = Annotated[str, msgspec.Meta(max_length=4096, pattern=HTTP_URL, description="An absolute http(s) URL")]

"""Signed tokens: the ones browsers and inboxes already hold keep working, and signing warns about nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from uuid import UUID

import pytest

from tenants.security.tokens import TokenSigner
from tenants.settings import SigningKey
from tests.conftest import REPO

KEY = SigningKey("k1", bytes(range(32)))
TENANT = UUID("0e4a3f9c-6f43-4c1e-9a57-1d2b3c4d5e6f")
SUBJECT = UUID("7c1f2e3d-4b5a-4968-8776-a5b4c3d2e1f0")
ISSUED_BEFORE = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJwIjoidmlzaXRvciIsInQiOiIwZTRhM2Y5YzZmNDM0YzFlOWE1NzFkMmIzYzRkNWU2ZiIsInMiOiI3YzFmMmUzZDRiNWE0OTY4ODc3NmE1Yj"
    "RjM2QyZTFmMCIsImlhdCI6MTc2NDYwMDAwMCwicGMiOjB9"
    ".yofqtVw7oTrUo_olSxd7xUHujRQiCRaQPpm8iT1F7Ys"
)
"""A visitor token signed with KEY by the authlib.jose signer Trailmark used before joserfc (HS256 JWS compact)."""


def test_a_token_issued_before_the_move_to_joserfc_still_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = TokenSigner((KEY,))
    claims = signer.verify(ISSUED_BEFORE, "visitor", TENANT)
    assert claims is not None
    assert (claims.subject, claims.issued_at, claims.key_id, claims.extra) == (SUBJECT, 1764600000, "k1", {"pc": 0})
    # Signed at the same second, the same claims make the same bytes: the format did not change.
    monkeypatch.setattr(time, "time", lambda: 1764600000.5)
    assert signer.sign("visitor", TENANT, SUBJECT, pc=0) == ISSUED_BEFORE


def test_tampered_or_unsigned_tokens_are_not_trusted() -> None:
    signer = TokenSigner((KEY,))
    header, payload, signature = ISSUED_BEFORE.split(".")
    unsigned = "eyJhbGciOiJub25lIiwia2lkIjoiazEifQ"  # {"alg":"none","kid":"k1"}
    hs512 = "eyJhbGciOiJIUzUxMiIsImtpZCI6ImsxIn0"  # {"alg":"HS512","kid":"k1"}
    for token in (f"{header}.{payload}.{signature[:-2]}AA", f"{unsigned}.{payload}.", f"{hs512}.{payload}.{signature}"):
        assert signer.verify(token, "visitor", TENANT) is None
    assert signer.verify(ISSUED_BEFORE, "visitor", UUID(int=1)) is None
    assert TokenSigner((SigningKey("k2", KEY.secret),)).verify(ISSUED_BEFORE, "visitor", TENANT) is None


def test_the_api_and_workers_start_without_a_warning() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import api.app, workers.system, workers.mail"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr

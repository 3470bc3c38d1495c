"""The throttle and the password check of every password login but the dashboard's (members, partners): failures
are counted per account *and* address, so an attacker elsewhere cannot lock the real person out, and per address;
an unknown account costs as much time as a known one, so timing tells nobody who has an account."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from tenants.ratelimit import check_failures, clear_failures, record_failure
from tenants.security.passwords import hash_password, verify_password

__all__ = ["FAILURES_PER_ACCOUNT_AND_IP", "FAILURES_PER_IP", "FAILURE_WINDOW", "LoginThrottle", "password_matches"]

FAILURES_PER_ACCOUNT_AND_IP = 5
FAILURES_PER_IP = 30
FAILURE_WINDOW = 15 * 60
_DECOY_HASH = hash_password("timing equaliser for unknown accounts")


def password_matches(password_hash: str | None, password: str) -> bool:
    """True only for a real hash and its password; an absent hash is verified against a decoy all the same."""
    return verify_password(password_hash or _DECOY_HASH, password) and password_hash is not None


@dataclass(frozen=True)
class LoginThrottle:
    """The failure counters of one kind of login (``bucket``); ``account`` names the account tried, e.g.
    ``site:email``."""

    bucket: str

    def check(self, tenant_id: UUID, account: str, ip: str | None) -> None:
        """:class:`~tenants.errors.RateLimited` while this account from this address, or this address, failed
        too often."""
        check_failures(tenant_id, self.bucket, f"{account}:{ip}", limit=FAILURES_PER_ACCOUNT_AND_IP)
        if ip:
            check_failures(tenant_id, f"{self.bucket}-ip", ip, limit=FAILURES_PER_IP)

    def failed(self, tenant_id: UUID, account: str, ip: str | None) -> None:
        record_failure(tenant_id, self.bucket, f"{account}:{ip}", window_seconds=FAILURE_WINDOW)
        if ip:
            record_failure(tenant_id, f"{self.bucket}-ip", ip, window_seconds=FAILURE_WINDOW)

    def succeeded(self, tenant_id: UUID, account: str, ip: str | None) -> None:
        clear_failures(tenant_id, self.bucket, f"{account}:{ip}")

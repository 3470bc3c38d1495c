"""Mail task: sending happens after the transaction that asked for it commits (through the outbox)."""

from __future__ import annotations

from sqlmodel import Session

from tenants.mail import send_mail
from workers.base import tenant_task

__all__ = ["deliver_mail"]


@tenant_task(name="trailmark.mail.send", max_retries=10)
def deliver_mail(_session: Session, to: str, subject: str, body: str) -> None:
    """SMTP failures raise and are retried with backoff (ConnectionError/TimeoutError are transient)."""
    send_mail(to, subject, body)

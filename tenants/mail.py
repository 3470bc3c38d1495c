"""Outgoing mail: SMTP in production, the log when no SMTP server is configured (the embedded default)."""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from tenants.settings import get_settings

__all__ = ["send_mail"]

log = logging.getLogger("trailmark.mail")


def send_mail(to: str, subject: str, body: str) -> None:
    """Send one plain-text message; raises on a delivery failure so the caller (a task) retries."""
    settings = get_settings()
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    if settings.smtp_url is None:
        log.info("mail (no TRAILMARK_SMTP_URL set, not sent)", extra={"to": to, "subject": subject, "body": body})
        return
    url = urlsplit(settings.smtp_url)
    port = url.port or (465 if url.scheme == "smtps" else 25)
    smtp: smtplib.SMTP
    if url.scheme == "smtps":
        smtp = smtplib.SMTP_SSL(url.hostname or "", port, timeout=10, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(url.hostname or "", port, timeout=10)
    with smtp:
        if url.scheme == "smtp+starttls":
            smtp.starttls(context=ssl.create_default_context())
        if url.username:
            smtp.login(unquote(url.username), unquote(url.password or ""))
        smtp.send_message(message)

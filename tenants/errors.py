"""Errors a user can cause (the API turns each into a 4xx problem response with its message), and the
errors of a backing service that is briefly away (the API answers 503, a task retries)."""

from __future__ import annotations

import redis.exceptions
from sqlalchemy.exc import OperationalError

__all__ = [
    "UNAVAILABLE",
    "Conflict",
    "DomainError",
    "Forbidden",
    "Invalid",
    "InvalidQuery",
    "NotFound",
    "RateLimited",
    "ReportTimedOut",
    "Unauthorized",
]

UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
"""PostgreSQL, Redis or a mail server unreachable (or a statement cancelled): nobody's input is at fault,
and the same request or task later will likely succeed."""


class DomainError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(DomainError):
    """Input is well-formed but breaks a rule; ``errors`` maps each field to what is wrong with it."""

    status = 422

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class Unauthorized(DomainError):
    status = 401


class Forbidden(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class RateLimited(DomainError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReportTimedOut(DomainError):
    """A report query ran past ``report_statement_timeout_ms`` and was cancelled: the panel says so."""

    status = 503


class InvalidQuery(Invalid):
    """A report or list query that cannot be answered as asked (a range backwards or too long, an unknown
    dimension): 400, with what is wrong with each parameter."""

    status = 400

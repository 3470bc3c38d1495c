"""Logging of every process (API, worker, beat): one handler on the root logger, writing to the process's
stderr readable text, or one JSON object a line when ``TRAILMARK_LOG_JSON`` is on.

``TRAILMARK_LOG_LEVEL`` sets the level of Trailmark's own loggers. Libraries stay at warnings and errors
unless it is ``debug``: Celery and uvicorn say something at info for every task, beat tick and connection,
which would bury what an operator needs (a failure, a mail that was logged instead of sent).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from tenants.settings import get_settings

__all__ = ["OWN_LOGGERS", "JsonFormatter", "TextFormatter", "configure_logging"]

OWN_LOGGERS = ("trailmark", "tenants", "api", "workers")
"""Roots of the loggers Trailmark's code logs to (named ``trailmark.*`` or by module)."""

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of one of Trailmark's own records (task id, tenant …). Libraries attach extras
    meant for their own formatters (Celery's ``data`` repeats the message with the task's arguments,
    uvicorn's ``color_message`` is its ANSI twin), so theirs are left out."""
    if record.name.split(".", 1)[0] not in OWN_LOGGERS:
        return {}
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts, level, logger, msg``, the record's context and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(_context(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message {context as JSON}``, then the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        extras = _context(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if extras:
            line = f"{line} {json.dumps(extras, default=str)}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def configure_logging() -> None:
    """Send every log record of this process to its stderr, once, at ``TRAILMARK_LOG_LEVEL``.

    Replaces the root logger's handlers, so calling it again (API start, worker start) is harmless.
    Python warnings become log records too, in the same format.
    """
    settings = get_settings()
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if settings.log_level <= logging.DEBUG else max(settings.log_level, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(settings.log_level)
    logging.captureWarnings(True)

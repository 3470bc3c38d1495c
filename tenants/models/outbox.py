"""The transactional outbox: a task is a row written in the business transaction, published after commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from tenants.models.base import TenantOwned, new_id, timestamp_field

__all__ = ["OutboxMessage"]


class OutboxMessage(TenantOwned, table=True):
    __tablename__ = "outbox"

    id: UUID = Field(default_factory=new_id, primary_key=True)
    """Also the Celery task id, so a message published twice is recognisable as one task."""
    task: str = Field(max_length=200)
    args: list[Any] = Field(sa_column=Column(JSONB, nullable=False))
    queue: str = Field(max_length=50)
    created_at: datetime = timestamp_field()
    attempts: int = 0
    last_error: str | None = None

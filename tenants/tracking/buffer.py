"""The ingest buffer: a bounded Redis stream between collect (async) and the ingest worker (sync).

Collect appends one entry per accepted batch with a Lua script that refuses once the backlog reaches
its bound, so a full buffer answers 503 instead of growing without limit. Ingest reads through a
consumer group and acknowledges (then deletes) entries only after their rows are committed; entries
left pending by a dead consumer are claimed again.

An entry that can never be stored goes to a dead-letter stream with its reason (and a warning in the
log); an operator lists those (``trailmark ingest dead-letters``) and, once the cause is fixed, puts
them back into the ingest stream (``--replay``). Replay is safe to repeat: storage dedupes on hit id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import redis
import redis.asyncio as aioredis

from tenants.tracking.hits import Envelope

__all__ = [
    "DEAD_LETTER_STREAM",
    "GROUP",
    "STREAM",
    "BufferFull",
    "DeadLetter",
    "IngestBuffer",
    "IngestProducer",
    "backlog",
    "consumer_name",
    "dead_letter_count",
    "dead_letters",
    "decode_entry",
    "holds_entries_until",
    "replay_dead_letters",
]

log = logging.getLogger(__name__)

STREAM = "trailmark:ingest"
"""Shared by all tenants: each entry carries its tenant id; rows are written under that tenant's RLS scope."""
DEAD_LETTER_STREAM = "trailmark:ingest:dead"
GROUP = "ingest"

_APPEND = """
local room = tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1])
local stored = 0
for i = 2, #ARGV do
  if stored >= room then break end
  redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
  stored = stored + 1
end
return stored
"""
# Moves up to ARGV[1] dead letters, none newer than ARGV[2], back into the ingest stream; returns how
# many it took. Atomic, so each letter is replayed by exactly one of two operators who run it at once.
_REPLAY = """
local letters = redis.call('XRANGE', KEYS[1], '-', ARGV[2], 'COUNT', tonumber(ARGV[1]))
for _, entry in ipairs(letters) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then redis.call('XADD', KEYS[2], '*', 'd', fields[i + 1]) end
  end
  redis.call('XDEL', KEYS[1], entry[1])
end
return #letters
"""
MAX_DEAD_LETTERS = 100_000
"""The dead-letter stream keeps the newest this many; a warning is logged for every one that arrives."""
MAX_GROUP = 500
"""Batches appended in one round trip at most."""
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


class BufferFull(Exception):
    """The backlog is at its bound; the sender should retry later."""


class IngestProducer:
    """The collect side: one per process and event loop.

    Concurrent requests share round trips (group commit): while one append is on the wire, the
    batches that arrive queue up and go together in the next one. Each request still waits for the
    answer about its own batch before it answers 202.
    """

    def __init__(self, client: aioredis.Redis, max_backlog: int) -> None:
        self.client = client
        self.max_backlog = max_backlog
        self._append = client.register_script(_APPEND)
        self._waiting: list[tuple[bytes, asyncio.Future[bool]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def append(self, envelope: Envelope) -> None:
        """Queue one accepted batch (as durable as the Redis server's AOF), or raise
        :class:`BufferFull` or a Redis error. Never returns without the entry stored."""
        stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((_encoder.encode(envelope), stored))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())
        if not await stored:
            raise BufferFull

    async def _send(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            try:
                count = int(await self._append(keys=[STREAM], args=[self.max_backlog, *(data for data, _ in group)]))
            except Exception as error:  # every request of the group learns it was not stored
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            for index, (_, future) in enumerate(group):
                if not future.done():
                    future.set_result(index < count)


def backlog(client: redis.Redis) -> int:
    """Entries waiting or in flight."""
    return int(client.xlen(STREAM))


def holds_entries_until(client: redis.Redis, until_ms: int) -> bool:
    """Whether a batch received at or before ``until_ms`` (an entry id's time) still waits to be stored: ingest
    deletes each entry once stored (or dead-lettered), so an empty range means all of them are in PostgreSQL."""
    return bool(client.xrange(STREAM, "-", str(until_ms), count=1))


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class IngestBuffer:
    """The consumer side, used by the ingest worker."""

    def __init__(self, client: redis.Redis, claim_idle_ms: int, consumer: str | None = None) -> None:
        self.client = client
        self.claim_idle_ms = claim_idle_ms
        """Entries unacknowledged this long belong to a consumer presumed dead."""
        self.consumer = consumer or consumer_name()
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def read(self, count: int, block_ms: int | None) -> list[tuple[str, bytes]]:
        """New entries for this consumer, after any it left pending (a crash before its ack)."""
        self._ensure_group()
        own = self.client.xreadgroup(GROUP, self.consumer, {STREAM: "0"}, count=count)
        entries = _entries(own)
        if entries:
            return entries
        _, claimed, *_ = self.client.xautoclaim(STREAM, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=count)
        if claimed:
            return [(_text(entry_id), fields[b"d"]) for entry_id, fields in claimed if fields]
        fresh = self.client.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=count, block=block_ms)
        return _entries(fresh)

    def ack(self, entry_ids: list[str]) -> None:
        """Done: acknowledge and delete, so the stream length is the backlog."""
        if entry_ids:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(STREAM, GROUP, *entry_ids)
            pipe.xdel(STREAM, *entry_ids)
            pipe.execute()

    def dead_letter(self, entry_id: str, data: bytes, reason: str) -> None:
        """Keep an entry that can never be stored, with why, and take it out of the way."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(DEAD_LETTER_STREAM, {"d": data, "id": entry_id, "reason": reason[:500]}, maxlen=MAX_DEAD_LETTERS)
        pipe.xlen(DEAD_LETTER_STREAM)
        pipe.xack(STREAM, GROUP, entry_id)
        pipe.xdel(STREAM, entry_id)
        _, waiting, *_ = pipe.execute()
        log.warning(
            "ingest entry dead-lettered: %s",
            reason[:500],
            extra={"entry_id": entry_id, "dead_letters": int(waiting)},
        )


@dataclass(frozen=True)
class DeadLetter:
    """An ingest entry that could not be stored, as an operator sees it."""

    id: str
    """Its id in the dead-letter stream (when it was dead-lettered)."""
    entry_id: str
    """Its id in the ingest stream (when collect accepted it)."""
    reason: str
    tenant_id: UUID | None
    """None when the entry cannot even be decoded."""
    hits: int

    @property
    def dead_lettered_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.id.split("-")[0]) / 1000, UTC)


def dead_letter_count(client: redis.Redis) -> int:
    """How many entries wait in the dead-letter stream."""
    return int(client.xlen(DEAD_LETTER_STREAM))


def dead_letters(client: redis.Redis, limit: int = 100) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters, with their reasons."""
    letters: list[DeadLetter] = []
    entries: Any = client.xrange(DEAD_LETTER_STREAM, count=limit)
    for letter_id, fields in entries:
        data = fields.get(b"d", b"")
        try:
            envelope: Envelope | None = decode_entry(data)
        except msgspec.DecodeError:
            envelope = None
        letters.append(
            DeadLetter(
                id=_text(letter_id),
                entry_id=_text(fields.get(b"id", b"")),
                reason=_text(fields.get(b"reason", b"")),
                tenant_id=envelope.tenant_id if envelope else None,
                hits=len(envelope.hits) if envelope else 0,
            )
        )
    return letters


def replay_dead_letters(client: redis.Redis, chunk: int = 500) -> int:
    """Move the dead letters back into the ingest stream, once each; returns how many moved. Only the
    letters there when it starts: one whose cause is not fixed comes back with its reason, and waits
    for the next replay instead of going round forever."""
    newest: Any = client.xrevrange(DEAD_LETTER_STREAM, count=1)
    if not newest:
        return 0
    last_id = _text(newest[0][0])
    replay = client.register_script(_REPLAY)
    moved = 0
    while count := int(replay(keys=[DEAD_LETTER_STREAM, STREAM], args=[chunk, last_id])):
        moved += count
    return moved


def decode_entry(data: bytes) -> Envelope:
    return _decoder.decode(data)


def _entries(response: Any) -> list[tuple[str, bytes]]:
    result: list[tuple[str, bytes]] = []
    for _stream, items in response or []:
        for entry_id, fields in items:
            if fields:  # an entry deleted while pending comes back empty
                result.append((_text(entry_id), fields[b"d"]))
    return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

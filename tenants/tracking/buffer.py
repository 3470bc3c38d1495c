"""The ingest buffer: bounded Redis streams between collect (async) and the ingest workers (sync).

Collect spreads batches over ``TRAILMARK_INGEST_SHARDS`` streams by visitor (:func:`shard_of`: one visitor, one
shard, so a visitor's batches keep their order). Each shard's stream and its bookkeeping (consumer group, dead
letters, lease) share a hash tag, ``trailmark:ingest:{k}``, so they sit in one Redis Cluster slot and every
script or multi-key command here touches one slot only; the same code runs on one Redis node.

Collect appends with a Lua script that refuses once the shard's backlog reaches its share of
``TRAILMARK_INGEST_MAX_BACKLOG`` (the bound divided by the shards, rounded up: the total never passes the bound
by more than the rounding), so a full buffer answers 503 instead of growing without limit. Ingest workers
take shards through a lease key with a TTL (:class:`IngestBuffer`): one worker drains a shard at a time, and a
dead worker's shards move on once its leases lapse. Entries are acknowledged (then deleted) only after their
rows are committed; entries left pending by a dead consumer are claimed by the shard's next holder before it
reads anything new (so the order per visitor holds across a takeover too).

An entry that can never be stored goes to its shard's dead-letter stream with its reason (and a warning in the
log); an operator lists those (``trailmark ingest dead-letters``) and, once the cause is fixed, puts them back
into their stream (``--replay``). Replay is safe to repeat: storage dedupes on hit id.

The unsharded stream of earlier versions (``trailmark:ingest``, :data:`LEGACY`) is drained, listed and replayed
like a shard wherever it still exists on a single node, so an upgrade loses nothing waiting in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import redis
import redis.cluster

from tenants.tracking.hits import Envelope

__all__ = [
    "GROUP",
    "LEGACY",
    "BufferFull",
    "DeadLetter",
    "IngestBuffer",
    "IngestProducer",
    "Shard",
    "backlog",
    "consumer_name",
    "dead_letter_count",
    "dead_letters",
    "decode_entry",
    "holds_entries_until",
    "replay_dead_letters",
    "shard",
    "shard_of",
    "shards",
]

log = logging.getLogger(__name__)

GROUP = "ingest"


@dataclass(frozen=True)
class Shard:
    """One ingest stream and the keys that go with it (one hash tag, so one cluster slot)."""

    index: int
    """0 to ``TRAILMARK_INGEST_SHARDS - 1``; -1 for :data:`LEGACY`."""
    stream: str
    """Shared by all tenants: each entry carries its tenant id; rows are written under that tenant's RLS scope."""
    dead: str
    lease: str
    """Holds the name of the consumer draining the stream, with a TTL."""


def shard(index: int) -> Shard:
    base = f"trailmark:ingest:{{{index}}}"
    return Shard(index, base, f"{base}:dead", f"{base}:lease")


LEGACY = Shard(-1, "trailmark:ingest", "trailmark:ingest:dead", "trailmark:ingest:lease")
"""The single stream before sharding: still drained where it exists (one node only: its keys have no hash tag)."""


def shards(count: int) -> list[Shard]:
    return [shard(index) for index in range(count)]


def shard_of(visitor_id: UUID, count: int) -> int:
    """The shard of a visitor's batches. A browser without a token gets its new visitor id before the append,
    so it is placed by that; a cookieless batch by its day's hash (one browser's cookieless day, one shard)."""
    return zlib.crc32(visitor_id.bytes) % count if count > 1 else 0


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
# KEYS: the stream; ARGV: the group, then entry ids. Acknowledged and deleted together, so XLEN is the backlog.
_ACK = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""
# KEYS: the stream, its dead letters; ARGV: the group, the entry id, its data, why, the dead letters kept.
_DEAD_LETTER = """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'd', ARGV[3], 'id', ARGV[2], 'reason', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('XLEN', KEYS[2])
"""
# Moves up to ARGV[1] dead letters, none newer than ARGV[2], back into the shard's stream; returns how many it
# took. Atomic, so each letter is replayed by exactly one of two operators who run it at once.
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
# KEYS: the lease; ARGV: the consumer, the TTL in ms. Takes a free lease or renews one's own.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
MAX_DEAD_LETTERS = 100_000
"""Each dead-letter stream keeps about the newest this many; a warning is logged for every one that arrives."""
MAX_GROUP = 500
"""Batches appended in one round trip at most."""
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


class BufferFull(Exception):
    """The shard's backlog is at its bound; the sender should retry later."""


class IngestProducer:
    """The collect side: one per process and event loop, over the ingest Redis (one node or a cluster).

    Concurrent requests share round trips (group commit), per shard: while one shard's append is on the wire,
    the batches for it that arrive queue up and go together in the next one; shards do not wait for each other
    (a cluster node that is down refuses only its shards' batches). Each request still waits for the answer
    about its own batch before it answers 202.
    """

    def __init__(self, client: Any, max_backlog: int, shard_count: int = 1) -> None:
        self.client = client
        self.shards = shards(shard_count)
        self.shard_backlog = -(-max_backlog // shard_count)
        """Each shard's share of the bound, rounded up."""
        self._append = client.register_script(_APPEND)
        self._waiting: list[list[tuple[bytes, asyncio.Future[bool]]]] = [[] for _ in self.shards]
        self._senders: list[asyncio.Task[None] | None] = [None for _ in self.shards]

    async def append(self, envelope: Envelope) -> None:
        """Queue one accepted batch on its visitor's shard (as durable as the Redis server's AOF), or raise
        :class:`BufferFull` or a Redis error. Never returns without the entry stored."""
        index = shard_of(envelope.visitor_id, len(self.shards))
        stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[index].append((_encoder.encode(envelope), stored))
        sender = self._senders[index]
        if sender is None or sender.done():
            self._senders[index] = asyncio.ensure_future(self._send(index))
        if not await stored:
            raise BufferFull

    async def _send(self, index: int) -> None:
        stream = self.shards[index].stream
        while waiting := self._waiting[index]:
            group, self._waiting[index] = waiting[:MAX_GROUP], waiting[MAX_GROUP:]
            try:
                count = int(await self._append(keys=[stream], args=[self.shard_backlog, *(data for data, _ in group)]))
            except Exception as error:  # every request of the group learns it was not stored
                if isinstance(error, AttributeError):
                    # redis-py's async cluster client can fail so while it reconnects to a master that came back
                    # (its connection has no writer yet): the node is unavailable for the moment, as collect says.
                    error = redis.exceptions.ConnectionError(f"the ingest Redis is reconnecting: {error}")
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            for position, (_, future) in enumerate(group):
                if not future.done():
                    future.set_result(position < count)

    async def aclose(self) -> None:
        await self.client.aclose()


def _is_cluster(client: Any) -> bool:
    return isinstance(client, redis.cluster.RedisCluster)


def _present(client: Any, shard_count: int) -> list[Shard]:
    """The shards to read: ``shard_count`` of them, and :data:`LEGACY` while it holds anything (one node only)."""
    found = shards(shard_count)
    if not _is_cluster(client) and client.exists(LEGACY.stream, LEGACY.dead):
        found.append(LEGACY)
    return found


def backlog(client: Any, *, shard_count: int) -> int:
    """Entries waiting or in flight, over every shard."""
    return sum(int(client.xlen(each.stream)) for each in _present(client, shard_count))


def holds_entries_until(client: Any, until_ms: int, *, shard_count: int) -> bool:
    """Whether a batch received at or before ``until_ms`` (an entry id's time) still waits to be stored in any
    shard: ingest deletes each entry once stored (or dead-lettered), so empty ranges mean all are in PostgreSQL."""
    return any(client.xrange(each.stream, "-", str(until_ms), count=1) for each in _present(client, shard_count))


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class IngestBuffer:
    """The consumer side, used by an ingest worker process: takes shards, reads, acknowledges, dead-letters."""

    def __init__(
        self,
        client: Any,
        claim_idle_ms: int,
        consumer: str | None = None,
        *,
        shard_count: int = 1,
        lease_ms: int = 10_000,
    ) -> None:
        self.client = client
        self.claim_idle_ms = claim_idle_ms
        """Entries unacknowledged this long belong to a consumer presumed dead."""
        self.consumer = consumer or consumer_name()
        self.shard_count = shard_count
        self.lease_ms = lease_ms
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)
        self._ack = client.register_script(_ACK)
        self._dead_letter = client.register_script(_DEAD_LETTER)
        self._groups: set[str] = set()
        self._history: set[str] = set()
        """Shards on which this consumer may hold pending entries: read those before new ones."""

    def shards_to_drain(self) -> list[Shard]:
        """Every shard, starting at a random one so that workers spread over them."""
        found = _present(self.client, self.shard_count)
        start = random.randrange(len(found))  # noqa: S311 - spreading load, not a secret
        return found[start:] + found[:start]

    def take(self, shard: Shard) -> bool:
        """Hold ``shard`` (or renew the hold) for ``lease_ms``; False when another worker holds it, or when a
        previous holder's entries are pending and not yet idle long enough to be claimed (reading new entries
        before them would store a visitor's batches out of order)."""
        if not int(self._take(keys=[shard.lease], args=[self.consumer, self.lease_ms])):
            return False
        self._ensure_group(shard)
        if self._claim_others(shard):
            self._history.add(shard.stream)
            return True
        self.release(shard)
        return False

    def renew(self, shard: Shard) -> bool:
        """Keep holding ``shard``; False when the lease lapsed and another worker took it."""
        return bool(int(self._take(keys=[shard.lease], args=[self.consumer, self.lease_ms])))

    def release(self, shard: Shard) -> None:
        """Let another worker take ``shard`` now instead of after the lease's TTL."""
        self._history.discard(shard.stream)
        self._release(keys=[shard.lease], args=[self.consumer])

    def _ensure_group(self, shard: Shard) -> None:
        if shard.stream in self._groups:
            return
        try:
            self.client.xgroup_create(shard.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups.add(shard.stream)

    def _claim_others(self, shard: Shard) -> bool:
        """Make the entries other consumers left pending this consumer's; False while some are too fresh."""
        summary: Any = self.client.xpending(shard.stream, GROUP)
        if not any(_text(each["name"]) != self.consumer for each in summary.get("consumers") or []):
            return True
        cursor = "0-0"
        while True:
            answer: Any = self.client.xautoclaim(
                shard.stream, GROUP, self.consumer, self.claim_idle_ms, cursor, count=500
            )
            cursor = _text(answer[0])
            if cursor == "0-0":
                break
        summary = self.client.xpending(shard.stream, GROUP)
        return not any(
            _text(each["name"]) != self.consumer and int(each["pending"]) for each in summary.get("consumers") or []
        )

    def read(self, shard: Shard, count: int) -> list[tuple[str, bytes]]:
        """Entries of a held shard: first those this consumer has pending (claimed, or left by a failed run),
        then new ones. Does not block."""
        while shard.stream in self._history:
            entries, gone = _split(self.client.xreadgroup(GROUP, self.consumer, {shard.stream: "0"}, count=count))
            self.ack(shard, gone)  # deleted while pending (a replay raced a dead consumer): nothing to store
            if entries:
                return entries
            if not gone:
                self._history.discard(shard.stream)
        entries, _ = _split(self.client.xreadgroup(GROUP, self.consumer, {shard.stream: ">"}, count=count))
        return entries

    def ack(self, shard: Shard, entry_ids: list[str]) -> None:
        """Done: acknowledge and delete, so the stream length is the backlog."""
        if entry_ids:
            self._ack(keys=[shard.stream], args=[GROUP, *entry_ids])

    def dead_letter(self, shard: Shard, entry_id: str, data: bytes, reason: str) -> None:
        """Keep an entry that can never be stored, with why, and take it out of the way."""
        waiting = self._dead_letter(
            keys=[shard.stream, shard.dead], args=[GROUP, entry_id, data, reason[:500], MAX_DEAD_LETTERS]
        )
        log.warning(
            "ingest entry dead-lettered: %s",
            reason[:500],
            extra={"entry_id": entry_id, "shard": shard.index, "dead_letters": int(waiting)},
        )


def _split(response: Any) -> tuple[list[tuple[str, bytes]], list[str]]:
    """XREADGROUP's answer as its entries ``(id, data)`` and the ids of pending entries deleted meanwhile."""
    entries: list[tuple[str, bytes]] = []
    gone: list[str] = []
    items = response.values() if isinstance(response, dict) else (items for _, items in response or [])
    for stream_items in items:
        for entry_id, fields in stream_items:
            if fields:
                entries.append((_text(entry_id), fields[b"d"]))
            else:
                gone.append(_text(entry_id))
    return entries, gone


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
    shard: int = 0

    @property
    def dead_lettered_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.id.split("-")[0]) / 1000, UTC)


def dead_letter_count(client: Any, *, shard_count: int) -> int:
    """How many entries wait in the dead-letter streams."""
    return sum(int(client.xlen(each.dead)) for each in _present(client, shard_count))


def dead_letters(client: Any, limit: int = 100, *, shard_count: int) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters of all shards, with their reasons."""
    letters: list[DeadLetter] = []
    for each in _present(client, shard_count):
        entries: Any = client.xrange(each.dead, count=limit)
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
                    shard=each.index,
                )
            )
    letters.sort(key=lambda letter: tuple(int(part) for part in letter.id.split("-")))
    return letters[:limit]


def replay_dead_letters(client: Any, chunk: int = 500, *, shard_count: int) -> int:
    """Move the dead letters back into their shards' streams, once each; returns how many moved. Only the
    letters there when it starts: one whose cause is not fixed comes back with its reason, and waits
    for the next replay instead of going round forever."""
    replay = client.register_script(_REPLAY)
    moved = 0
    for each in _present(client, shard_count):
        newest: Any = client.xrevrange(each.dead, count=1)
        if not newest:
            continue
        last_id = _text(newest[0][0])
        while count := int(replay(keys=[each.dead, each.stream], args=[chunk, last_id])):
            moved += count
    return moved


def decode_entry(data: bytes) -> Envelope:
    return _decoder.decode(data)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

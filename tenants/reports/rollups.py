"""The daily rollups: how a batch of stored visits is folded into ``traffic_rollups``, and the one
re-derivation (:func:`rebuild_rollups`, :func:`compare_rollups`) used by the nightly check and the CLI.

A hit counts as
- an *entry* (a visit, in the UI) when it starts a session: the visitor's first hit, or more than
  :data:`SESSION_GAP` after its previous hit;
- a *visitor* when it is the visitor's first hit of that UTC day (so visitors are counted once per day and
  add up across days; a visitor seen on three days counts three times in a three-day total);
- a *new visitor* when it is the visitor's first hit ever (the first touch).

The previous hit is looked up in the batch (window) and, for the first hit of a visitor in it, in the stored
visits (one index probe on ``visits_visitor_idx``), skipped for visitors with no stored visit yet
(``visitors.visit_count`` 0, read under ingest's lock). The dimensions are computed once per distinct
combination of their inputs in the batch, not per hit. Hits are assumed to arrive in time order per visitor; a
hit stored after a later hit of the same visitor (an offline retry) can leave entries/visitors one off, which
the nightly check reports and the rebuild corrects.

Contacts are counted by a trigger on ``contacts`` (migration 0008), so every service that creates, re-touches,
merges or deletes a contact keeps ``contact_rollups`` right in its own transaction. Purchases likewise by a
trigger on ``purchases`` (migration 0011): ``purchase_rollups`` holds purchases, revenue net of refunds and new
customers by the purchase's day, its touch snapshot's dimensions and its currency.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlmodel import Session

from tenants.isolation import current_tenant_id, system_session, tenant_session
from tenants.reports.dimensions import (
    DIMENSION_INPUTS,
    DIMENSIONS,
    input_dimension_sql,
    touch_dimension_sql,
    visit_dimension_inputs_sql,
)

__all__ = [
    "MAX_DAYS_TO_CONTACT",
    "SESSION_GAP",
    "RollupDifference",
    "check_all_tenants",
    "check_day",
    "compare_purchase_rollups",
    "compare_rollups",
    "contact_keys_sql",
    "purchase_keys_sql",
    "rebuild_purchase_rollups",
    "rebuild_rollups",
    "rebuild_tenants",
    "report_tenants",
    "traffic_rollup_sql",
]

log = logging.getLogger(__name__)

SESSION_GAP = "30 minutes"
MAX_DAYS_TO_CONTACT = 400
"""Days from first visit to contact are capped here; -1 means the contact has no first visit."""
TRAFFIC_MEASURES = ("pageviews", "events", "entries", "visitors", "new_visitors")
_KEY = ", ".join(DIMENSIONS)
_TRAFFIC_KEY = f"site_id, day, is_bot, {_KEY}"
_CONTACT_KEY = f"day, touch, {_KEY}, days_to_contact"


def _hits_sql(source: str, stored_visitors: str | None = None) -> str:
    """Each hit of ``source`` (rows shaped like ``visits``) with its rollup key's inputs
    (:data:`DIMENSION_INPUTS`) and previous hit time. ``stored_visitors``, a SQL ``uuid[]``, names the
    visitors that may have stored visits (None: any); the others' first hit in ``source`` has no previous
    hit, so their lookup is skipped."""
    inputs = visit_dimension_inputs_sql("v")
    lookup = """(SELECT p.occurred_at FROM visits p
                 WHERE p.tenant_id = :tenant_id AND p.visitor_id = v.visitor_id AND p.occurred_at < v.occurred_at
                 ORDER BY p.occurred_at DESC LIMIT 1)"""
    joined = ""
    if stored_visitors is not None:
        lookup = f"CASE WHEN stored.id IS NOT NULL THEN {lookup} END"
        joined = f" LEFT JOIN unnest({stored_visitors}) AS stored(id) ON stored.id = v.visitor_id"
    return f"""SELECT v.site_id, (v.occurred_at AT TIME ZONE 'UTC')::date AS day, v.is_bot,
            {", ".join(f"{inputs[name]} AS {name}" for name in DIMENSION_INPUTS)}, v.type, v.occurred_at,
            coalesce(lag(v.occurred_at) OVER (PARTITION BY v.visitor_id ORDER BY v.occurred_at, v.hit_id),
                {lookup}) AS prev_at
        FROM {source} v{joined}"""  # noqa: S608 - fixed SQL fragments, no input


def _traffic_measures_sql(hits: str) -> str:
    """The measures of ``hits`` by rollup key: counted by distinct dimension inputs first, so the dimension
    functions (regular expressions) run once per input combination, not once per hit."""
    dims = input_dimension_sql("g")
    inputs = ", ".join(DIMENSION_INPUTS)
    return f"""SELECT {_TRAFFIC_KEY}, {", ".join(f"sum({m})::bigint AS {m}" for m in TRAFFIC_MEASURES)}
        FROM (SELECT g.site_id, g.day, g.is_bot, {", ".join(f"{dims[d]} AS {d}" for d in DIMENSIONS)},
                  {", ".join(TRAFFIC_MEASURES)}
              FROM (SELECT site_id, day, is_bot, {inputs},
                        count(*) FILTER (WHERE type = 'pageview') AS pageviews,
                        count(*) FILTER (WHERE type = 'event') AS events,
                        count(*) FILTER (WHERE prev_at IS NULL OR occurred_at - prev_at > interval '{SESSION_GAP}')
                            AS entries,
                        count(*) FILTER (WHERE prev_at IS NULL OR (prev_at AT TIME ZONE 'UTC')::date < day)
                            AS visitors,
                        count(*) FILTER (WHERE prev_at IS NULL) AS new_visitors
                    FROM {hits} GROUP BY site_id, day, is_bot, {inputs}) g) k
        GROUP BY {_TRAFFIC_KEY}"""  # noqa: S608 - fixed SQL fragments, no input


def traffic_rollup_sql(source: str, stored_visitors: str | None = None) -> str:
    """CTE entries (to follow ``WITH … ,``) that add the hits of ``source`` to ``traffic_rollups``: one
    upsert, keys in a fixed order so concurrent ingest workers never deadlock on shared rows.
    ``stored_visitors`` as for :func:`_hits_sql`."""
    adds = ", ".join(f"{m} = traffic_rollups.{m} + excluded.{m}" for m in TRAFFIC_MEASURES)
    return f"""rollup_hits AS ({_hits_sql(source, stored_visitors)}),
       rolled_up AS (
           INSERT INTO traffic_rollups (tenant_id, {_TRAFFIC_KEY}, {", ".join(TRAFFIC_MEASURES)})
           SELECT :tenant_id, * FROM ({_traffic_measures_sql("rollup_hits")}) m
           ORDER BY {_TRAFFIC_KEY}
           ON CONFLICT (tenant_id, {_TRAFFIC_KEY}) DO UPDATE SET {adds})"""  # noqa: S608 - fixed SQL fragments


def contact_keys_sql(row: str) -> str:
    """The two rollup keys (first and last touch) of one ``contacts`` row ``row`` (an alias, OLD or NEW)."""
    first, last = touch_dimension_sql(f"{row}.first_touch"), touch_dimension_sql(f"{row}.last_touch")
    days = (
        f"CASE WHEN {row}.first_touch_at IS NULL THEN -1 ELSE least({MAX_DAYS_TO_CONTACT}, greatest(0,"
        f" floor(extract(epoch FROM {row}.created_at - {row}.first_touch_at) / 86400)))::integer END"
    )
    day = f"({row}.created_at AT TIME ZONE 'UTC')::date"
    return (
        f"SELECT {day} AS day, 'first'::text AS touch, {', '.join(f'{first[d]} AS {d}' for d in DIMENSIONS)},"
        f" {days} AS days_to_contact"
        f" UNION ALL SELECT {day}, 'last', {', '.join(last[d] for d in DIMENSIONS)}, {days}"
    )


PURCHASE_MEASURES = ("purchases", "revenue", "new_customers")
_PURCHASE_KEY = f"day, touch, {_KEY}, currency"


def purchase_keys_sql(row: str) -> str:
    """The two rollup keys (first and last touch) of one ``purchases`` row ``row`` (an alias, OLD or NEW):
    the dimensions of the touches snapshotted when it was recorded, so a later change of the contact's
    touches moves no revenue between days or channels."""
    first, last = touch_dimension_sql(f"{row}.first_touch"), touch_dimension_sql(f"{row}.last_touch")
    day = f"({row}.occurred_at AT TIME ZONE 'UTC')::date"
    return (
        f"SELECT {day} AS day, 'first'::text AS touch, {', '.join(f'{first[d]} AS {d}' for d in DIMENSIONS)},"
        f" {row}.currency::text AS currency"
        f" UNION ALL SELECT {day}, 'last', {', '.join(last[d] for d in DIMENSIONS)}, {row}.currency::text"
    )


_DAY_RANGE = "occurred_at >= CAST(:start AS date) AND occurred_at < CAST(:end AS date) + 1"
_VISITS_IN_RANGE = f"(SELECT * FROM visits WHERE tenant_id = :tenant_id AND {_DAY_RANGE})"  # noqa: S608
_DERIVED_TRAFFIC = _traffic_measures_sql(f"({_hits_sql(_VISITS_IN_RANGE)}) h")
_DERIVED_CONTACTS = f"""SELECT {_CONTACT_KEY}, count(*) AS contacts
    FROM contacts c, LATERAL ({contact_keys_sql("c")}) k
    WHERE c.tenant_id = :tenant_id AND c.merged_into IS NULL
      AND c.created_at >= CAST(:start AS date) AND c.created_at < CAST(:end AS date) + 1
    GROUP BY {_CONTACT_KEY}"""  # noqa: S608 - fixed SQL fragments, no input


# The key's columns are named from k: purchases has columns called source and currency too.
_K_PURCHASE_KEY = ", ".join(f"k.{name}" for name in _PURCHASE_KEY.split(", "))
_DERIVED_PURCHASES = f"""SELECT {_K_PURCHASE_KEY}, count(*) AS purchases,
        sum(p.amount - p.refunded_amount) AS revenue, count(*) FILTER (WHERE p.new_customer) AS new_customers
    FROM purchases p, LATERAL ({purchase_keys_sql("p")}) k
    WHERE p.tenant_id = :tenant_id
      AND p.occurred_at >= CAST(:start AS date) AND p.occurred_at < CAST(:end AS date) + 1
    GROUP BY {_K_PURCHASE_KEY}"""  # noqa: S608 - fixed SQL fragments, no input


def rebuild_purchase_rollups(session: Session, start: date, end: date) -> None:
    """Delete ``purchase_rollups`` of ``start`` … ``end`` (inclusive, UTC) and derive them from the purchases."""
    params = _params(session, start, end)
    session.execute(text("DELETE FROM purchase_rollups WHERE day BETWEEN :start AND :end"), params)
    session.execute(
        text(
            f"""INSERT INTO purchase_rollups (tenant_id, {_PURCHASE_KEY}, {", ".join(PURCHASE_MEASURES)})
                SELECT :tenant_id, * FROM ({_DERIVED_PURCHASES}) d ORDER BY {_PURCHASE_KEY}"""  # noqa: S608
        ),
        params,
    )


def compare_purchase_rollups(session: Session, start: date, end: date) -> list[RollupDifference]:
    """Every ``purchase_rollups`` key of ``start`` … ``end`` whose counts differ from a scan of the purchases."""
    return _compare(
        session,
        start,
        end,
        table="purchase_rollups",
        derived_sql=_DERIVED_PURCHASES,
        key=_PURCHASE_KEY,
        measures=PURCHASE_MEASURES,
    )


def rebuild_rollups(session: Session, start: date, end: date) -> None:
    """Delete the rollups of the days ``start`` … ``end`` (inclusive, UTC) of the session's tenant and
    derive them again from its stored visits and contacts."""
    params = _params(session, start, end)
    session.execute(text("DELETE FROM traffic_rollups WHERE day BETWEEN :start AND :end"), params)
    session.execute(text("DELETE FROM contact_rollups WHERE day BETWEEN :start AND :end"), params)
    session.execute(
        text(
            f"""INSERT INTO traffic_rollups (tenant_id, {_TRAFFIC_KEY}, {", ".join(TRAFFIC_MEASURES)})
                SELECT :tenant_id, * FROM ({_DERIVED_TRAFFIC}) d ORDER BY {_TRAFFIC_KEY}"""  # noqa: S608
        ),
        params,
    )
    session.execute(
        text(
            f"""INSERT INTO contact_rollups (tenant_id, {_CONTACT_KEY}, contacts)
                SELECT :tenant_id, * FROM ({_DERIVED_CONTACTS}) d ORDER BY {_CONTACT_KEY}"""  # noqa: S608
        ),
        params,
    )
    rebuild_purchase_rollups(session, start, end)


@dataclass(frozen=True)
class RollupDifference:
    """One rollup key whose stored counts differ from what the visits or contacts give."""

    table: str
    key: tuple[Any, ...]
    stored: tuple[int, ...]
    derived: tuple[int, ...]


def compare_rollups(session: Session, start: date, end: date) -> list[RollupDifference]:
    """Re-derive the rollups of ``start`` … ``end`` and return every key where they differ from the stored
    ones (empty when the rollups equal a scan). Changes nothing."""
    params = _params(session, start, end)
    differences: list[RollupDifference] = []
    for table, derived_sql, key, measures in (
        ("traffic_rollups", _DERIVED_TRAFFIC, _TRAFFIC_KEY, TRAFFIC_MEASURES),
        ("contact_rollups", _DERIVED_CONTACTS, _CONTACT_KEY, ("contacts",)),
    ):
        width = len(key.split(", "))
        stored_sql = f"SELECT {key}, {', '.join(measures)} FROM {table} WHERE day BETWEEN :start AND :end"  # noqa: S608
        stored = _by_key(session.execute(text(stored_sql), params).all(), width)
        derived = _by_key(session.execute(text(derived_sql), params).all(), width)
        zero = (0,) * len(measures)
        for row_key in sorted(stored.keys() | derived.keys(), key=repr):
            have, want = stored.get(row_key, zero), derived.get(row_key, zero)
            if have != want:
                differences.append(RollupDifference(table, row_key, have, want))
    return differences + compare_purchase_rollups(session, start, end)


def _compare(
    session: Session, start: date, end: date, *, table: str, derived_sql: str, key: str, measures: tuple[str, ...]
) -> list[RollupDifference]:
    params = _params(session, start, end)
    width = len(key.split(", "))
    stored_sql = f"SELECT {key}, {', '.join(measures)} FROM {table} WHERE day BETWEEN :start AND :end"  # noqa: S608
    stored = _by_key(session.execute(text(stored_sql), params).all(), width)
    derived = _by_key(session.execute(text(derived_sql), params).all(), width)
    zero = (0,) * len(measures)
    return [
        RollupDifference(table, row_key, stored.get(row_key, zero), derived.get(row_key, zero))
        for row_key in sorted(stored.keys() | derived.keys(), key=repr)
        if stored.get(row_key, zero) != derived.get(row_key, zero)
    ]


def check_day(session: Session, day: date) -> list[RollupDifference]:
    """The nightly check of one day: log (WARNING, with tenant and counts) every difference found."""
    differences = compare_rollups(session, day, day)
    for difference in differences:
        log.warning(
            "rollup differs from a scan: tenant %s, %s %s: stored %s, derived %s",
            current_tenant_id(session),
            difference.table,
            difference.key,
            difference.stored,
            difference.derived,
        )
    return differences


def report_tenants() -> list[UUID]:
    """Every tenant's id (through the owner-run function: the app role sees no tenant without one)."""
    with system_session() as session:
        return [row[0] for row in session.execute(text("SELECT trailmark_report_tenants()")).all()]


def check_all_tenants(day: date) -> int:
    """The nightly check: compare each tenant's rollups of ``day`` with a scan, log what differs; returns
    how many keys differ in all. Each tenant in its own transaction, so one slow tenant holds no other."""
    differing = 0
    for tenant_id in report_tenants():
        with tenant_session(tenant_id) as session:
            differing += len(check_day(session, day))
    return differing


def rebuild_tenants(start: date, end: date, tenant_ids: list[UUID] | None = None) -> int:
    """Rebuild the rollups of ``start`` … ``end`` for the given tenants (all when None), one transaction per
    tenant; returns how many tenants were rebuilt."""
    ids = report_tenants() if tenant_ids is None else tenant_ids
    for tenant_id in ids:
        with tenant_session(tenant_id) as session:
            rebuild_rollups(session, start, end)
    return len(ids)


def _by_key(rows: Sequence[Any], width: int) -> dict[tuple[Any, ...], tuple[int, ...]]:
    return {tuple(row[:width]): tuple(int(v) for v in row[width:]) for row in rows if any(row[width:])}


def _params(session: Session, start: date, end: date) -> dict[str, Any]:
    return {"tenant_id": current_tenant_id(session), "start": start, "end": end}

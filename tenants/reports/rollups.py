"""The rollups: how a batch of stored visits is folded into the traffic rollup tables, how a contact change
is folded into the contact rollup tables (the trigger SQL of migration 0010), and the one re-derivation
(:func:`rebuild_rollups`, :func:`compare_rollups`) used by the nightly check and the CLI.

**Shapes.** The same counts are kept in several tables (:data:`SHAPES`), each for a subset of the
dimensions: every dimension (what any combination of filters needs), the acquisition dimensions
(channel, source, medium, campaign, partner, click platform), the landing page, the referrer, and none (the
totals). A report reads the narrowest shape that holds every dimension it groups or filters by: an unfiltered
90-day overview sums a few thousand rows instead of every combination of campaign, referrer and landing page.

**Spans.** Each table holds every key three times: under its UTC day, its block (days 1-8, 9-16, 17-24 and 25
to the end of a month) and its month (``span`` ``day``, ``block`` or ``month``; ``day`` is the bucket's first
day). :func:`cover` turns a range of days into a signed sum of few buckets (a month minus a block minus a day …),
so a 90-day range reads at most about 16 buckets instead of 90 days, each bucket a few thousand rows at most.

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

Contacts are counted by a trigger on ``contacts`` (:func:`contact_trigger_sql`), so every service that
creates, re-touches, merges or deletes a contact keeps the contact rollups right in its own transaction.
Purchases likewise by a trigger on ``purchases`` (migration 0011): ``purchase_rollups`` holds purchases,
revenue net of refunds and new customers by the purchase's day, its touch snapshot's dimensions and its
currency (day rows only: purchases are few next to visits). The partners report's rollups (day rows too):
``referral_rollups`` (clicks and leads, migration 0014) and ``partner_sale_rollups`` (the money of the partner
each purchase credited, per SubID: purchases, customers, revenue, commissions; migration 0017).
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
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
    "CONTACT_MEASURES",
    "COOKIELESS_MEASURES",
    "MAX_DAYS_TO_CONTACT",
    "SESSION_GAP",
    "SHAPES",
    "SOURCE_DIMENSIONS",
    "SPANS",
    "TRAFFIC_MEASURES",
    "Cover",
    "RollupDifference",
    "RollupShape",
    "check_all_tenants",
    "check_day",
    "compare_partner_sale_rollups",
    "compare_purchase_rollups",
    "compare_referral_rollups",
    "compare_rollups",
    "contact_keys_sql",
    "contact_trigger_sql",
    "cookieless_rollup_sql",
    "cover",
    "covered",
    "month_blocks",
    "narrowest_shape",
    "purchase_keys_sql",
    "rebuild_partner_sale_rollups",
    "rebuild_purchase_rollups",
    "rebuild_referral_rollups",
    "rebuild_rollups",
    "rebuild_tenants",
    "report_tenants",
    "spread_stored_days_sql",
    "traffic_rollup_sql",
]

log = logging.getLogger(__name__)

SESSION_GAP = "30 minutes"
MAX_DAYS_TO_CONTACT = 400
"""Days from first visit to contact are capped here; -1 means the contact has no first visit."""
TRAFFIC_MEASURES = ("pageviews", "events", "entries", "visitors", "new_visitors")
COOKIELESS_MEASURES = ("cookieless_pageviews", "cookieless_events", "cookieless_entries", "cookieless_visitors")
"""Hits of browsers without consent on opt-in sites (``tenants/tracking/cookieless.py``), counted beside the
traffic measures in the same rows but never stored as visits: the nightly check, which compares the traffic
measures with a scan of the visits, leaves them alone, and the rebuild keeps them. No new visitors: without a
stored history nobody knows whether a browser is new."""
CONTACT_MEASURES = ("contacts",)
SPANS = ("day", "block", "month")
SOURCE_DIMENSIONS: tuple[str, ...] = ("channel", "source", "medium", "campaign", "partner", "click_platform")


@dataclass(frozen=True)
class RollupShape:
    """A pair of rollup tables (traffic, contacts) keyed by span, bucket day and ``dimensions``."""

    traffic_table: str
    contact_table: str
    dimensions: tuple[str, ...]
    by_dimension: bool = False
    """Keyed by ``(dimension, value)`` instead of a column per dimension: one row per value of each of
    ``dimensions``, not one per combination of their values. It answers one dimension at a time, unfiltered."""

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("dimension", "value") if self.by_dimension else self.dimensions

    @property
    def traffic_key(self) -> tuple[str, ...]:
        """The primary key after ``tenant_id``: bucket first, so one index serves every site and one site."""
        return ("span", "day", "site_id", "is_bot", *self.key_columns)

    @property
    def contact_key(self) -> tuple[str, ...]:
        return ("span", "day", "touch", *self.key_columns, "days_to_contact")

    def rows(self, source: str) -> str:
        """``source`` (a FROM item of rows with every dimension's column) as rows of this shape's key: itself,
        or, by dimension, each of its rows once per dimension with that dimension's value."""
        if not self.by_dimension:
            return source
        pairs = ", ".join(f"('{name}', k.{name})" for name in self.dimensions)
        return f"""(SELECT k.*, d.dimension, d.value
            FROM {source} k CROSS JOIN LATERAL (VALUES {pairs}) AS d(dimension, value))"""  # noqa: S608

    def keys(self, columns: Sequence[str], row: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The keys (after ``span``) that a day row ``row`` with every dimension's column (named by ``columns``)
        counts under in this shape's traffic or contact table (whichever ``columns`` is the key of)."""
        key = self.traffic_key if "site_id" in columns else self.contact_key
        if not self.by_dimension:
            return [tuple(row[columns.index(name)] for name in key[1:])]
        return [
            tuple(
                name if column == "dimension" else row[columns.index(name if column == "value" else column)]
                for column in key[1:]
            )
            for name in self.dimensions
        ]


SHAPES: tuple[RollupShape, ...] = (
    RollupShape("traffic_rollups", "contact_rollups", DIMENSIONS),
    RollupShape("traffic_source_rollups", "contact_source_rollups", SOURCE_DIMENSIONS),
    RollupShape("traffic_page_rollups", "contact_page_rollups", ("landing_page",)),
    RollupShape("traffic_referrer_rollups", "contact_referrer_rollups", ("referrer",)),
    RollupShape("traffic_total_rollups", "contact_total_rollups", ()),
)
"""Widest first; the first holds every dimension and is what the others are derived from."""
FULL_SHAPE = SHAPES[0]
BY_DIMENSION = RollupShape(
    "traffic_dimension_rollups", "contact_dimension_rollups", SOURCE_DIMENSIONS, by_dimension=True
)
"""The acquisition dimensions' values one by one, for the unfiltered overview's tables: at 5M visits a 90-day
range holds about 15,000 combinations of them in ``traffic_source_rollups``, but only a few hundred values."""
KEPT_SHAPES: tuple[RollupShape, ...] = (*SHAPES, BY_DIMENSION)
"""Every shape ingest, the triggers and the rebuild keep; :data:`SHAPES` are those a filtered report can read."""


def narrowest_shape(dimensions: Iterable[str]) -> RollupShape:
    """The smallest shape holding every one of ``dimensions``."""
    needed = set(dimensions)
    return next(shape for shape in reversed(SHAPES) if needed <= set(shape.dimensions))


# --- ranges ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cover:
    """Buckets whose signed sum is a range of days: ``spans[i]``, ``days[i]`` (the bucket's first day),
    ``signs[i]`` (+1 or -1)."""

    spans: list[str]
    days: list[date]
    signs: list[int]

    def params(self) -> dict[str, Any]:
        return {"cover_spans": self.spans, "cover_days": self.days, "cover_signs": self.signs}


def covered(table: str, conditions: Sequence[str] = ()) -> str:
    """A FROM clause: the rows of ``table``, aliased ``r``, in the buckets of a :class:`Cover` (its
    ``params``) that meet ``conditions`` (SQL over ``r``), each with its bucket's ``b.sign`` to multiply
    measures by. One index range per bucket, filtered as it is read (OFFSET 0 keeps the planner from
    turning it into a scan of the whole table joined by hash, which it would then filter)."""
    where = " AND ".join(["r.span = b.span", "r.day = b.day", *conditions])
    return f"""unnest(CAST(:cover_spans AS text[]), CAST(:cover_days AS date[]), CAST(:cover_signs AS integer[]))
        AS b(span, day, sign)
        CROSS JOIN LATERAL (SELECT * FROM {table} r WHERE {where} OFFSET 0) r"""  # noqa: S608


def month_blocks(month: date) -> list[tuple[date, date]]:
    """The blocks of a month: its days 1-8, 9-16, 17-24 and 25 to the end."""
    last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
    firsts = [month.replace(day=day) for day in (1, 9, 17, 25)]
    return [(first, (firsts[n + 1] - timedelta(days=1)) if n < 3 else last) for n, first in enumerate(firsts)]


def _days(first: date, last: date, sign: int) -> list[tuple[str, date, int]]:
    return [("day", first + timedelta(days=offset), sign) for offset in range((last - first).days + 1)]


def _within_month(first: date, last: date, sign: int) -> list[tuple[str, date, int]]:
    """``first`` … ``last`` (inside one month) as blocks and days: per block, the block itself, its days in
    the range, or the block minus its days outside it, whichever is fewer buckets."""
    parts: list[tuple[str, date, int]] = []
    for block_first, block_last in month_blocks(first.replace(day=1)):
        low, high = max(first, block_first), min(last, block_last)
        if low > high:
            continue
        direct = _days(low, high, sign)
        minus = [("block", block_first, sign)]
        if low > block_first:
            minus += _days(block_first, low - timedelta(days=1), -sign)
        if high < block_last:
            minus += _days(high + timedelta(days=1), block_last, -sign)
        parts += direct if len(direct) <= len(minus) else minus
    return parts


def cover(start: date, end: date) -> Cover:
    """The fewest buckets whose signed sum is ``start`` … ``end`` (inclusive): per calendar month, the month
    itself when the range holds all of it; otherwise its part in the range as blocks and days, or the month
    minus its part outside the range, whichever is fewer. A 90-day range reads at most about 16 buckets."""
    parts: list[tuple[str, date, int]] = []
    month = start.replace(day=1)
    while month <= end:
        last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
        first_in, last_in = max(start, month), min(end, last)
        direct = _within_month(first_in, last_in, 1)
        minus = [("month", month, 1)]
        if first_in > month:
            minus += _within_month(month, first_in - timedelta(days=1), -1)
        if last_in < last:
            minus += _within_month(last_in + timedelta(days=1), last, -1)
        parts += direct if len(direct) <= len(minus) else minus
        month = last + timedelta(days=1)
    return Cover([span for span, _, _ in parts], [day for _, day, _ in parts], [sign for _, _, sign in parts])


def _bucket(day: str, span: str = "s.span") -> str:
    """The first day of the bucket of ``span`` that holds ``day`` (see :func:`month_blocks`)."""
    month = f"date_trunc('month', {day})::date"
    return (
        f"CASE {span} WHEN 'day' THEN {day}"
        f" WHEN 'block' THEN {month} + least((extract(day FROM {day})::integer - 1) / 8, 3) * 8"
        f" ELSE {month} END"
    )


_SPANS_SQL = "(VALUES ('day'), ('block'), ('month')) AS s(span)"


# --- traffic ---------------------------------------------------------------------------------------


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
            v.counted_before_consent,
            coalesce(lag(v.occurred_at) OVER (PARTITION BY v.visitor_id ORDER BY v.occurred_at, v.hit_id),
                {lookup}) AS prev_at
        FROM {source} v{joined}"""  # noqa: S608 - fixed SQL fragments, no input


_DAY_KEY = f"site_id, day, is_bot, {', '.join(DIMENSIONS)}"


def _traffic_measures_sql(hits: str) -> str:
    """The measures of ``hits`` by day and every dimension: counted by distinct dimension inputs first, so
    the dimension functions (regular expressions) run once per input combination, not once per hit."""
    dims = input_dimension_sql("g")
    inputs = ", ".join(DIMENSION_INPUTS)
    return f"""SELECT {_DAY_KEY}, {", ".join(f"sum({m})::bigint AS {m}" for m in TRAFFIC_MEASURES)}
        FROM (SELECT g.site_id, g.day, g.is_bot, {", ".join(f"{dims[d]} AS {d}" for d in DIMENSIONS)},
                  {", ".join(TRAFFIC_MEASURES)}
              FROM (SELECT site_id, day, is_bot, {inputs},
                        count(*) FILTER (WHERE type = 'pageview' AND NOT counted_before_consent) AS pageviews,
                        count(*) FILTER (WHERE type = 'event') AS events,
                        count(*) FILTER (WHERE NOT counted_before_consent
                            AND (prev_at IS NULL OR occurred_at - prev_at > interval '{SESSION_GAP}')) AS entries,
                        count(*) FILTER (WHERE NOT counted_before_consent
                            AND (prev_at IS NULL OR (prev_at AT TIME ZONE 'UTC')::date < day)) AS visitors,
                        count(*) FILTER (WHERE prev_at IS NULL) AS new_visitors
                    FROM {hits} GROUP BY site_id, day, is_bot, {inputs}) g) k
        GROUP BY {_DAY_KEY}"""  # noqa: S608 - fixed SQL fragments, no input


def _spread_sql(
    table: str, key: tuple[str, ...], measures: tuple[str, ...], source: str, spans: str = _SPANS_SQL
) -> str:
    """Upsert the rows of ``source`` (day rows with every dimension, aliased ``r``) into ``table`` under each
    span of ``spans``, summed by ``key``; keys in a fixed order so concurrent writers never deadlock."""
    columns = [_bucket("r.day") if name == "day" else "s.span" if name == "span" else f"r.{name}" for name in key]
    positions = ", ".join(str(number) for number in range(2, len(key) + 2))
    adds = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in measures)
    return f"""INSERT INTO {table} (tenant_id, {", ".join(key)}, {", ".join(measures)})
        SELECT :tenant_id, {", ".join(columns)}, {", ".join(f"sum(r.{m})" for m in measures)}
        FROM {source} r CROSS JOIN {spans}
        GROUP BY {positions} HAVING {" OR ".join(f"sum(r.{m}) <> 0" for m in measures)}
        ORDER BY {positions}
        ON CONFLICT (tenant_id, {", ".join(key)}) DO UPDATE SET {adds}"""  # noqa: S608 - fixed SQL fragments


def traffic_rollup_sql(source: str, stored_visitors: str | None = None) -> str:
    """CTE entries (to follow ``WITH … ,``) that add the hits of ``source`` to every traffic rollup table:
    the hits are counted once, then summed into each shape and span. ``stored_visitors`` as for
    :func:`_hits_sql`."""
    spreads = [
        _spread_sql(shape.traffic_table, shape.traffic_key, TRAFFIC_MEASURES, shape.rows("rollup_keys"))
        for shape in KEPT_SHAPES
    ]
    upserts = ",\n       ".join(f"rolled_up_{number} AS ({sql})" for number, sql in enumerate(spreads))
    return f"""rollup_hits AS ({_hits_sql(source, stored_visitors)}),
       rollup_keys AS ({_traffic_measures_sql("rollup_hits")}),
       {upserts}"""


def cookieless_rollup_sql(source: str) -> str:
    """A statement that adds the cookieless hits of ``source`` (a FROM item) to every traffic rollup table (measures
    :data:`COOKIELESS_MEASURES`). ``source`` has a visit's dimension columns (``url``, ``referrer``,
    ``utm_source``, ``utm_medium``, ``utm_campaign``, ``click_ids``, ``partner_code``) plus ``site_id``,
    ``day``, ``is_bot``, ``type`` and the flags ``visitor`` and ``entry`` that Redis decided."""
    inputs = visit_dimension_inputs_sql("v")
    dims = input_dimension_sql("g")
    keys = f"""SELECT {_DAY_KEY}, {", ".join(f"sum({m})::bigint AS {m}" for m in COOKIELESS_MEASURES)}
        FROM (SELECT g.site_id, g.day, g.is_bot, {", ".join(f"{dims[d]} AS {d}" for d in DIMENSIONS)},
                  {", ".join(COOKIELESS_MEASURES)}
              FROM (SELECT v.site_id, v.day, v.is_bot, {", ".join(f"{inputs[n]} AS {n}" for n in DIMENSION_INPUTS)},
                        count(*) FILTER (WHERE v.type = 'pageview') AS cookieless_pageviews,
                        count(*) FILTER (WHERE v.type = 'event') AS cookieless_events,
                        count(*) FILTER (WHERE v.entry) AS cookieless_entries,
                        count(*) FILTER (WHERE v.visitor) AS cookieless_visitors
                    FROM (SELECT * FROM {source}) v
                    GROUP BY {", ".join(str(n) for n in range(1, 4 + len(DIMENSION_INPUTS)))}) g) k
        GROUP BY {_DAY_KEY}"""  # noqa: S608 - fixed SQL fragments, no input
    spreads = [
        _spread_sql(shape.traffic_table, shape.traffic_key, COOKIELESS_MEASURES, shape.rows("cookieless_keys"))
        for shape in KEPT_SHAPES
    ]
    upserts = ",\n       ".join(f"cookieless_{number} AS ({sql})" for number, sql in enumerate(spreads[1:]))
    return f"""WITH cookieless_keys AS ({keys}),
       {upserts}
       {spreads[0]}"""


# --- contacts --------------------------------------------------------------------------------------


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


def _contact_spreads(source: str, shapes: Sequence[RollupShape]) -> list[str]:
    return [
        _spread_sql(shape.contact_table, shape.contact_key, CONTACT_MEASURES, shape.rows(source)) for shape in shapes
    ]


def contact_trigger_sql(shapes: Sequence[RollupShape] = KEPT_SHAPES) -> str:
    """The body of the ``contacts`` trigger: a contact counts once per touch kind under its current creation
    day, touches and days to contact; every change of those (created, touches refreshed, merged away,
    deleted) subtracts the old key and adds the new one, in every contact rollup table, in the same
    transaction, whichever service made it."""
    key = f"day, touch, {', '.join(DIMENSIONS)}, days_to_contact"
    spreads = _contact_spreads("delta", shapes)
    ctes = ",\n".join(f"spread_{number} AS ({sql})" for number, sql in enumerate(spreads[1:]))
    return f"""WITH delta AS (
            SELECT {key}, sum(n) AS contacts
            FROM (SELECT k.*, -1 AS n FROM ({contact_keys_sql("OLD")}) k
                  WHERE TG_OP IN ('UPDATE', 'DELETE') AND OLD.merged_into IS NULL
                  UNION ALL
                  SELECT k.*, 1 FROM ({contact_keys_sql("NEW")}) k
                  WHERE TG_OP IN ('UPDATE', 'INSERT') AND NEW.merged_into IS NULL) AS changes
            GROUP BY {key} HAVING sum(n) <> 0),
        {ctes}
        {spreads[0]}""".replace(":tenant_id", "coalesce(NEW.tenant_id, OLD.tenant_id)")  # noqa: S608


# --- purchases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DerivedRollup:
    """A daily rollup kept by triggers, with the one SQL (``derived``, over ``:tenant_id``, ``:start`` and ``:end``)
    that derives it from its source rows: its rebuild and its nightly comparison both read that."""

    table: str
    key: str
    """Its key columns after ``tenant_id``, comma-separated, ``day`` first."""
    measures: tuple[str, ...]
    derived: str

    def rebuild(self, session: Session, start: date, end: date) -> None:
        """Delete the rows of ``start`` … ``end`` (inclusive, UTC) and derive them again."""
        params = _params(session, start, end)
        session.execute(text(f"DELETE FROM {self.table} WHERE day BETWEEN :start AND :end"), params)  # noqa: S608
        session.execute(
            text(
                f"""INSERT INTO {self.table} (tenant_id, {self.key}, {", ".join(self.measures)})
                    SELECT :tenant_id, * FROM ({self.derived}) d ORDER BY {self.key}"""  # noqa: S608
            ),
            params,
        )

    def compare(self, session: Session, start: date, end: date) -> list[RollupDifference]:
        """Every key of ``start`` … ``end`` whose measures differ from the derivation."""
        params = _params(session, start, end)
        width = len(self.key.split(", "))
        stored = session.execute(
            text(
                f"""SELECT {self.key}, {", ".join(self.measures)} FROM {self.table}
                    WHERE day BETWEEN :start AND :end"""  # noqa: S608 - fixed names
            ),
            params,
        ).all()
        derived = session.execute(text(self.derived), params).all()
        return _differences(self.table, _by_key(stored, width), _by_key(derived, width))


PURCHASE_MEASURES = ("purchases", "revenue", "new_customers")
_PURCHASE_KEY = f"day, touch, {', '.join(DIMENSIONS)}, currency"


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


# The key's columns are named from k: purchases has columns called source and currency too.
_K_PURCHASE_KEY = ", ".join(f"k.{name}" for name in _PURCHASE_KEY.split(", "))
_DERIVED_PURCHASES = f"""SELECT {_K_PURCHASE_KEY}, count(*) AS purchases,
        sum(p.amount - p.refunded_amount) AS revenue, count(*) FILTER (WHERE p.new_customer) AS new_customers
    FROM purchases p, LATERAL ({purchase_keys_sql("p")}) k
    WHERE p.tenant_id = :tenant_id
      AND p.occurred_at >= CAST(:start AS date) AND p.occurred_at < CAST(:end AS date) + 1
    GROUP BY {_K_PURCHASE_KEY}"""  # noqa: S608 - fixed SQL fragments, no input


PURCHASE_ROLLUPS = DerivedRollup("purchase_rollups", _PURCHASE_KEY, PURCHASE_MEASURES, _DERIVED_PURCHASES)
"""``purchase_rollups``, derived from the purchases."""
rebuild_purchase_rollups = PURCHASE_ROLLUPS.rebuild
compare_purchase_rollups = PURCHASE_ROLLUPS.compare


# --- referrals (the partners report) ---------------------------------------------------------------

REFERRAL_MEASURES = ("clicks", "leads")
_REFERRAL_KEY = "day, partner_id, sid"
# As the triggers of migration 0014 count: a click on its UTC day under its SubID; a lead (a first-referrer
# binding) on the day it was bound, under the SubID of its click.
_DERIVED_REFERRALS = f"""SELECT {_REFERRAL_KEY}, sum(clicks) AS clicks, sum(leads) AS leads FROM (
        SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, partner_id, coalesce(sid, '') AS sid,
            1 AS clicks, 0 AS leads
        FROM referral_clicks
        WHERE tenant_id = :tenant_id AND occurred_at >= CAST(:start AS date) AND occurred_at < CAST(:end AS date) + 1
        UNION ALL
        SELECT (r.bound_at AT TIME ZONE 'UTC')::date, r.partner_id, coalesce(c.sid, ''), 0, 1
        FROM contact_referrers r
            LEFT JOIN referral_clicks c ON c.tenant_id = r.tenant_id AND c.hit_id = r.click_hit_id
        WHERE r.tenant_id = :tenant_id AND r.position = 'first'
          AND r.bound_at >= CAST(:start AS date) AND r.bound_at < CAST(:end AS date) + 1) d
    GROUP BY {_REFERRAL_KEY}"""  # noqa: S608 - fixed SQL fragments, no input


REFERRAL_ROLLUPS = DerivedRollup("referral_rollups", _REFERRAL_KEY, REFERRAL_MEASURES, _DERIVED_REFERRALS)
"""``referral_rollups``, derived from the referral clicks and the contacts' first referrers."""
rebuild_referral_rollups = REFERRAL_ROLLUPS.rebuild
compare_referral_rollups = REFERRAL_ROLLUPS.compare


# --- partner sales (the partners report's money) ----------------------------------------------------

PARTNER_SALE_MEASURES = ("purchases", "customers", "revenue", "commission", "sub_partner_commission")
_PARTNER_SALE_KEY = "day, partner_id, sid, currency"
# As the triggers of migration 0017 count: a purchase credited (or held) for a partner on the purchase's UTC day,
# under its credit's SubID; every commission line (rejected ones aside) on its purchase's day, under its own SubID.
_DERIVED_PARTNER_SALES = f"""SELECT {_PARTNER_SALE_KEY}, {", ".join(f"sum({m})" for m in PARTNER_SALE_MEASURES)} FROM (
        SELECT (p.occurred_at AT TIME ZONE 'UTC')::date AS day, c.partner_id, c.sid, p.currency::text AS currency,
            1 AS purchases, c.new_customer::integer AS customers, p.amount - p.refunded_amount AS revenue,
            0 AS commission, 0 AS sub_partner_commission
        FROM purchase_credits c JOIN purchases p ON p.tenant_id = c.tenant_id AND p.id = c.purchase_id
        WHERE c.tenant_id = :tenant_id AND c.status <> 'refused'
          AND p.occurred_at >= CAST(:start AS date) AND p.occurred_at < CAST(:end AS date) + 1
        UNION ALL
        SELECT (p.occurred_at AT TIME ZONE 'UTC')::date, m.partner_id, m.sid, m.currency::text, 0, 0, 0,
            CASE WHEN m.level = 1 THEN m.amount ELSE 0 END, CASE WHEN m.level = 2 THEN m.amount ELSE 0 END
        FROM commissions m JOIN purchases p ON p.tenant_id = m.tenant_id AND p.id = m.purchase_id
        WHERE m.tenant_id = :tenant_id AND m.status <> 'rejected'
          AND p.occurred_at >= CAST(:start AS date) AND p.occurred_at < CAST(:end AS date) + 1) d
    GROUP BY {_PARTNER_SALE_KEY}"""  # noqa: S608 - fixed SQL fragments, no input


PARTNER_SALE_ROLLUPS = DerivedRollup(
    "partner_sale_rollups", _PARTNER_SALE_KEY, PARTNER_SALE_MEASURES, _DERIVED_PARTNER_SALES
)
"""``partner_sale_rollups``, derived from the purchase credits, purchases and commissions."""
rebuild_partner_sale_rollups = PARTNER_SALE_ROLLUPS.rebuild
compare_partner_sale_rollups = PARTNER_SALE_ROLLUPS.compare


# --- re-derivation ---------------------------------------------------------------------------------

_DAY_RANGE = "occurred_at >= CAST(:start AS date) AND occurred_at < CAST(:end AS date) + 1"
_VISITS_IN_RANGE = f"(SELECT * FROM visits WHERE tenant_id = :tenant_id AND {_DAY_RANGE})"  # noqa: S608
_DERIVED_TRAFFIC = _traffic_measures_sql(f"({_hits_sql(_VISITS_IN_RANGE)}) h")
_CONTACT_DAY_KEY = f"day, touch, {', '.join(DIMENSIONS)}, days_to_contact"
_DERIVED_CONTACTS = f"""SELECT {_CONTACT_DAY_KEY}, count(*) AS contacts
    FROM contacts c, LATERAL ({contact_keys_sql("c")}) k
    WHERE c.tenant_id = :tenant_id AND c.merged_into IS NULL
      AND c.created_at >= CAST(:start AS date) AND c.created_at < CAST(:end AS date) + 1
    GROUP BY {_CONTACT_DAY_KEY}"""  # noqa: S608 - fixed SQL fragments, no input
_DAYS_ONLY = "(VALUES ('day')) AS s(span)"
_LONGER_SPANS = "(VALUES ('block'), ('month')) AS s(span)"


def _stored_days(table: str) -> str:
    """The day rows of ``table`` in ``:start`` … ``:end``, as a source for :func:`_spread_sql`."""
    return f"(SELECT * FROM {table} WHERE span = 'day' AND day BETWEEN :start AND :end)"  # noqa: S608


def _whole_months(start: date, end: date) -> tuple[date, date]:
    return start.replace(day=1), end.replace(day=calendar.monthrange(end.year, end.month)[1])


def rebuild_rollups(session: Session, start: date, end: date) -> None:
    """Delete the rollups of the days ``start`` … ``end`` (inclusive, UTC, widened to whole months) of the
    session's tenant and derive them again from its stored visits and contacts."""
    params = _params(session, *_whole_months(start, end))
    for shape in KEPT_SHAPES:
        # The cookieless counts have no visits to be derived from: their rows stay, with the traffic measures
        # zeroed for the derivation to add to; rows left with nothing go.
        table = shape.traffic_table
        zeroed = ", ".join(f"{m} = 0" for m in TRAFFIC_MEASURES)
        session.execute(text(f"UPDATE {table} SET {zeroed} WHERE day BETWEEN :start AND :end"), params)  # noqa: S608
        empty = " AND ".join(f"{m} = 0" for m in COOKIELESS_MEASURES)
        session.execute(text(f"DELETE FROM {table} WHERE day BETWEEN :start AND :end AND {empty}"), params)  # noqa: S608
        session.execute(text(f"DELETE FROM {shape.contact_table} WHERE day BETWEEN :start AND :end"), params)  # noqa: S608
    full = FULL_SHAPE
    session.execute(
        text(_spread_sql(full.traffic_table, full.traffic_key, TRAFFIC_MEASURES, f"({_DERIVED_TRAFFIC})", _DAYS_ONLY)),
        params,
    )
    session.execute(
        text(_spread_sql(full.contact_table, full.contact_key, CONTACT_MEASURES, f"({_DERIVED_CONTACTS})", _DAYS_ONLY)),
        params,
    )
    for statement in spread_stored_days_sql():
        session.execute(text(statement), params)
    rebuild_purchase_rollups(session, start, end)
    rebuild_referral_rollups(session, start, end)
    rebuild_partner_sale_rollups(session, start, end)


def spread_stored_days_sql(
    shapes: Sequence[RollupShape] = KEPT_SHAPES, traffic_measures: tuple[str, ...] = TRAFFIC_MEASURES
) -> list[str]:
    """The statements that fill every other rollup row of ``:start`` … ``:end`` (whole months) of ``shapes``
    from the full tables' day rows: the full tables' months, and every span of every narrower shape. Run by
    the rebuild after it derived the day rows (the traffic measures only: it keeps the cookieless counts in
    place), and by migrations over the rows that existed before them."""
    full = FULL_SHAPE
    statements = []
    for shape in shapes:
        spans = _LONGER_SPANS if shape == full else _SPANS_SQL
        traffic, contacts = _stored_days(full.traffic_table), _stored_days(full.contact_table)
        statements.append(
            _spread_sql(shape.traffic_table, shape.traffic_key, traffic_measures, shape.rows(traffic), spans)
        )
        statements.append(
            _spread_sql(shape.contact_table, shape.contact_key, CONTACT_MEASURES, shape.rows(contacts), spans)
        )
    return statements


@dataclass(frozen=True)
class RollupDifference:
    """One rollup key whose stored counts differ from what the visits or contacts give."""

    table: str
    key: tuple[Any, ...]
    stored: tuple[int, ...]
    derived: tuple[int, ...]


def _derived_sql(key: tuple[str, ...], measures: tuple[str, ...], source: str, spans: str) -> str:
    """What ``key``'s rows should hold: the day rows of ``source`` summed by key (one SELECT, no upsert)."""
    columns = [_bucket("r.day") if name == "day" else "s.span" if name == "span" else f"r.{name}" for name in key]
    positions = ", ".join(str(number) for number in range(1, len(key) + 1))
    return f"""SELECT {", ".join(columns)}, {", ".join(f"sum(r.{m})" for m in measures)}
        FROM {source} r CROSS JOIN {spans} GROUP BY {positions}"""  # noqa: S608 - fixed SQL fragments


def compare_rollups(session: Session, start: date, end: date) -> list[RollupDifference]:
    """Every rollup key where the stored counts differ from what they should be (empty when the rollups equal
    a scan): every table's day rows of ``start`` … ``end`` against one scan of the visits and contacts, and
    every block and month row of the months they fall in against the sum of that table's stored day rows.
    Changes nothing."""
    days = _params(session, start, end)
    months = _params(session, *_whole_months(start, end))
    scanned = {
        "traffic": (session.execute(text(_DERIVED_TRAFFIC), days).all(), _DAY_KEY.split(", ")),
        "contacts": (session.execute(text(_DERIVED_CONTACTS), days).all(), _CONTACT_DAY_KEY.split(", ")),
    }
    differences: list[RollupDifference] = []
    for shape in KEPT_SHAPES:
        for kind, table, key, measures in (
            ("traffic", shape.traffic_table, shape.traffic_key, TRAFFIC_MEASURES),
            ("contacts", shape.contact_table, shape.contact_key, CONTACT_MEASURES),
        ):
            rows, columns = scanned[kind]
            derived: dict[tuple[Any, ...], list[int]] = {}
            for row in rows:
                for row_key in shape.keys(columns, row):
                    sums = derived.setdefault(("day", *row_key), [0] * len(measures))
                    for number, value in enumerate(row[len(columns) :]):
                        sums[number] += int(value)
            stored_sql = f"SELECT {', '.join(key)}, {', '.join(measures)} FROM {table}"  # noqa: S608
            day_rows = session.execute(text(f"{stored_sql} WHERE span = 'day' AND day BETWEEN :start AND :end"), days)
            differences += _differences(
                table, _by_key(day_rows.all(), len(key)), _by_key([(*k, *v) for k, v in derived.items()], len(key))
            )
            longer = session.execute(text(f"{stored_sql} WHERE span <> 'day' AND day BETWEEN :start AND :end"), months)
            summed = session.execute(text(_derived_sql(key, measures, _stored_days(table), _LONGER_SPANS)), months)
            differences += _differences(table, _by_key(longer.all(), len(key)), _by_key(summed.all(), len(key)))
    return (
        differences
        + compare_purchase_rollups(session, start, end)
        + compare_referral_rollups(session, start, end)
        + compare_partner_sale_rollups(session, start, end)
    )


def _differences(
    table: str, stored: dict[tuple[Any, ...], tuple[int, ...]], derived: dict[tuple[Any, ...], tuple[int, ...]]
) -> list[RollupDifference]:
    width = len(next(iter((stored or derived).values()), ()))
    zero = (0,) * width
    return [
        RollupDifference(table, key, stored.get(key, zero), derived.get(key, zero))
        for key in sorted(stored.keys() | derived.keys(), key=repr)
        if stored.get(key, zero) != derived.get(key, zero)
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

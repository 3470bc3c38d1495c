"""The attribution dimensions: the one definition, as SQL over a ``visits`` row or a stored touch JSON.

The logic lives in IMMUTABLE SQL functions (migration 0008: ``trailmark_referrer_host``,
``trailmark_click_platform``, ``trailmark_channel``, ``trailmark_url_path``); this module only applies them
to columns. The rollups (ingest, the rebuild, the contact trigger) and the contacts list's filters all take
their expressions from here, so a contact filtered by "first touch source = google" matches exactly the
contacts the attribution report counts under that source.

Missing values are labels, never NULL: ``(direct)`` for source, ``(none)`` for the others, so rollup keys
have no NULLs and a filter value can name "no campaign".
"""

from __future__ import annotations

__all__ = [
    "DIMENSIONS",
    "DIMENSION_INPUTS",
    "DIRECT_SOURCE",
    "NONE",
    "input_dimension_sql",
    "touch_dimension_sql",
    "visit_dimension_inputs_sql",
    "visit_dimension_sql",
]

DIMENSIONS: tuple[str, ...] = (
    "channel",
    "source",
    "medium",
    "campaign",
    "referrer",
    "landing_page",
    "partner",
    "click_platform",
)
"""In report order."""

DIRECT_SOURCE = "(direct)"
NONE = "(none)"
MAX_VALUE_LENGTH = 200
"""Values are cut to this many characters so a rollup key stays small (a URL can be 2,000)."""


DIMENSION_INPUTS: tuple[str, ...] = ("url", "referrer", "source", "medium", "campaign", "platform", "partner")
"""What the dimensions of a visit are computed from (:func:`visit_dimension_inputs_sql`): cheap to get per hit,
and few distinct values in a batch, so the rollups compute the dimensions once per distinct combination."""


def _dimensions(
    *, url: str, referrer: str, source: str, medium: str, campaign: str, platform: str, partner: str
) -> dict[str, str]:
    host = f"trailmark_referrer_host({referrer}, {url})"
    limit = MAX_VALUE_LENGTH
    return {
        "channel": f"trailmark_channel({source}, {medium}, {host}, {platform}, {partner})",
        "source": f"left(coalesce(lower(nullif({source}, '')), {host}, '{DIRECT_SOURCE}'), {limit})",
        "medium": f"left(coalesce(lower(nullif({medium}, '')),"
        f" CASE WHEN {host} IS NOT NULL THEN 'referral' END, '{NONE}'), {limit})",
        "campaign": f"left(coalesce(nullif({campaign}, ''), '{NONE}'), {limit})",
        "referrer": f"left(coalesce({host}, '{NONE}'), {limit})",
        "landing_page": f"left(coalesce(trailmark_url_path({url}), '{NONE}'), {limit})",
        "partner": f"left(coalesce(nullif({partner}, ''), '{NONE}'), {limit})",
        "click_platform": f"coalesce({platform}, '{NONE}')",
    }


def visit_dimension_sql(alias: str = "v") -> dict[str, str]:
    """The SQL expression of each dimension over a ``visits`` row aliased ``alias`` (a hit's own page)."""
    a = alias
    return _dimensions(
        url=f"{a}.url",
        referrer=f"{a}.referrer",
        source=f"{a}.utm_source",
        medium=f"{a}.utm_medium",
        campaign=f"{a}.utm_campaign",
        platform=f"trailmark_click_platform({a}.click_ids)",
        partner=f"{a}.partner_code",
    )


def _before_query(url: str) -> str:
    """The part of a URL before its query or fragment: all that ``trailmark_url_host`` and
    ``trailmark_url_path`` read (neither looks past the first ``?`` or ``#``, and a scheme has neither),
    so they give the same value for it as for the whole URL; ``split_part`` costs no regex."""
    return f"split_part(split_part({url}, '#', 1), '?', 1)"


def visit_dimension_inputs_sql(alias: str = "v") -> dict[str, str]:
    """The SQL expression of each of :data:`DIMENSION_INPUTS` over a ``visits`` row aliased ``alias``:
    :func:`input_dimension_sql` over these gives exactly :func:`visit_dimension_sql` of the row."""
    a = alias
    return {
        "url": _before_query(f"{a}.url"),
        "referrer": _before_query(f"{a}.referrer"),
        "source": f"{a}.utm_source",
        "medium": f"{a}.utm_medium",
        "campaign": f"{a}.utm_campaign",
        "platform": f"trailmark_click_platform({a}.click_ids)",
        "partner": f"{a}.partner_code",
    }


def input_dimension_sql(alias: str) -> dict[str, str]:
    """The SQL expression of each dimension over a row aliased ``alias`` whose columns are
    :data:`DIMENSION_INPUTS` (as :func:`visit_dimension_inputs_sql` gives them)."""
    return _dimensions(**{name: f"{alias}.{name}" for name in DIMENSION_INPUTS})


def touch_dimension_sql(touch_expr: str) -> dict[str, str]:
    """The SQL expression of each dimension over a stored touch (``visitors.first_touch``,
    ``contacts.last_touch`` …; the JSON of :data:`tenants.tracking.touches.TOUCH_SQL`). A NULL touch
    (never touched) gives the labels of a direct visit."""
    t = f"({touch_expr})"
    return _dimensions(
        url=f"{t}->>'landing_page'",
        referrer=f"{t}->>'referrer'",
        source=f"{t}->'utm'->>'source'",
        medium=f"{t}->'utm'->>'medium'",
        campaign=f"{t}->'utm'->>'campaign'",
        platform=f"trailmark_click_platform({t}->'click_ids')",
        partner=f"{t}->>'partner_code'",
    )

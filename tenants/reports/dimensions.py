"""STAND-IN until wip/reports is merged (its file replaces this one): the attribution dimensions as SQL."""

from __future__ import annotations

__all__ = ["touch_dimension_sql", "visit_dimension_sql"]


def touch_dimension_sql(touch_expr: str) -> dict[str, str]:
    """SQL per dimension of a stored touch (jsonb)."""
    return {
        "channel": f"(CASE WHEN {touch_expr}->'utm' ? 'medium' THEN 'campaign' ELSE 'direct' END)",
        "source": f"coalesce({touch_expr}->'utm'->>'source', '(direct)')",
        "medium": f"coalesce({touch_expr}->'utm'->>'medium', '(none)')",
        "campaign": f"coalesce({touch_expr}->'utm'->>'campaign', '(none)')",
        "partner": f"coalesce({touch_expr}->>'partner_code', '(none)')",
    }


def visit_dimension_sql(alias: str) -> dict[str, str]:
    """SQL per dimension of a visits row."""
    return {
        "channel": f"(CASE WHEN {alias}.utm_medium IS NOT NULL THEN 'campaign' ELSE 'direct' END)",
        "source": f"coalesce({alias}.utm_source, '(direct)')",
        "medium": f"coalesce({alias}.utm_medium, '(none)')",
        "campaign": f"coalesce({alias}.utm_campaign, '(none)')",
        "partner": f"coalesce({alias}.partner_code, '(none)')",
    }

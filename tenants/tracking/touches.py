"""What a visit says about attribution, as SQL over a ``visits`` row aliased ``v``: the one definition
used for visitors (ingest) and contacts (identity)."""

from __future__ import annotations

__all__ = ["CAMPAIGN_SQL", "TOUCH_SQL"]

_AT = """to_char(v.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""

TOUCH_SQL = f"""jsonb_build_object(
    'at', {_AT},
    'landing_page', v.url,
    'referrer', v.referrer,
    'utm', jsonb_strip_nulls(jsonb_build_object('source', v.utm_source, 'medium', v.utm_medium,
        'campaign', v.utm_campaign, 'term', v.utm_term, 'content', v.utm_content, 'id', v.utm_id)),
    'click_ids', coalesce((SELECT jsonb_object_agg(k, jsonb_build_object('value', val, 'seen_at', {_AT}))
        FROM jsonb_each_text(v.click_ids) AS c(k, val)), '{{}}'::jsonb),
    'ad_cookies', v.ad_cookies,
    'partner_code', v.partner_code)"""  # noqa: S608 - fixed SQL fragments, no input
"""The touch: landing page, referrer, UTMs, click ids (each with when it was seen), ad cookies, partner."""

_HOST = "lower(substring({} from '^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?(\\[[^]]*\\]|[^:/?#]*)'))"

CAMPAIGN_SQL = f"""(num_nonnulls(v.utm_source, v.utm_medium, v.utm_campaign, v.utm_term, v.utm_content, v.utm_id,
    v.partner_code) > 0 OR v.click_ids <> '{{}}'::jsonb
    OR (v.referrer IS NOT NULL AND {_HOST.format("v.referrer")} IS DISTINCT FROM {_HOST.format("v.url")}))"""
"""A marketing touch: UTMs, click ids, a partner code, or a referrer on another host than the page."""

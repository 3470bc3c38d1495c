"""Reports: the attribution dimensions as IMMUTABLE SQL functions, and the daily rollups of traffic and
contacts that reports read instead of raw visits.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.tenancy import APP_GROUP_ROLE, create_tenant_table
from tenants.reports.dimensions import DIMENSIONS
from tenants.reports.rollups import contact_keys_sql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HOST_PATTERN = "^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?([^:/?#]*)"
_SOCIAL_HOSTS = (
    r"^(.*\.)?(facebook\.com|fb\.com|fb\.me|instagram\.com|t\.co|twitter\.com|x\.com|linkedin\.com|lnkd\.in"
    r"|reddit\.com|youtube\.com|youtu\.be|tiktok\.com|pinterest\.[a-z.]+|threads\.net|mastodon\.social)$"
)
_SOCIAL_SOURCES = "^(facebook|fb|instagram|ig|twitter|x|linkedin|reddit|youtube|tiktok|pinterest|threads|meta)$"
_SEARCH_HOSTS = (
    r"^(.*\.)?(google\.[a-z.]+|bing\.com|duckduckgo\.com|yahoo\.com|baidu\.com|yandex\.[a-z.]+|ecosia\.org"
    r"|search\.brave\.com|startpage\.com|qwant\.com)$"
)
_SEARCH_SOURCES = "^(google|bing|duckduckgo|yahoo|baidu|yandex|ecosia|brave|qwant)$"

_FUNCTIONS = [
    # The host of a URL, lower-case, without "www.".
    f"""CREATE FUNCTION trailmark_url_host(url text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT nullif(regexp_replace(lower(substring(url from '{_HOST_PATTERN}')), '^www\\.', ''), '') $$""",
    # The path of a URL ("/" when it has none), without query or fragment.
    """CREATE FUNCTION trailmark_url_path(url text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT CASE WHEN url ~ '^[a-zA-Z][a-zA-Z0-9+.-]*://'
                          THEN coalesce(nullif(
                              substring(url from '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*([^?#]*)'), ''), '/')
                     END $$""",
    # The referrer's host when it is another site than the page's own; NULL for none or the same host.
    """CREATE FUNCTION trailmark_referrer_host(referrer text, page_url text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT CASE WHEN trailmark_url_host(referrer) IS DISTINCT FROM trailmark_url_host(page_url)
                          THEN trailmark_url_host(referrer) END $$""",
    # The ad platform whose click id the hit carries, in a fixed order when it carries several.
    """CREATE FUNCTION trailmark_click_platform(click_ids jsonb) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT CASE
                 WHEN click_ids ?| ARRAY['gclid', 'gbraid', 'wbraid'] THEN 'google'
                 WHEN click_ids ? 'fbclid' THEN 'meta'
                 WHEN click_ids ? 'ttclid' THEN 'tiktok'
                 WHEN click_ids ? 'msclkid' THEN 'microsoft'
                 WHEN click_ids ? 'li_fat_id' THEN 'linkedin'
             END $$""",
    # The channel; the rules, first match wins, are documented in docs/reports.md.
    f"""CREATE FUNCTION trailmark_channel(utm_source text, utm_medium text, referrer_host text,
            click_platform text, partner_code text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT CASE
                 WHEN nullif(partner_code, '') IS NOT NULL OR m IN ('affiliate', 'affiliates', 'partner', 'partners')
                     THEN 'Partner'
                 WHEN click_platform IN ('meta', 'tiktok', 'linkedin')
                      OR m IN ('paid_social', 'paid-social', 'paidsocial', 'social_paid', 'social-paid')
                      OR (m IN ('cpc', 'ppc', 'paid', 'cpm') AND (s ~ '{_SOCIAL_SOURCES}' OR s ~ '{_SOCIAL_HOSTS}'))
                     THEN 'Paid social'
                 WHEN click_platform IN ('google', 'microsoft')
                      OR m IN ('cpc', 'ppc', 'paid', 'paidsearch', 'paid_search', 'paid-search', 'sem')
                     THEN 'Paid search'
                 WHEN m IN ('display', 'banner', 'cpm', 'programmatic', 'video') THEN 'Display'
                 WHEN m IN ('email', 'e-mail', 'e_mail', 'newsletter') OR s IN ('email', 'newsletter') THEN 'Email'
                 WHEN m IN ('social', 'social-network', 'social-media', 'sm', 'organic_social', 'organic-social')
                      OR s ~ '{_SOCIAL_SOURCES}' OR s ~ '{_SOCIAL_HOSTS}'
                     THEN 'Organic social'
                 WHEN m = 'organic' OR s ~ '{_SEARCH_SOURCES}' OR s ~ '{_SEARCH_HOSTS}' THEN 'Organic search'
                 WHEN m IS NOT NULL OR nullif(utm_source, '') IS NOT NULL THEN 'Other campaign'
                 WHEN referrer_host IS NOT NULL THEN 'Referral'
                 ELSE 'Direct'
             END
             FROM (SELECT lower(nullif(utm_medium, '')) AS m,
                          lower(coalesce(nullif(utm_source, ''), referrer_host)) AS s) AS given $$""",
]

_KEY = ", ".join(DIMENSIONS)
_DIMENSION_COLUMNS = [sa.Column(name, sa.Text(), nullable=False) for name in DIMENSIONS]


def upgrade() -> None:
    for statement in _FUNCTIONS:
        op.execute(statement)
    create_tenant_table(
        "traffic_rollups",
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        *_DIMENSION_COLUMNS,
        sa.Column("pageviews", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("events", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("entries", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("visitors", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("new_visitors", sa.BigInteger(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"], ondelete="CASCADE"),
        primary_key=("site_id", "day", "is_bot", *DIMENSIONS),
    )
    # Reports over all sites read by tenant and day.
    op.execute("CREATE INDEX traffic_rollups_day_idx ON traffic_rollups (tenant_id, day)")
    create_tenant_table(
        "contact_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("touch", sa.Text(), nullable=False),
        *[sa.Column(name, sa.Text(), nullable=False) for name in DIMENSIONS],
        sa.Column("days_to_contact", sa.Integer(), nullable=False),
        sa.Column("contacts", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("touch IN ('first', 'last')", name="contact_rollups_touch_check"),
        primary_key=("day", "touch", *DIMENSIONS, "days_to_contact"),
    )
    # A contact counts once per touch kind under its current creation day, touches and days to contact;
    # every change of those (created, touches refreshed, merged away, deleted) subtracts the old key and adds
    # the new one in the same transaction, whichever service made it. Keys are upserted in a fixed order
    # so concurrent changes do not deadlock on shared rows.
    op.execute(
        f"""CREATE FUNCTION trailmark_contact_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO contact_rollups (tenant_id, day, touch, {_KEY}, days_to_contact, contacts)
               SELECT coalesce(NEW.tenant_id, OLD.tenant_id), day, touch, {_KEY}, days_to_contact, sum(n)
               FROM (SELECT k.*, -1 AS n FROM ({contact_keys_sql("OLD")}) k
                     WHERE TG_OP IN ('UPDATE', 'DELETE') AND OLD.merged_into IS NULL
                     UNION ALL
                     SELECT k.*, 1 FROM ({contact_keys_sql("NEW")}) k
                     WHERE TG_OP IN ('UPDATE', 'INSERT') AND NEW.merged_into IS NULL) AS delta
               GROUP BY day, touch, {_KEY}, days_to_contact HAVING sum(n) <> 0
               ORDER BY day, touch, {_KEY}, days_to_contact
               ON CONFLICT (tenant_id, day, touch, {_KEY}, days_to_contact)
               DO UPDATE SET contacts = contact_rollups.contacts + excluded.contacts;
               RETURN NULL;
           END $$"""
    )
    op.execute(
        """CREATE TRIGGER contact_rollup AFTER INSERT OR DELETE OR UPDATE OF
               created_at, first_touch, first_touch_at, last_touch, merged_into ON contacts
           FOR EACH ROW EXECUTE FUNCTION trailmark_contact_rollup()"""
    )

    # The nightly check walks every tenant; the app role sees no tenant without one, so this owner-run
    # function names them (ids only).
    op.execute(
        """CREATE FUNCTION trailmark_report_tenants() RETURNS SETOF uuid
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
           AS $$ SELECT id FROM tenants ORDER BY id $$"""
    )
    op.execute("REVOKE ALL ON FUNCTION trailmark_report_tenants() FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION trailmark_report_tenants() TO {APP_GROUP_ROLE}")


def downgrade() -> None:
    op.execute("DROP FUNCTION trailmark_report_tenants()")
    op.execute("DROP TRIGGER contact_rollup ON contacts")
    op.execute("DROP FUNCTION trailmark_contact_rollup()")
    op.drop_table("contact_rollups")
    op.drop_table("traffic_rollups")
    for name in (
        "channel(text, text, text, text, text)",
        "click_platform(jsonb)",
        "referrer_host(text, text)",
        "url_path(text)",
        "url_host(text)",
    ):
        op.execute(f"DROP FUNCTION trailmark_{name}")

"""Schema migrations and the app role, run as the owner by ``trailmark migrate``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine, make_url, pool
from sqlalchemy.engine import Connection

__all__ = ["MigrationError", "alembic_config", "ensure_app_role", "migrate", "migrations_at_head"]

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_GROUP_ROLE = "trailmark_app_rw"
"""NOLOGIN role holding the app's table privileges; the app login role is made a member."""


class MigrationError(RuntimeError):
    """The database cannot be brought to a safe state; the message says what to change."""


def alembic_config(owner_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.set_main_option("prepend_sys_path", str(REPO_ROOT))
    config.set_main_option("path_separator", "os")
    # Alembic's ini interpolation treats % specially (URL-encoded passwords).
    config.set_main_option("sqlalchemy.url", owner_url.replace("%", "%%"))
    return config


def migrate(owner_url: str, app_url: str) -> None:
    """Upgrade the schema to head as the owner, then make sure the app login role exists with
    only the app's privileges: not owner, not superuser, no BYPASSRLS."""
    owner = make_url(owner_url)
    app = make_url(app_url)
    if owner.username == app.username:
        raise MigrationError(
            f"the app role {app.username!r} must differ from the owner role that runs migrations: "
            "row-level security does not bind a table's owner's privileges reliably"
        )
    command.upgrade(alembic_config(owner_url), "head")
    engine = create_engine(owner_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            _check_owner_bypasses_rls(connection)
            ensure_app_role(connection, app.username or "", app.password)
    finally:
        engine.dispose()


def _check_owner_bypasses_rls(connection: Connection) -> None:
    row = connection.exec_driver_sql(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).scalar()
    if not row:
        # The outbox relay's id-only lookup runs as the owner and must see every tenant's pending ids.
        raise MigrationError("the migration role must be a superuser or have BYPASSRLS")


def ensure_app_role(connection: Connection, name: str, password: str | None) -> None:
    """Create the app login role if missing; refuse one that could bypass row-level security."""
    if not name:
        raise MigrationError("TRAILMARK_DATABASE_URL names no user")
    raw = connection.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = %s", (name,))
        existing = cursor.fetchone()
        role = sql.Identifier(name)
        if existing is None:
            statement = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE INHERIT").format(
                role
            )
            if password:
                statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(password))
            cursor.execute(statement)
        elif any(existing):
            raise MigrationError(
                f"the app role {name!r} is a superuser, has BYPASSRLS or CREATEROLE; "
                "use a plain login role so row-level security applies"
            )
        cursor.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_GROUP_ROLE), role))
        owned = cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE r.rolname = %s AND c.relnamespace = 'public'::regnamespace",
            (name,),
        ).fetchone()
        if owned and owned[0]:
            raise MigrationError(f"the app role {name!r} owns tables; it must own nothing")


def migrations_at_head(connection: Connection) -> bool:
    """True when the database's revision is the newest revision in ``migrations/``."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(script.get_heads())

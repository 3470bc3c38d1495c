"""Alembic environment: always runs as the owner role given by ``trailmark migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("run migrations with `trailmark migrate`, which passes the owner URL")


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Serialise concurrent `migrate` runs (several containers starting at once).
        connection.exec_driver_sql("SELECT pg_advisory_lock(727274)")
        connection.commit()
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.exec_driver_sql("SELECT pg_advisory_unlock(727274)")
        connection.commit()


run_migrations_online()

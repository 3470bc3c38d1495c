"""Tenant-binding benchmark: ingest transactions bound with ``SET LOCAL`` against the former ``set_config()``.

Every transaction of a tenant session starts with the statement that binds the tenant (``tenants.isolation``).
This measures ingest as it runs (``store_envelopes`` of one envelope of ``--hits`` page views per transaction)
with today's binding, and with the former ``SELECT set_config('app.tenant_id', %s, true)`` as the baseline, in
alternating rounds in one process against one fresh test database. The last line of stdout::

    set_local_tps=… set_config_tps=… ratio=… rounds=… transactions=…

``ratio`` is ``set_local_tps / set_config_tps``; 1.0 means the same speed (the machine is shared: read it with
the load average printed before and after).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Connection  # noqa: E402
from sqlalchemy.orm import SessionTransaction  # noqa: E402
from sqlmodel import Session  # noqa: E402

from tests.services import start_test_services, test_secret_keys, test_signing_keys  # noqa: E402


def _set_config_binding(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    # The binding as it was before SET LOCAL (tenants/isolation until December 2026).
    tenant_id = session.info.get("tenant_id")
    if tenant_id is not None:
        connection.exec_driver_sql("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each binding (default 3)")
    parser.add_argument("--transactions", type=int, default=400, help="transactions per round (default 400)")
    parser.add_argument("--hits", type=int, default=20, help="page views per transaction (default 20)")
    args = parser.parse_args()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
    services = start_test_services()
    try:
        os.environ.update(services.env())
        os.environ["TRAILMARK_SIGNING_KEYS"] = test_signing_keys()
        os.environ["TRAILMARK_SECRET_KEYS"] = test_secret_keys()
        from tenants.accounts.service import signup
        from tenants.isolation import _bind_tenant, tenant_session
        from tenants.isolation.migrate import migrate
        from tenants.models.base import new_id
        from tenants.tracking.hits import Envelope, Hit
        from tenants.tracking.ingest import ensure_partitions_for, store_envelopes
        from tenants.tracking.sites import create_site

        migrate(services.owner_url, services.app_url)
        tenant = signup(name="Bench", owner_email="owner@bench.example", password="correct horse battery").tenant
        with tenant_session(tenant.id) as session:
            site = create_site(session, name="Bench", allowed_origins=["https://bench.example"])

        def envelope() -> Envelope:
            now = int(time.time() * 1000)
            hits = [
                Hit(hit_id=uuid4(), ts=now + i, url=f"https://bench.example/{i}", path=f"/{i}")
                for i in range(args.hits)
            ]
            return Envelope(tenant.id, site.id, new_id(), now, hits)

        ensure_partitions_for([envelope()])

        def one_round() -> float:
            started = time.perf_counter()
            for _ in range(args.transactions):
                with tenant_session(tenant.id) as session:
                    store_envelopes(session, [envelope()])
            return args.transactions / (time.perf_counter() - started)

        one_round()  # warm the pool and the caches before measuring either
        new: list[float] = []
        old: list[float] = []
        for _ in range(args.rounds):
            new.append(one_round())
            event.remove(Session, "after_begin", _bind_tenant)
            event.listen(Session, "after_begin", _set_config_binding)
            try:
                old.append(one_round())
            finally:
                event.remove(Session, "after_begin", _set_config_binding)
                event.listen(Session, "after_begin", _bind_tenant)
        set_local, set_config = sorted(new)[len(new) // 2], sorted(old)[len(old) // 2]
    finally:
        from tenants.isolation import dispose_engine

        dispose_engine()
        services.close()
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())
    print(
        f"set_local_tps={set_local:.0f} set_config_tps={set_config:.0f} ratio={set_local / set_config:.2f} "
        f"rounds={args.rounds} transactions={args.transactions}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
